"""Approval steps as plain data, and the one eligibility rule every decision channel goes through."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class StepState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


class RefusalReason(StrEnum):
    """Why a decision is refused; the API maps each to a status code."""

    STEP_NOT_FOUND = "step_not_found"
    STEP_CLOSED = "step_closed"
    NOT_AN_APPROVER = "not_an_approver"
    SELF_APPROVAL = "self_approval"


@dataclass(frozen=True)
class Approvers:
    """Who may decide: named users (by id) or anyone holding one of the roles."""

    user_ids: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()

    def includes(self, user_id: str, roles: tuple[str, ...]) -> bool:
        return user_id in self.user_ids or any(role in self.roles for role in roles)

    def labels(self) -> list[str]:
        """Flat labels for search attributes: `user:<id>` and `role:<name>`."""
        return [f"user:{u}" for u in self.user_ids] + [f"role:{r}" for r in self.roles]


@dataclass
class ApprovalStep:
    step_id: str
    title: str
    approvers: Approvers
    opened_at: datetime
    deadline: datetime | None
    state: StepState = StepState.PENDING
    decided_by: str | None = None
    decided_at: datetime | None = None
    comment: str | None = None
    channel: str | None = None
    # Separation of duties: who asked for the run may not approve it.
    requester_id: str | None = None
    voters: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DecisionRequest:
    """What an approver submits, with the identity the API resolved (never what the client says)."""

    step_id: str
    actor_user_id: str
    actor_roles: tuple[str, ...]
    decision: Decision
    comment: str | None = None
    channel: str = "api"


@dataclass(frozen=True)
class DecisionResult:
    step_id: str
    state: StepState
    decision: Decision
    decided_by: str


def refusal_for(step: ApprovalStep | None, request: DecisionRequest) -> RefusalReason | None:
    """The single eligibility check: None when the decision may be recorded."""
    if step is None:
        return RefusalReason.STEP_NOT_FOUND
    if step.state is not StepState.PENDING:
        return RefusalReason.STEP_CLOSED
    if step.requester_id is not None and step.requester_id == request.actor_user_id:
        return RefusalReason.SELF_APPROVAL
    if not step.approvers.includes(request.actor_user_id, request.actor_roles):
        return RefusalReason.NOT_AN_APPROVER
    return None


def state_after(decision: Decision) -> StepState:
    return StepState.APPROVED if decision is Decision.APPROVE else StepState.REJECTED
