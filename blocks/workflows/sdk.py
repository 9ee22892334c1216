"""The author SDK: subclass BlocksWorkflow and await `request_approval` for a durable approval step.

Decisions arrive as the `blocks.decide` Update, whose validator applies the eligibility rule from
`blocks.core.approvals.eligibility` before anything reaches history, so the API can answer 403, 409 or 422 at
once. A step waits on durable timers for its reminders, escalation and SLA breach. Every step
opening, vote, closing, reminder, escalation and breach is audited with an id derived from the
run, so a replayed or retried activity never writes an event twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from datetime import timedelta
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import ApplicationError

from blocks.core.approvals import search_attributes as sa
from blocks.core.approvals.business_hours import BusinessCalendar, deadline_after
from blocks.core.approvals.eligibility import (
    ApprovalStep,
    BreachAction,
    CastVote,
    Decision,
    DecisionRequest,
    DecisionResult,
    Escalation,
    OnBreach,
    RefusalReason,
    StepState,
    refusal_for,
    resolve_decider,
)
from blocks.core.approvals.notifications import NoticeKind, StepNotice
from blocks.core.approvals.policy import ApprovalPolicy, ApproverGroup
from blocks.core.audit.ids import workflow_event_id
from blocks.core.audit.records import ActorType
from blocks.workflows.agent_step import AgentSteps
from blocks.workflows.llm_step import LlmMessage, LlmReply, LlmSteps
from blocks.workflows.outbox import Outbox
from blocks.workflows.step_approvers import StepApprovers
from blocks.workflows.step_context import StepContext, checked_context, shown_context
from blocks.workflows.step_timers import StepTimers
from blocks.workflows.types import (
    MemberId,
    PositiveAmount,
    RunInput,
    RunOutcome,
    RunView,
    StatusViewer,
    StepView,
    approver_field,
)

# What an author imports: `from blocks.workflows.sdk import BlocksWorkflow, ApprovalPolicy, ...`.
__all__ = [
    "ApprovalPolicy",
    "ApproverGroup",
    "BlocksWorkflow",
    "BreachAction",
    "BusinessCalendar",
    "Escalation",
    "LlmMessage",
    "LlmReply",
    "MemberId",
    "OnBreach",
    "PositiveAmount",
    "RunInput",
    "RunOutcome",
    "StepState",
    "approver_field",
]

InputModel = TypeVar("InputModel", bound=BaseModel)

DECIDE_UPDATE = "blocks.decide"
STATUS_QUERY = "blocks.status"


class BlocksWorkflow(StepTimers, StepApprovers, LlmSteps, AgentSteps):
    """Base class of every Blocks workflow; `begin` must be the first call of `run`."""

    # What the worker publishes to the catalogue (blocks.workflows.catalogue), so the API can
    # list the workflow and validate a start's input without importing it. VERSION is recorded on
    # each run and decision, so an auditor knows which rules were in force; DESCRIPTION defaults to
    # the class docstring; INPUT validates `run_input.params`; FORMS names each step's decision form.
    VERSION: ClassVar[str] = "1"
    DESCRIPTION: ClassVar[str] = ""
    INPUT: ClassVar[type[BaseModel] | None] = None
    FORMS: ClassVar[Mapping[str, type[BaseModel]]] = {}
    # The steps of a run are links of one chain: one person approves at most one of them (four
    # eyes). True makes each step an item of its own that one person may approve with the others
    # (a review's items).
    INDEPENDENT_STEPS: ClassVar[bool] = False

    def __init__(self) -> None:
        self._input: RunInput | None = None
        self._steps: dict[str, ApprovalStep] = {}
        self._forms: dict[str, type[BaseModel]] = {}
        self._contexts: dict[str, StepContext] = {}
        self._approved_in_chain: set[str] = set()
        self._status = "running"
        self._finished = False  # the run's end is recorded (`finish`)
        self._outbox = Outbox()

    # --- decisions -------------------------------------------------------------------------

    @workflow.update(name=DECIDE_UPDATE)
    async def decide(self, request: DecisionRequest) -> DecisionResult:
        step = self._steps[request.step_id]
        acting = resolve_decider(step, request, approved_earlier=frozenset(self._approved_in_chain))
        if isinstance(acting, RefusalReason):  # the validator ran the same check; cannot happen
            raise ApplicationError(f"decision refused: {acting.value}", type=acting.value)
        vote = CastVote(
            user_id=acting.user_id,
            roles=acting.roles,
            decision=request.decision,
            at=workflow.now(),
            channel=request.channel,
            comment=request.comment,
            form=request.form,
            by_delegate=request.actor_user_id if acting.on_behalf_of else None,
        )
        step.record(vote)
        if request.decision is Decision.APPROVE and not self.INDEPENDENT_STEPS:
            # Both count as having approved in this chain: the seat's owner and whoever acted.
            self._approved_in_chain.update({acting.user_id, request.actor_user_id})
        self._audit(
            f"step:{step.step_id}:vote:{acting.user_id}",
            "step.decided",
            actor_type=ActorType.USER,
            actor_id=request.actor_user_id,
            target_id=step.step_id,
            origin=request.origin,
            data={
                "at": vote.at.isoformat(),
                "decision": request.decision.value,
                "on_behalf_of": acting.on_behalf_of,
                "comment": request.comment,
                "form": request.form,
                "channel": request.channel,
                "step_state": step.state.value,
                "policy": step.policy.describe(),
                "workflow": self.run_input.workflow_name,
                "workflow_version": self.VERSION,
                # Only when files were named: events of decisions without any stay as they were.
                **(
                    {"attachments": [asdict(file) for file in request.attachments]}
                    if request.attachments
                    else {}
                ),
            },
        )
        return DecisionResult(
            step_id=step.step_id,
            state=step.state,
            decision=request.decision,
            decided_by=request.actor_user_id,
        )

    @decide.validator
    def _validate_decide(self, request: DecisionRequest) -> None:
        step = self._steps.get(request.step_id)
        reason = refusal_for(step, request, approved_earlier=frozenset(self._approved_in_chain))
        if reason is None and workflow.cancellation_reason() is not None:
            reason = RefusalReason.STEP_CLOSED  # the run is being cancelled: its steps are closing
        if reason is None and step is not None and step.step_id in self._forms:
            try:
                self._forms[step.step_id].model_validate(request.form or {})
            except ValidationError as err:
                raise ApplicationError(
                    f"decision refused: {RefusalReason.FORM_INVALID.value}: {_describe_errors(err)}",
                    [
                        {"field": ".".join(str(p) for p in e["loc"]), "reason": e["msg"]}
                        for e in err.errors()
                    ],
                    type=RefusalReason.FORM_INVALID.value,
                ) from None
        if reason is not None:
            raise ApplicationError(f"decision refused: {reason.value}", type=reason.value)

    @workflow.query(name=STATUS_QUERY)
    def status(self, viewer: StatusViewer | None = None) -> RunView:
        """The run as it stands; each step's context as `viewer` may see it (step_context)."""
        approved = frozenset(self._approved_in_chain)
        steps: list[StepView] = []
        for step in self._steps.values():
            context, hidden = shown_context(
                step, self._contexts.get(step.step_id), viewer, approved_earlier=approved
            )
            steps.append(StepView.of(step, context=context, context_hidden=hidden))
        return RunView(
            status=self._status,
            steps=steps,
            requested_by=self._input.requested_by if self._input else None,
            workflow_name=self._input.workflow_name if self._input else None,
        )

    # --- author API ------------------------------------------------------------------------

    @property
    def run_input(self) -> RunInput:
        if self._input is None:
            raise RuntimeError("call self.begin(run_input) first in the workflow's run method")
        return self._input

    def begin(self, run_input: RunInput) -> None:
        self._input = run_input
        # The run records its own start, with an id derived from the run: the log never holds a
        # start that did not happen, and a start confirmed twice is written once.
        self._audit(
            "run:started",
            "run.started",
            actor_type=ActorType.USER if run_input.requested_by else ActorType.SYSTEM,
            actor_id=run_input.requested_by,
            origin=run_input.origin,
            data={"workflow": run_input.workflow_name, "workflow_version": self.VERSION},
        )

    def parse_input(self, model: type[InputModel]) -> InputModel:
        """`run_input.params` as `model`; input it refuses fails the run at once (never retried).

        The API already checked the input against the published JSON Schema; this catches what a
        schema cannot say (rules across fields) and runs started by other means.
        """
        try:
            return model.model_validate(self.run_input.params)
        except ValidationError as err:
            raise ApplicationError(
                f"invalid input: {_describe_errors(err)}", type="invalid_input", non_retryable=True
            ) from None

    async def request_approval(
        self,
        step_id: str,
        *,
        title: str,
        policy: ApprovalPolicy,
        sla: timedelta | None = None,
        calendar: BusinessCalendar | None = None,
        remind_every: timedelta | None = None,
        escalation: Escalation | None = None,
        on_breach: OnBreach | None = None,
        form: type[BaseModel] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> ApprovalStep:
        """Open a step and wait until its policy decides it, or its SLA passes.

        `sla` counts wall-clock time, or working time in `calendar`. Reminders repeat every
        `remind_every` while the step is open; `escalation` fires its `before` the deadline;
        `on_breach` says what the deadline does (by default the step closes as expired).
        `form`, a pydantic model, is what each decision must carry. `context`, a JSON object of
        at most 64 KiB (e.g. `{"draft": reply.text}`), is what the approvers see to decide: only
        a member who may decide the step now reads it, and the audit log keeps its SHA-256 alone.
        """
        if step_id in self._steps:
            raise ApplicationError(f"step {step_id!r} opened twice", non_retryable=True)
        checked = checked_context(step_id, context) if context is not None else None
        on_breach = on_breach or OnBreach()
        # Who the step names by id is checked again now (StepApprovers): it may be days later.
        # A cancellation of the run meanwhile is recorded by blocks.workflows.cancellation.
        at_open = await self._approvers_at_open(
            policy,
            escalation,
            on_breach,
            org_id=self.run_input.org_id,
            requester=self.run_input.requested_by,
        )
        if at_open is not None:
            escalation, on_breach = at_open.adjusted.escalation, at_open.adjusted.on_breach
        if step_id in self._steps:  # opened by a parallel branch while the check ran
            raise ApplicationError(f"step {step_id!r} opened twice", non_retryable=True)
        now = workflow.now()
        deadline = deadline_after(now, sla, calendar)
        step = ApprovalStep(
            step_id=step_id,
            title=title,
            policy=policy,
            opened_at=now,
            deadline=deadline,
            requester_id=self.run_input.requested_by,
        )
        self._steps[step_id] = step
        if form is not None:
            self._forms[step_id] = form
        if checked is not None:
            self._contexts[step_id] = checked
        self._show_pending()
        self._audit(
            f"step:{step_id}:opened",
            "step.opened",
            target_id=step_id,
            data={
                "title": title,
                "policy": policy.describe(),
                "opened_at": now.isoformat(),
                "deadline": deadline.isoformat() if deadline else None,
                "sla_seconds": sla.total_seconds() if sla else None,
                "business_hours": calendar is not None,
                # So the event alone opens the step's row in the inbox's projection (0016).
                "workflow": self.run_input.workflow_name,
                "requested_by": self.run_input.requested_by,
                # The context itself stays in the run: the log holds only its hash (sealed).
                **({"context_sha256": checked.sha256} if checked is not None else {}),
            },
        )
        if at_open is not None:
            self._drop_approvers(step, at_open)
        if step.state is StepState.PENDING:
            self._notify(step, NoticeKind.OPENED)
            await self._wait_for_decision(step, remind_every, escalation, on_breach)
        else:  # nobody left to decide it: closed as it opened
            await self._flush()
        self._show_pending()
        return step

    async def finish(self, status: str, **detail: object) -> RunOutcome:
        """Record the run's outcome in the audit log and return it as the workflow result."""
        self._finished = True
        self._status = status
        self._set_attributes(sa.STATUS.value_set(status))
        self._audit("run:finished", "run.completed", data={"status": status, **detail})
        await self._flush()
        return RunOutcome(status=status, detail=dict(detail))

    def _show_pending(self) -> None:
        """Status, pending approvers and nearest deadline over every open step (steps may run
        in parallel), as the search attributes operators filter on."""
        pending = [s for s in self._steps.values() if s.state is StepState.PENDING]
        self._status = "awaiting_approval" if pending else "running"
        labels = list(dict.fromkeys(label for s in pending for label in s.policy.labels()))
        deadlines = [s.deadline for s in pending if s.deadline is not None]
        self._set_attributes(
            sa.STATUS.value_set(self._status),
            sa.PENDING_APPROVERS.value_set(labels)
            if labels
            else sa.PENDING_APPROVERS.value_unset(),
            sa.SLA_DEADLINE.value_set(min(deadlines))
            if deadlines
            else sa.SLA_DEADLINE.value_unset(),
        )

    # --- the outbox ----------------------------------------------------------------------------

    def _audit(self, key: str, action: str, **fields: Any) -> None:
        self._outbox.audit(run_id=self.run_input.run_id, key=key, action=action, **fields)

    def _notify(self, step: ApprovalStep, kind: NoticeKind, occasion: str = "") -> None:
        """Queue a notice to the step's approvers; it is sent at the next flush."""
        self._outbox.notify(
            StepNotice(
                org_id=self.run_input.org_id,
                run_id=self.run_input.run_id,
                workflow_name=self.run_input.workflow_name,
                step_id=step.step_id,
                title=step.title,
                kind=kind,
                approvers=step.policy.labels(),
                deadline=step.deadline,
                notice_id=str(
                    workflow_event_id(
                        workflow.info().workflow_id, f"notice:{step.step_id}:{kind}:{occasion}"
                    )
                ),
            )
        )

    def _set_attributes(self, *updates: SearchAttributeUpdate[Any]) -> None:
        self._outbox.set_attributes(*updates)

    async def _flush(self) -> None:
        """Called before every wait and at the end, so what an operator filters on and what the
        audit log says are current whenever the run waits or ends."""
        await self._outbox.flush(self.run_input.org_id)


def _describe_errors(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
