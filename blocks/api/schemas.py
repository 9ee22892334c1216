"""Request and response bodies; requests refuse unknown fields."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example

_STEP = {
    "step_id": "approve",
    "title": "Expense of 120.50 EUR: Team lunch",
    "state": "pending",
    "approvers": ["role:approver"],
    "opened_at": ex.STARTED,
    "deadline": ex.DEADLINE,
    "decided_by": None,
    "decided_at": None,
    "comment": None,
    "context": None,
    "context_hidden": False,
}


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StartRunIn(StrictModel):
    model_config = example(workflow="expense_approval", input=ex.EXPENSE)

    workflow: str = Field(min_length=1, max_length=200, description="A registered workflow name")
    input: dict[str, Any] = Field(default_factory=dict, description="The workflow's parameters")


class StepOut(BaseModel):
    model_config = example(**_STEP)

    step_id: str
    title: str
    state: str
    approvers: list[str]
    opened_at: datetime
    deadline: datetime | None
    decided_by: str | None
    decided_at: datetime | None
    comment: str | None
    context: dict[str, Any] | None = Field(
        default=None,
        description="What the approvers see to decide the step (e.g. a model's draft): shown "
        "only to a caller who may decide the step now, else null",
    )
    context_hidden: bool = Field(
        default=False,
        description="True when the step has a context this caller may not see",
    )


_HISTORY = [
    {
        "event": "opened",
        "at": ex.STARTED,
        "event_id": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
        "actor_id": None,
        "approvers": ["role:approver"],
        "deadline": ex.DEADLINE,
    },
    {
        "event": "decided",
        "at": ex.DECIDED,
        "event_id": ex.EVENT_ID,
        "actor_id": ex.APPROVER_ID,
        "decision": "approve",
        "channel": "slack",
        "on_behalf_of": None,
        "comment": "Within the team budget",
        "state": "approved",
    },
    {
        "event": "closed",
        "at": ex.DECIDED,
        "event_id": "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e",
        "actor_id": None,
        "state": "approved",
    },
]


class StepEventOut(BaseModel):
    """One thing that happened to a step, read from the run's audit event that records it."""

    model_config = example(**_HISTORY[1])

    event: str = Field(
        description="opened, reminded, escalated, decided, sla_breached or closed: the audit "
        "action without `step.`"
    )
    at: datetime = Field(description="When it happened, by the workflow's clock")
    event_id: uuid.UUID = Field(description="The audit event that records it")
    actor_id: str | None = Field(description="Who acted: the member who decided, else None")
    decision: str | None = Field(default=None, description="decided: approve or reject")
    channel: str | None = Field(default=None, description="decided: api, slack, email link ...")
    on_behalf_of: str | None = Field(
        default=None, description="decided: the member whose seat a delegate filled"
    )
    comment: str | None = None
    state: str | None = Field(default=None, description="The step's state after this event")
    approvers: list[str] | None = Field(
        default=None,
        description="opened, reminded, escalated: who may decide from then on "
        "(`user:<id>`, `role:<name>`, `group:<name>`)",
    )
    deadline: datetime | None = None
    detail: dict[str, Any] = Field(
        default_factory=dict,
        description="The rest the event says (reminder number, breach action, ...)",
    )


class StepDetailOut(BaseModel):
    model_config = example(
        step_id="approve",
        title="Expense of 120.50 EUR: Team lunch",
        state="approved",
        approvers=["role:approver"],
        opened_at=ex.STARTED,
        deadline=ex.DEADLINE,
        closed_at=ex.DECIDED,
        history=_HISTORY,
    )

    step_id: str
    title: str
    state: str = Field(description="pending, approved, rejected, expired or cancelled")
    approvers: list[str]
    opened_at: datetime
    deadline: datetime | None
    closed_at: datetime | None
    history: list[StepEventOut]


class RunOut(BaseModel):
    model_config = example(
        id=ex.RUN_ID,
        workflow="expense_approval",
        workflow_version="1",
        status="running",
        stage="awaiting_approval",
        requested_by=ex.OPERATOR_ID,
        created_at=ex.STARTED,
        pending_steps=[_STEP],
        steps=[
            {
                "step_id": "approve",
                "title": "Expense of 120.50 EUR: Team lunch",
                "state": "pending",
                "approvers": ["role:approver"],
                "opened_at": ex.STARTED,
                "deadline": ex.DEADLINE,
                "closed_at": None,
                "history": _HISTORY[:1],
            }
        ],
        result=None,
    )

    id: uuid.UUID
    workflow: str
    workflow_version: str | None = Field(
        default=None, description="The workflow's version the run started on"
    )
    status: str = Field(
        description="starting, running, completed, failed, canceled, terminated, timed_out, start_failed"
    )
    stage: str | None = Field(
        description="What the workflow says it is doing, e.g. awaiting_approval"
    )
    requested_by: uuid.UUID | None
    created_at: datetime
    pending_steps: list[StepOut]
    steps: list[StepDetailOut] = Field(
        default_factory=list,
        description="Every step the run opened, with its history, from the run's audit events",
    )
    result: dict[str, Any] | None


_SUMMARY = {
    "id": ex.RUN_ID,
    "workflow": "expense_approval",
    "status": "running",
    "stage": "awaiting_approval",
    "requested_by": ex.OPERATOR_ID,
    "pending_approvers": ["role:approver"],
    "sla_deadline": ex.DEADLINE,
    "started_at": ex.STARTED,
    "closed_at": None,
}


class RunSummaryOut(BaseModel):
    model_config = example(**_SUMMARY)

    id: uuid.UUID
    workflow: str
    status: str
    stage: str | None
    requested_by: uuid.UUID | None = Field(
        default=None,
        description="Who started the run (None for runs started before it was recorded)",
    )
    pending_approvers: list[str] = Field(
        default_factory=list, description="Who may decide the steps that wait now"
    )
    sla_deadline: datetime | None = Field(
        default=None, description="The nearest deadline of the steps that wait now"
    )
    started_at: datetime | None
    closed_at: datetime | None


class RunListOut(BaseModel):
    model_config = example(runs=[_SUMMARY], next_cursor="q1xH3f0u9n8AAAB7Im9mZnNldCI6NTB9")

    runs: list[RunSummaryOut]
    next_cursor: str | None = Field(
        default=None,
        description="Pass as `cursor` (with the same filters) for the next page; None at the end",
    )


class RunCancelIn(StrictModel):
    model_config = example(reason="Duplicate of another request; the supplier withdrew")

    reason: str = Field(
        min_length=1, max_length=500, pattern=r"\S", description="Why the run is cancelled"
    )


class RunCancelOut(BaseModel):
    model_config = example(
        id=ex.RUN_ID,
        status="cancel_requested",
        reason="Duplicate of another request; the supplier withdrew",
    )

    id: uuid.UUID
    status: Literal["cancel_requested"] = Field(
        description="The workflow closes its waiting steps as cancelled, then the run reads "
        "`canceled`"
    )
    reason: str


# How many files one decision may name.
MAX_DECISION_ATTACHMENTS = 20


class DecisionIn(StrictModel):
    model_config = example(decision="approve", comment="Within the team budget")

    decision: Literal["approve", "reject"]
    comment: str | None = Field(
        default=None,
        max_length=2000,
        description="Rich text (a small HTML subset); sanitized before it is stored",
    )
    form: dict[str, Any] | None = Field(
        default=None, description="The step's decision form, when its workflow defines one"
    )
    attachment_ids: list[uuid.UUID] = Field(
        default_factory=list,
        max_length=MAX_DECISION_ATTACHMENTS,
        description="Files of this run you uploaded (POST /v1/runs/{run_id}/attachments) that "
        "the decision names; each one's id, name and SHA-256 go into the decision's audit event",
    )


class DecisionOut(BaseModel):
    model_config = example(
        run_id=ex.RUN_ID,
        step_id="approve",
        state="approved",
        decision="approve",
        decided_by=ex.APPROVER_ID,
    )

    run_id: uuid.UUID
    step_id: str
    state: str
    decision: str
    decided_by: str


EventIdT = TypeVar("EventIdT")
OccurredAtT = TypeVar("OccurredAtT")


class AuditEventFields(BaseModel, Generic[EventIdT, OccurredAtT]):
    """An audit event's stored fields and hashes. The id and time are typed where the event is
    shown, and strings exactly as hashed where its hash is checked (a run's chain of custody)."""

    id: EventIdT
    seq: int
    occurred_at: OccurredAtT
    action: str
    actor_type: str
    actor_id: str | None
    actor_email: str | None
    target_type: str | None
    target_id: str | None
    run_id: str | None
    outcome: str
    reason: str | None
    ip: str | None
    user_agent: str | None
    data: dict[str, Any]
    prev_hash: str
    hash: str


AUDIT_EVENT = {
    "id": ex.EVENT_ID,
    "seq": 42,
    "occurred_at": ex.DECIDED,
    "action": "step.decided",
    "actor_type": "user",
    "actor_id": ex.APPROVER_ID,
    "actor_email": ex.APPROVER_EMAIL,
    "target_type": "step",
    "target_id": "approve",
    "run_id": ex.RUN_ID,
    "outcome": "success",
    "reason": None,
    "ip": "203.0.113.7",
    "user_agent": ex.USER_AGENT,
    "data": {"decision": "approve", "step_state": "approved", "channel": "api"},
    "prev_hash": ex.PREV_HASH,
    "hash": ex.HASH,
}


class AuditEventOut(AuditEventFields[uuid.UUID, datetime]):
    model_config = example(**AUDIT_EVENT, personal_data_erased=False)

    # True when the actor's personal fields read "[erased]": their data key was destroyed. The
    # hash covers the stored ciphertext, not these shown values (see models.personal_data).
    personal_data_erased: bool = False


class AuditEventListOut(BaseModel):
    model_config = example(
        events=[{**AUDIT_EVENT, "personal_data_erased": False}], next_after_seq=42
    )

    events: list[AuditEventOut]
    next_after_seq: int | None


class FieldErrorOut(BaseModel):
    model_config = example(field="input.amount", reason="Input should be greater than 0")

    field: str = Field(description="The field (dotted path), parameter or header at fault")
    reason: str


class ProblemOut(BaseModel):
    """An error, as RFC 9457 problem+json (blocks.api.errors.Problem)."""

    model_config = example(
        type="/problems/validation_error",
        title="Invalid Request",
        status=422,
        detail="input.amount: Input should be greater than 0",
        instance="/v1/runs",
        code="validation_error",
        errors=[{"field": "input.amount", "reason": "Input should be greater than 0"}],
    )

    type: str = Field(description="/problems/<code>")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    instance: str | None = Field(default=None, description="The request's path")
    code: str = Field(description="A stable identifier of the error, for programs")
    errors: list[FieldErrorOut] | None = Field(
        default=None, description="The fields at fault, for a refused request"
    )
