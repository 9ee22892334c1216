"""Approval steps as plain data, and the one eligibility rule every decision channel goes through."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from blocks.core.approvals.policy import ApprovalPolicy, Outcome, Vote
from blocks.core.audit.records import RequestOrigin


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class StepState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"  # the run was cancelled while the step waited


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
    user_id: str  # whose seat: the approver, or the delegator a delegate acted for
    roles: tuple[str, ...]
    decision: Decision
    at: datetime
    channel: str
    comment: str | None = None
    form: dict[str, Any] | None = None
    by_delegate: str | None = None


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
class Delegator:
    """A member whose approvals the actor may give now, by an active delegation."""

    user_id: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class AttachedFile:
    """A file the decider names in a decision (uploaded to the run), for its audit event: which
    bytes were approved, by digest."""

    id: str
    name: str
    sha256: str
    size: int
    media_type: str


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
    delegators: tuple[Delegator, ...] = ()
    # Where the decision came from (email, address, user agent, credential), for its audit event.
    origin: RequestOrigin | None = None
    # Files the decider attached (their own uploads to the run), listed in the audit event.
    attachments: tuple[AttachedFile, ...] = ()


@dataclass(frozen=True)
class DecisionResult:
    step_id: str
    state: StepState
    decision: Decision
    decided_by: str


@dataclass(frozen=True)
class Acting:
    """Whose seat a decision fills: the actor's own, or (by delegation) a delegator's."""

    user_id: str
    roles: tuple[str, ...]
    on_behalf_of: str | None = None


def resolve_decider(
    step: ApprovalStep | None,
    request: DecisionRequest,
    *,
    approved_earlier: frozenset[str] = frozenset(),
) -> Acting | RefusalReason:
    """The single eligibility check, shared by every channel: whose decision this is, or why not.

    The actor decides in their own name when the policy names them; otherwise in the name of the
    first person who delegated to them and is eligible. `approved_earlier` holds who approved an
    earlier step of the same run: one person may not approve twice in one chain, in person or
    through a delegate. The run's requester can approve neither in person nor as a delegate.
    """
    if step is None:
        return RefusalReason.STEP_NOT_FOUND
    if step.state is not StepState.PENDING:
        return RefusalReason.STEP_CLOSED
    if step.requester_id is not None and step.requester_id == request.actor_user_id:
        return RefusalReason.SELF_APPROVAL
    candidates = [Acting(request.actor_user_id, request.actor_roles)] + [
        Acting(d.user_id, d.roles, on_behalf_of=d.user_id)
        for d in request.delegators
        if d.user_id != step.requester_id
    ]
    eligible = [c for c in candidates if step.policy.eligible(c.user_id, c.roles)]
    if not eligible:
        return RefusalReason.NOT_AN_APPROVER
    open_seats = [c for c in eligible if c.user_id not in step.deciders]
    if not open_seats:
        return RefusalReason.ALREADY_VOTED
    if request.decision is Decision.APPROVE:
        if request.actor_user_id in approved_earlier:
            return RefusalReason.APPROVED_EARLIER_IN_CHAIN
        allowed = [c for c in open_seats if c.user_id not in approved_earlier]
        if not allowed:
            return RefusalReason.APPROVED_EARLIER_IN_CHAIN
        return allowed[0]
    return open_seats[0]


def refusal_for(
    step: ApprovalStep | None,
    request: DecisionRequest,
    *,
    approved_earlier: frozenset[str] = frozenset(),
) -> RefusalReason | None:
    """None when the decision may be recorded (see `resolve_decider`)."""
    resolved = resolve_decider(step, request, approved_earlier=approved_earlier)
    return resolved if isinstance(resolved, RefusalReason) else None
