"""A run's steps and what happened to each, read from the run's own audit events.

The events are the truth: they are written by the workflow as things happen (and by the API for
what it records on the run's behalf) and they stay after the run has ended, when Temporal no longer
answers queries. Every `step.*` event of the run is kept in its step's history, so an event kind
added later shows up without a change here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.api.schemas import StepDetailOut, StepEventOut
from blocks.core.approvals.policy import group_marker
from blocks.core.approvals.sla import parse_time
from blocks.core.context import OrgContext
from blocks.models.audit.content import with_content
from blocks.models.audit.events import AuditEvent, list_events

_PAGE = 1000
_STEP_PREFIX = "step."
# Fields shown on their own in StepEventOut; the rest of an event's data goes to `detail`.
_SHOWN = frozenset(
    {
        "at",
        "opened_at",
        "decided_at",
        "closed_at",
        "decision",
        "channel",
        "on_behalf_of",
        "comment",
        "state",
        "step_state",
        "deadline",
        "policy",
        "approvers_after",
        "pending_approvers",
        "credential",  # how the request was signed: the audit log has it, the run view does not
        "form",
        "title",
    }
)


async def run_events(ctx: OrgContext, session: AsyncSession, run_id: uuid.UUID) -> list[AuditEvent]:
    """Every audit event of one run of the caller's organization, in chain order."""
    events: list[AuditEvent] = []
    after = 0
    while True:
        page = await list_events(ctx, session, run_id=str(run_id), after_seq=after, limit=_PAGE)
        events += page
        if len(page) < _PAGE:
            # Titles, comments and forms are sealed in the log: shown to who may read the run.
            return await with_content(session, ctx.org_id, events)
        after = page[-1].seq


@dataclass
class _Step:
    step_id: str
    opened_at: datetime
    title: str = ""
    state: str = "pending"
    approvers: list[str] = field(default_factory=list)
    deadline: datetime | None = None
    closed_at: datetime | None = None
    history: list[StepEventOut] = field(default_factory=list)

    def out(self) -> StepDetailOut:
        return StepDetailOut(
            step_id=self.step_id,
            title=self.title,
            state=self.state,
            approvers=self.approvers,
            opened_at=self.opened_at,
            deadline=self.deadline,
            closed_at=self.closed_at,
            history=self.history,
        )


def step_histories(events: list[AuditEvent]) -> list[StepDetailOut]:
    """The steps these events (one run's, in chain order) tell of, in the order they opened."""
    steps: dict[str, _Step] = {}
    for event in events:
        if not event.action.startswith(_STEP_PREFIX) or event.target_id is None:
            continue
        data: dict[str, Any] = event.data or {}
        kind = event.action.removeprefix(_STEP_PREFIX)
        at = _moment(kind, data) or event.occurred_at
        step = steps.setdefault(event.target_id, _Step(event.target_id, opened_at=at))
        item = _item(event, kind, data, at)
        if kind == "opened":
            step.opened_at = at
            step.title = str(data.get("title") or "")
            step.approvers = item.approvers or []
            step.deadline = item.deadline
        elif kind == "escalated" and item.approvers is not None:
            step.approvers = item.approvers
        elif kind == "closed":
            step.state = str(data.get("state") or step.state)
            step.closed_at = at
        # A breach names the deadline it passed; the others the deadline from then on.
        if item.deadline is not None and kind != "sla_breached":
            step.deadline = item.deadline
        step.history.append(item)
    return [step.out() for step in steps.values()]


def _item(event: AuditEvent, kind: str, data: dict[str, Any], at: datetime) -> StepEventOut:
    return StepEventOut(
        event=kind,
        at=at,
        event_id=event.id,
        actor_id=event.actor_id if kind == "decided" else None,
        decision=_text(data.get("decision")),
        channel=_text(data.get("channel")),
        on_behalf_of=_text(data.get("on_behalf_of")),
        comment=_text(data.get("comment")),
        state=_text(data.get("step_state") or data.get("state")),
        approvers=_approvers(kind, data),
        deadline=parse_time(data.get("deadline")),
        detail={k: v for k, v in data.items() if k not in _SHOWN},
    )


def _moment(kind: str, data: dict[str, Any]) -> datetime | None:
    """When it happened by the workflow's clock (the event is appended at the next flush)."""
    if kind == "opened":
        return parse_time(data.get("opened_at"))
    if kind == "closed":
        return parse_time(data.get("decided_at")) or parse_time(data.get("closed_at"))
    return parse_time(data.get("at"))


def _approvers(kind: str, data: dict[str, Any]) -> list[str] | None:
    if kind == "opened":
        return _policy_labels(data.get("policy"))
    if kind == "escalated":
        return _strings(data.get("approvers_after"))
    if kind == "reminded":
        return _strings(data.get("pending_approvers"))
    return None


def _policy_labels(policy: object) -> list[str] | None:
    """The labels of a policy as `ApprovalPolicy.describe` wrote it (`ApprovalPolicy.labels`)."""
    if not isinstance(policy, dict) or not isinstance(policy.get("groups"), list):
        return None
    labels: list[str] = []
    for group in policy["groups"]:
        if not isinstance(group, dict):
            continue
        labels += [f"user:{u}" for u in _strings(group.get("users")) or []]
        labels += [f"role:{r}" for r in _strings(group.get("roles")) or []]
        labels += [group_marker(g) for g in _strings(group.get("member_groups")) or []]
    return list(dict.fromkeys(labels))


def _strings(value: object) -> list[str] | None:
    return [str(v) for v in value] if isinstance(value, list) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
