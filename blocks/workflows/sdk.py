"""The author SDK: subclass BlocksWorkflow and await `request_approval` for a durable approval step.

Decisions arrive as the `blocks.decide` Update, whose validator applies the eligibility rule from
`blocks.core.approvals` before anything reaches history, so the API can answer 403 or 409 at once.
Every step opening, decision and SLA breach is audited with an id derived from the run, so a
replayed or retried activity never writes an event twice.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ApplicationError

from blocks.core import search_attributes as sa
from blocks.core.approvals import (
    ApprovalStep,
    Approvers,
    DecisionRequest,
    DecisionResult,
    StepState,
    refusal_for,
    state_after,
)
from blocks.core.audit import ActorType, AuditBatch, AuditRecord, Outcome
from blocks.core.ids import workflow_event_id
from blocks.workflows.types import RunInput, RunOutcome, RunView, StepView

with workflow.unsafe.imports_passed_through():
    from blocks.activities.audit import AuditActivities

DECIDE_UPDATE = "blocks.decide"
STATUS_QUERY = "blocks.status"

_AUDIT_TIMEOUT = timedelta(seconds=30)
_AUDIT_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10)
)


class BlocksWorkflow:
    """Base class of every Blocks workflow; `begin` must be the first call of `run`."""

    def __init__(self) -> None:
        self._input: RunInput | None = None
        self._steps: dict[str, ApprovalStep] = {}
        self._status = "running"
        self._pending_audit: list[AuditRecord] = []
        self._pending_attributes: dict[str, SearchAttributeUpdate[Any]] = {}

    # --- decisions -------------------------------------------------------------------------

    @workflow.update(name=DECIDE_UPDATE)
    async def decide(self, request: DecisionRequest) -> DecisionResult:
        step = self._steps[request.step_id]
        step.state = state_after(request.decision)
        step.decided_by = request.actor_user_id
        step.decided_at = workflow.now()
        step.comment = request.comment
        step.channel = request.channel
        step.voters.append(request.actor_user_id)
        return DecisionResult(
            step_id=step.step_id,
            state=step.state,
            decision=request.decision,
            decided_by=request.actor_user_id,
        )

    @decide.validator
    def _validate_decide(self, request: DecisionRequest) -> None:
        reason = refusal_for(self._steps.get(request.step_id), request)
        if reason is not None:
            raise ApplicationError(f"decision refused: {reason.value}", type=reason.value)

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> RunView:
        return RunView(status=self._status, steps=[_view(s) for s in self._steps.values()])

    # --- author API ------------------------------------------------------------------------

    @property
    def run_input(self) -> RunInput:
        if self._input is None:
            raise RuntimeError("call self.begin(run_input) first in the workflow's run method")
        return self._input

    def begin(self, run_input: RunInput) -> None:
        self._input = run_input

    async def request_approval(
        self,
        step_id: str,
        *,
        title: str,
        approvers: Approvers,
        sla: timedelta | None = None,
    ) -> ApprovalStep:
        """Open a step and wait until it is decided or its SLA passes (then it is EXPIRED)."""
        if step_id in self._steps:
            raise ApplicationError(f"step {step_id!r} opened twice", non_retryable=True)
        now = workflow.now()
        step = ApprovalStep(
            step_id=step_id,
            title=title,
            approvers=approvers,
            opened_at=now,
            deadline=now + sla if sla is not None else None,
            requester_id=self.run_input.requested_by,
        )
        self._steps[step_id] = step
        self._status = "awaiting_approval"
        self._set_attributes(
            sa.STATUS.value_set(self._status),
            sa.PENDING_APPROVERS.value_set(approvers.labels()),
            sa.SLA_DEADLINE.value_set(step.deadline)
            if step.deadline is not None
            else sa.SLA_DEADLINE.value_unset(),
        )
        self._audit(
            f"step:{step_id}:opened",
            "step.opened",
            target_id=step_id,
            data={
                "title": title,
                "approvers": approvers.labels(),
                "deadline": step.deadline.isoformat() if step.deadline else None,
            },
        )
        await self._flush()
        try:
            await workflow.wait_condition(lambda: step.state is not StepState.PENDING, timeout=sla)
        except TimeoutError:
            step.state = StepState.EXPIRED
            self._audit(
                f"step:{step_id}:sla_breached",
                "step.sla_breached",
                target_id=step_id,
                outcome=Outcome.FAILURE,
                reason="SLA deadline passed without a decision",
                data={"deadline": step.deadline.isoformat() if step.deadline else None},
            )
        else:
            self._audit(
                f"step:{step_id}:decided",
                "step.decided",
                actor_type=ActorType.USER,
                actor_id=step.decided_by,
                target_id=step_id,
                data={
                    "decision": step.state.value,
                    "comment": step.comment,
                    "channel": step.channel,
                    "policy": {"approvers": approvers.labels(), "quorum": "any"},
                    "workflow": self.run_input.workflow_name,
                },
            )
        self._status = "running"
        self._set_attributes(
            sa.STATUS.value_set(self._status),
            sa.PENDING_APPROVERS.value_unset(),
            sa.SLA_DEADLINE.value_unset(),
        )
        return step

    async def finish(self, status: str, **detail: object) -> RunOutcome:
        """Record the run's outcome in the audit log and return it as the workflow result."""
        self._status = status
        self._set_attributes(sa.STATUS.value_set(status))
        self._audit("run:finished", "run.completed", data={"status": status, **detail})
        await self._flush()
        return RunOutcome(status=status, detail=dict(detail))

    # --- audit -----------------------------------------------------------------------------

    def _audit(
        self,
        key: str,
        action: str,
        *,
        actor_type: ActorType = ActorType.WORKFLOW,
        actor_id: str | None = None,
        target_id: str | None = None,
        outcome: Outcome = Outcome.SUCCESS,
        reason: str | None = None,
        data: dict[str, object] | None = None,
    ) -> None:
        """Queue an event; it is written at the next flush (before any wait, and at the end).

        A crash before the flush loses nothing: replay re-creates the same event with the same id.
        """
        info = workflow.info()
        self._pending_audit.append(
            AuditRecord(
                action=action,
                actor_type=actor_type,
                actor_id=actor_id
                or (info.workflow_id if actor_type is ActorType.WORKFLOW else None),
                target_type="step" if target_id else "run",
                target_id=target_id or self.run_input.run_id,
                run_id=self.run_input.run_id,
                outcome=outcome,
                reason=reason,
                data=dict(data or {}),
                event_id=str(workflow_event_id(info.workflow_id, key)),
            )
        )

    def _set_attributes(self, *updates: SearchAttributeUpdate[Any]) -> None:
        """Queue search attribute changes; the last value of each key is sent at the next flush."""
        for update in updates:
            self._pending_attributes[update.key.name] = update

    async def _flush(self) -> None:
        """Send queued search attributes (one command) and audit events (one local activity).

        Called before every wait and at the end, so what an operator filters on and what the
        audit log says are current whenever the run waits or ends.
        """
        if self._pending_attributes:
            workflow.upsert_search_attributes(list(self._pending_attributes.values()))
            self._pending_attributes = {}
        if not self._pending_audit:
            return
        batch, self._pending_audit = self._pending_audit, []
        await workflow.execute_local_activity_method(
            AuditActivities.record,
            AuditBatch(org_id=self.run_input.org_id, records=batch),
            start_to_close_timeout=_AUDIT_TIMEOUT,
            retry_policy=_AUDIT_RETRY,
        )


def _view(step: ApprovalStep) -> StepView:
    return StepView(
        step_id=step.step_id,
        title=step.title,
        state=step.state.value,
        approvers=step.approvers.labels(),
        opened_at=step.opened_at,
        deadline=step.deadline,
        decided_by=step.decided_by,
        decided_at=step.decided_at,
        decision_comment=step.comment,
    )
