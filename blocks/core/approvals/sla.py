"""SLA compliance of approval steps, computed from audit events alone (pure: no I/O).

An auditor trusts the hash-chained log, not the workflow engine, so every figure here comes from
the events an approval step writes (`blocks.workflows.sdk`): `step.opened`, `step.decided`,
`step.reminded`, `step.escalated`, `step.sla_breached`, `step.closed`, and `run.started` for the
run's workflow name. Times are the workflow's clock as recorded in each event's data (what the
SLA timers ran on), not the moment the row was inserted; `occurred_at` is only a fallback.

Outcomes:
    met        decided before its deadline, never breached
    breached   the SLA passed without a decision (`step.sla_breached`), or it closed after it
    cancelled  its run was cancelled before the deadline, the step undecided
    expired    closed without a decision before its deadline (nobody left who could decide it)
    open       still pending, deadline not reached at report time
    overdue    still pending past its deadline with no breach recorded (e.g. no worker running)
    no_sla     the step has no deadline

Compliance is met / (met + breached); the other outcomes count neither way. A deadline missed
is a breach whatever closed the step afterwards: cancelling an overdue run does not hide it.
The CSV rendering of the rows is `blocks.core.approvals.sla_csv`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

# The only actions the report reads; the database query filters on them too.
REPORT_ACTIONS: tuple[str, ...] = (
    "run.started",
    "step.opened",
    "step.decided",
    "step.reminded",
    "step.escalated",
    "step.sla_breached",
    "step.closed",
)
_PENDING = "pending"
# Breach actions that close the step; "escalate" keeps it open with more approvers.
_CLOSING_BREACH_ACTIONS = frozenset({"expire", "reject", "fail"})


class SlaOutcome(StrEnum):
    MET = "met"
    BREACHED = "breached"
    OPEN = "open"
    OVERDUE = "overdue"
    NO_SLA = "no_sla"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


# States a step closes in without a decision (by state name): no decision time, and each its own
# outcome unless the deadline had passed.
_UNDECIDED: dict[str, SlaOutcome] = {
    "cancelled": SlaOutcome.CANCELLED,
    "expired": SlaOutcome.EXPIRED,
}


class LoggedEvent(NamedTuple):
    """The fields of one audit event the report reads (a tuple: one is made per event read)."""

    seq: int
    action: str
    run_id: str | None
    target_id: str | None
    actor_id: str | None
    occurred_at: datetime
    data: Mapping[str, Any]


@dataclass(frozen=True)
class ReportFilters:
    """`workflow` matches the run's workflow name; `opened_from` is inclusive, `opened_to`
    exclusive, both on the step's opening time."""

    workflow: str | None = None
    opened_from: datetime | None = None
    opened_to: datetime | None = None

    def admits_opening(self, opened_at: datetime) -> bool:
        if self.opened_from is not None and opened_at < self.opened_from:
            return False
        return self.opened_to is None or opened_at < self.opened_to

    def admits_workflow(self, workflow: str | None) -> bool:
        return self.workflow is None or workflow == self.workflow


@dataclass(frozen=True, slots=True)
class Vote:
    user_id: str
    decision: str
    at: datetime | None


@dataclass(frozen=True, slots=True)
class StepRow:
    """One approval step as the log tells it."""

    run_id: str
    workflow: str | None
    step_id: str
    title: str | None
    opened_at: datetime
    deadline: datetime | None
    sla_seconds: float | None
    business_hours: bool
    closed_at: datetime | None  # when the step closed, by a decision, its SLA or a cancel
    decided_at: datetime | None  # when the deciding vote closed it; None if it did not
    state: str  # pending, approved, rejected, expired, cancelled
    outcome: SlaOutcome
    time_to_decision_seconds: float | None  # decided_at - opened_at
    reminders: int
    escalated: bool
    escalated_at: datetime | None
    breached_at: datetime | None
    deciders: tuple[Vote, ...]
    opened_seq: int  # the step.opened event, so an auditor can find it in the log


@dataclass(frozen=True, slots=True)
class Summary:
    """Counts and decision times of a set of steps; `workflow` None means all of them."""

    workflow: str | None
    steps: int
    met: int
    breached: int
    open: int
    overdue: int
    no_sla: int
    cancelled: int
    expired: int
    compliance_percent: float | None  # met / (met + breached); None when neither
    p50_seconds: float | None
    p90_seconds: float | None


class _Closed(NamedTuple):
    """What the report reads of a `step.closed` event's data (as found: not checked yet)."""

    state: object
    decided_at: object
    closed_at: object
    reminders: object
    escalated: object


# A report holds one trail per step until its rows are made: slots and no empty containers keep
# that small, and few objects for the garbage collector to walk again and again.
@dataclass(slots=True)
class _Trail:
    """What the log has said about one step so far."""

    run_id: str
    step_id: str
    opened_seq: int
    opened_at: datetime
    title: str | None
    deadline: datetime | None
    sla_seconds: float | None
    business_hours: bool
    workflow: str | None
    votes: list[Vote] | None = None
    reminder_numbers: set[int] | None = None
    escalated_at: datetime | None = None
    breached_at: datetime | None = None  # the first breach: when the SLA was missed
    closed_by_sla_at: datetime | None = None  # the breach whose action closed the step
    closed: _Closed | None = None
    closed_logged_at: datetime | None = None


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 time from event data, as an aware datetime (UTC if it names no zone)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class SlaReportBuilder:
    """Feed events in seq order with `add`; `rows` then gives one row per admitted step.

    Work is one dictionary lookup per event, and memory one entry per run and per admitted
    step, so a log is read once in pages without holding its events.
    """

    def __init__(self, filters: ReportFilters | None = None) -> None:
        self.filters = filters or ReportFilters()
        self._workflows: dict[str, str] = {}  # run id -> workflow name (from run.started)
        self._trails: dict[tuple[str, str], _Trail] = {}

    def add(self, event: LoggedEvent) -> None:
        if event.run_id is None:
            return
        if event.action == "run.started":
            name = event.data.get("workflow")
            if isinstance(name, str):
                self._workflows[event.run_id] = name
            return
        if event.target_id is None:
            return
        key = (event.run_id, event.target_id)
        if event.action == "step.opened":
            self._open(key, event)
            return
        trail = self._trails.get(key)
        if trail is None:  # a step outside the filters (or whose opening is not in the log)
            return
        at = parse_time(event.data.get("at"))
        if event.action == "step.decided":
            decision = event.data.get("decision")
            if trail.votes is None:
                trail.votes = []
            trail.votes.append(Vote(event.actor_id or "", str(decision or ""), at))
            if trail.workflow is None and isinstance(event.data.get("workflow"), str):
                trail.workflow = event.data["workflow"]
        elif event.action == "step.reminded":
            number = event.data.get("reminder")
            if trail.reminder_numbers is None:
                trail.reminder_numbers = set()
            # Distinct numbers: the count is right even if a reminder were logged twice.
            trail.reminder_numbers.add(
                number if isinstance(number, int) else len(trail.reminder_numbers) + 1
            )
        elif event.action == "step.escalated":
            if trail.escalated_at is None:
                trail.escalated_at = at or event.occurred_at
        elif event.action == "step.sla_breached":
            when = at or event.occurred_at
            if trail.breached_at is None:
                trail.breached_at = when
            if event.data.get("action") == "escalate":
                # Breaching into escalation widens the approvers and moves the deadline.
                if trail.escalated_at is None:
                    trail.escalated_at = when
            elif event.data.get("action") in _CLOSING_BREACH_ACTIONS:
                trail.closed_by_sla_at = when
        elif event.action == "step.closed":
            data = event.data
            trail.closed = _Closed(
                data.get("state"),
                data.get("decided_at"),
                data.get("closed_at"),
                data.get("reminders"),
                data.get("escalated"),
            )
            trail.closed_logged_at = event.occurred_at

    def _open(self, key: tuple[str, str], event: LoggedEvent) -> None:
        if key in self._trails:  # a step opens once; a repeat would be a bug, not a new step
            return
        opened_at = parse_time(event.data.get("opened_at")) or event.occurred_at
        workflow = self._workflows.get(key[0])
        # Dropped here when the filters already exclude it, so excluded steps cost nothing more.
        if not self.filters.admits_opening(opened_at):
            return
        if workflow is not None and not self.filters.admits_workflow(workflow):
            return
        sla = event.data.get("sla_seconds")
        title = event.data.get("title")
        self._trails[key] = _Trail(
            run_id=key[0],
            step_id=key[1],
            opened_seq=event.seq,
            opened_at=opened_at,
            title=title if isinstance(title, str) else None,
            deadline=parse_time(event.data.get("deadline")),
            sla_seconds=float(sla) if isinstance(sla, int | float) else None,
            business_hours=event.data.get("business_hours") is True,
            workflow=workflow,
        )

    def rows(self, now: datetime) -> list[StepRow]:
        """The admitted steps in opening order; `now` tells open from overdue."""
        rows = [_row(trail, now) for trail in self._trails.values()]
        return [
            row
            for row in sorted(rows, key=lambda r: r.opened_seq)
            if self.filters.admits_workflow(row.workflow)
        ]


def _row(trail: _Trail, now: datetime) -> StepRow:
    closed = trail.closed
    state = str(closed.state or _PENDING) if closed is not None else _PENDING
    closed_at: datetime | None = None
    decided_at: datetime | None = None
    if closed is not None:
        # The SDK records when the step closed (`closed_at` when nobody decided it); older or
        # failing closes may lack it.
        closed_at = (
            parse_time(closed.decided_at) or parse_time(closed.closed_at) or trail.closed_by_sla_at
        )
        if closed_at is None:
            last_vote = trail.votes[-1].at if trail.votes else None
            closed_at = last_vote or trail.closed_logged_at
        if trail.closed_by_sla_at is None and state not in _UNDECIDED:
            decided_at = closed_at
    reminders = len(trail.reminder_numbers or ())
    if closed is not None and isinstance(closed.reminders, int):
        reminders = max(reminders, int(closed.reminders))
    escalated = trail.escalated_at is not None or (closed is not None and closed.escalated is True)
    return StepRow(
        run_id=trail.run_id,
        workflow=trail.workflow,
        step_id=trail.step_id,
        title=trail.title,
        opened_at=trail.opened_at,
        deadline=trail.deadline,
        sla_seconds=trail.sla_seconds,
        business_hours=trail.business_hours,
        closed_at=closed_at,
        decided_at=decided_at,
        state=state,
        outcome=_outcome(trail, state, closed_at, now),
        time_to_decision_seconds=(
            (decided_at - trail.opened_at).total_seconds() if decided_at is not None else None
        ),
        reminders=reminders,
        escalated=escalated,
        escalated_at=trail.escalated_at,
        breached_at=trail.breached_at,
        deciders=tuple(trail.votes or ()),
        opened_seq=trail.opened_seq,
    )


def _outcome(trail: _Trail, state: str, closed_at: datetime | None, now: datetime) -> SlaOutcome:
    if trail.deadline is None:
        return SlaOutcome.NO_SLA
    if trail.breached_at is not None:
        return SlaOutcome.BREACHED
    if state == _PENDING:
        return SlaOutcome.OVERDUE if now > trail.deadline else SlaOutcome.OPEN
    # A close after the deadline with no breach event still missed the SLA.
    if closed_at is not None and closed_at > trail.deadline:
        return SlaOutcome.BREACHED
    return _UNDECIDED.get(state, SlaOutcome.MET)


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least p% of values at or below it.

    Chosen over interpolation because every answer is a real step's time, which an auditor
    can find in the rows.
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(rows: Iterable[StepRow], workflow: str | None = None) -> Summary:
    counts = dict.fromkeys(SlaOutcome, 0)
    times: list[float] = []
    total = 0
    for row in rows:
        total += 1
        counts[row.outcome] += 1
        if row.time_to_decision_seconds is not None:
            times.append(row.time_to_decision_seconds)
    judged = counts[SlaOutcome.MET] + counts[SlaOutcome.BREACHED]
    return Summary(
        workflow=workflow,
        steps=total,
        met=counts[SlaOutcome.MET],
        breached=counts[SlaOutcome.BREACHED],
        open=counts[SlaOutcome.OPEN],
        overdue=counts[SlaOutcome.OVERDUE],
        no_sla=counts[SlaOutcome.NO_SLA],
        cancelled=counts[SlaOutcome.CANCELLED],
        expired=counts[SlaOutcome.EXPIRED],
        compliance_percent=round(100 * counts[SlaOutcome.MET] / judged, 2) if judged else None,
        p50_seconds=percentile(times, 50),
        p90_seconds=percentile(times, 90),
    )


def summarize_by_workflow(rows: Sequence[StepRow]) -> list[Summary]:
    """One summary per workflow name, sorted by name (steps of an unknown workflow last)."""
    groups: dict[str | None, list[StepRow]] = {}
    for row in rows:
        groups.setdefault(row.workflow, []).append(row)
    names = sorted(groups, key=lambda name: (name is None, name or ""))
    return [summarize(groups[name], name) for name in names]
