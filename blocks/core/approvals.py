"""Approval steps as plain data, and the one eligibility rule every decision channel goes through."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from blocks.core.approval_policy import ApprovalPolicy, Outcome, Vote


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
    ALREADY_VOTED = "already_voted"
    APPROVED_EARLIER_IN_CHAIN = "approved_earlier_in_chain"
    FORM_INVALID = "form_invalid"


class BreachAction(StrEnum):
    EXPIRE = "expire"  # the step closes as expired; the workflow decides what follows
    REJECT = "reject"  # the step closes as rejected
    FAIL = "fail"  # the run fails
    ESCALATE = "escalate"  # more approvers, and a new deadline `extend` later


@dataclass(frozen=True)
class Escalation:
    """`before` the deadline: notify and add (or, with `replace`, hand over to) these approvers."""

    before: timedelta
    users: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    replace: bool = False


@dataclass(frozen=True)
class OnBreach:
    action: BreachAction = BreachAction.EXPIRE
    users: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    extend: timedelta | None = None

    def __post_init__(self) -> None:
        if self.action is BreachAction.ESCALATE and (
            self.extend is None or not (self.users or self.roles)
        ):
            raise ValueError("an escalating breach names approvers and how long to extend")


@dataclass(frozen=True)
class CastVote:
    user_id: str
    roles: tuple[str, ...]
    decision: Decision
    at: datetime
    channel: str
    comment: str | None = None
    form: dict[str, Any] | None = None


@dataclass
class ApprovalStep:
    step_id: str
    title: str
    policy: ApprovalPolicy
    opened_at: datetime
    deadline: datetime | None
    state: StepState = StepState.PENDING
    decided_at: datetime | None = None
    # Separation of duties: who asked for the run may not approve it.
    requester_id: str | None = None
    votes: list[CastVote] = field(default_factory=list)
    escalated: bool = False
    reminders_sent: int = 0
    breaches: int = 0

    def record(self, vote: CastVote) -> None:
        """Count a vote (already validated) and close the step if the policy says so."""
        self.votes.append(vote)
        outcome = self.policy.outcome(
            [Vote(v.user_id, v.roles, v.decision is Decision.APPROVE) for v in self.votes]
        )
        if outcome is not Outcome.PENDING:
            self.state = StepState.APPROVED if outcome is Outcome.APPROVED else StepState.REJECTED
            self.decided_at = vote.at

    @property
    def deciders(self) -> list[str]:
        return [v.user_id for v in self.votes]


@dataclass(frozen=True)
class DecisionRequest:
    """What an approver submits, with the identity the API resolved (never what the client says)."""

    step_id: str
    actor_user_id: str
    actor_roles: tuple[str, ...]
    decision: Decision
    comment: str | None = None
    channel: str = "api"
    form: dict[str, Any] | None = None


@dataclass(frozen=True)
class DecisionResult:
    step_id: str
    state: StepState
    decision: Decision
    decided_by: str


def refusal_for(
    step: ApprovalStep | None,
    request: DecisionRequest,
    *,
    approved_earlier: frozenset[str] = frozenset(),
) -> RefusalReason | None:
    """The single eligibility check: None when the decision may be recorded.

    `approved_earlier` holds who approved an earlier step of the same run: one person may not
    approve twice in one chain.
    """
    if step is None:
        return RefusalReason.STEP_NOT_FOUND
    if step.state is not StepState.PENDING:
        return RefusalReason.STEP_CLOSED
    if step.requester_id is not None and step.requester_id == request.actor_user_id:
        return RefusalReason.SELF_APPROVAL
    if not step.policy.eligible(request.actor_user_id, request.actor_roles):
        return RefusalReason.NOT_AN_APPROVER
    if request.actor_user_id in step.deciders:
        return RefusalReason.ALREADY_VOTED
    if request.decision is Decision.APPROVE and request.actor_user_id in approved_earlier:
        return RefusalReason.APPROVED_EARLIER_IN_CHAIN
    return None
