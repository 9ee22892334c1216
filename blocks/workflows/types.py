"""The inputs and views every Blocks workflow shares: how a run starts and how it reports itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from blocks.core.approvals.eligibility import ApprovalStep
from blocks.core.audit.records import RequestOrigin


@dataclass(frozen=True)
class RunInput:
    """What the API hands a workflow: the organization and requester it resolved, and the params."""

    org_id: str
    run_id: str
    workflow_name: str
    requested_by: str | None
    params: dict[str, Any] = field(default_factory=dict)
    # How the requester asked (email, address, user agent, credential) for the run.started event
    # the workflow writes itself; absent in runs started before it existed.
    origin: RequestOrigin | None = None


@dataclass(frozen=True)
class StepView:
    step_id: str
    title: str
    state: str
    approvers: list[str]
    opened_at: datetime
    deadline: datetime | None
    decided_by: str | None
    decided_at: datetime | None
    decision_comment: str | None
    deciders: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, step: ApprovalStep) -> StepView:
        last = step.votes[-1] if step.votes else None
        return cls(
            step_id=step.step_id,
            title=step.title,
            state=step.state.value,
            approvers=step.policy.labels(),
            opened_at=step.opened_at,
            deadline=step.deadline,
            decided_by=last.user_id if last else None,
            decided_at=step.decided_at,
            decision_comment=last.comment if last else None,
            deciders=step.deciders,
        )


@dataclass(frozen=True)
class RunView:
    status: str
    steps: list[StepView]
    requested_by: str | None = None
    workflow_name: str | None = None


@dataclass(frozen=True)
class RunOutcome:
    status: str
    detail: dict[str, Any] = field(default_factory=dict)
