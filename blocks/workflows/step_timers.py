"""The wait of an open approval step: reminders, escalation and the SLA breach on durable timers.

`StepTimers` is a mixin of `BlocksWorkflow`: it holds the loop that waits for decisions, the
three things a timer may do to a step, and what a cancellation of the run does to the steps that
wait (each closes as `cancelled`, and the run records its end: `_cancel_run`, called by
`blocks.workflows.cancellation` wherever the cancellation lands), each audited with an id derived
from the run and step.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError, is_cancelled_exception

from blocks.core.approvals.eligibility import (
    ApprovalStep,
    BreachAction,
    Escalation,
    OnBreach,
    StepState,
)
from blocks.core.approvals.notifications import NoticeKind
from blocks.core.approvals.policy import ApprovalPolicy, ApproverGroup
from blocks.core.audit.records import Outcome
from blocks.workflows.outbox import Outbox
from blocks.workflows.types import RunInput, RunOutcome

_MAX_REMINDERS = 100


class StepTimers:
    """The waiting half of `BlocksWorkflow`; the hooks below are the other half's."""

    _input: RunInput | None
    _steps: dict[str, ApprovalStep]
    _outbox: Outbox
    _finished: bool
    # `_cancel_run` does its work once; a second call waits until the first has written it.
    _run_cancelled: bool = False
    _cancel_recorded: bool = False

    def _audit(self, key: str, action: str, **fields: Any) -> None:
        raise NotImplementedError

    def _notify(self, step: ApprovalStep, kind: NoticeKind, occasion: str = "") -> None:
        raise NotImplementedError

    def _show_pending(self) -> None:
        raise NotImplementedError

    async def _flush(self) -> None:
        raise NotImplementedError

    async def finish(self, status: str, **detail: object) -> RunOutcome:
        raise NotImplementedError

    async def _wait_for_decision(
        self,
        step: ApprovalStep,
        remind_every: timedelta | None,
        escalation: Escalation | None,
        on_breach: OnBreach,
    ) -> None:
        try:
            await self._wait_until_closed(step, remind_every, escalation, on_breach)
        except (Exception, asyncio.CancelledError) as err:
            # The run's cancellation is recorded around the whole run method, once for every
            # step (blocks.workflows.cancellation); only the author's own cancelling of this
            # wait is this step's alone.
            if is_cancelled_exception(err) and workflow.cancellation_reason() is None:
                if step.state is StepState.PENDING:
                    self._close(step, StepState.CANCELLED)
                    self._show_pending()
                else:
                    self._audit_closed(step)  # decided just before its wait was cancelled
            raise
        self._audit_closed(step)

    async def _wait_until_closed(
        self,
        step: ApprovalStep,
        remind_every: timedelta | None,
        escalation: Escalation | None,
        on_breach: OnBreach,
    ) -> None:
        next_reminder = step.opened_at + remind_every if remind_every else None
        escalate_at = step.deadline - escalation.before if escalation and step.deadline else None
        votes_seen = -1
        while step.state is StepState.PENDING:
            if len(step.votes) != votes_seen:
                votes_seen = len(step.votes)
                await self._flush()  # votes that did not close the step yet are audited now
                continue
            now = workflow.now()
            moments = [m for m in (next_reminder, escalate_at, step.deadline) if m is not None]
            wake = min(moments) if moments else None
            timeout = max(wake - now, timedelta(0)) if wake else None
            woke = await _wait(
                lambda seen=votes_seen: (
                    step.state is not StepState.PENDING or len(step.votes) != seen
                ),
                timeout,
            )
            if woke:
                continue
            now = workflow.now()
            if step.deadline is not None and now >= step.deadline:
                next_reminder = await self._breach(step, on_breach, remind_every)
            elif escalate_at is not None and now >= escalate_at and escalation is not None:
                self._escalate(step, escalation)
                escalate_at = None
            elif next_reminder is not None and now >= next_reminder:
                self._remind(step)
                next_reminder = (
                    now + remind_every
                    if remind_every and step.reminders_sent < _MAX_REMINDERS
                    else None
                )
            await self._flush()

    def _audit_closed(self, step: ApprovalStep, reason: str | None = None, **extra: object) -> None:
        """`step.closed`; a `reason` (why it closed undecided) is also in the event's data."""
        self._audit(
            f"step:{step.step_id}:closed",
            "step.closed",
            target_id=step.step_id,
            outcome=Outcome.FAILURE
            if step.state in (StepState.EXPIRED, StepState.CANCELLED)
            else Outcome.SUCCESS,
            reason=reason,
            data={
                "state": step.state.value,
                **({"reason": reason} if reason else {}),
                "deciders": step.deciders,
                "decided_at": step.decided_at.isoformat() if step.decided_at else None,
                "deadline": step.deadline.isoformat() if step.deadline else None,
                "reminders": step.reminders_sent,
                "escalated": step.escalated,
                **extra,
            },
        )

    def _close(self, step: ApprovalStep, state: StepState) -> None:
        """Close a waiting step without a decision (its `decided_at` stays empty)."""
        step.state = state
        self._audit_closed(step, closed_at=workflow.now().isoformat())

    async def _cancel_run(self) -> None:
        """The run was cancelled (`POST /v1/runs/{id}/cancel`): every waiting step closes as
        cancelled, so its timers and reminders stop and decisions are refused, and the run
        records its end. The caller re-raises, so the workflow ends as cancelled.

        Nothing to record for a run that has not begun, or whose end is recorded already (the
        author's own `finish`); called again, it returns once the first call has written it."""
        if self._input is None or (self._finished and not self._run_cancelled):
            return
        if self._run_cancelled:
            await workflow.wait_condition(lambda: self._cancel_recorded)
            return
        self._run_cancelled = True
        for step in self._steps.values():
            if step.state is StepState.PENDING:
                self._close(step, StepState.CANCELLED)
            else:
                # A step decided as the cancellation came may not have logged its closing yet;
                # for one that did, the same event id makes this a no-op.
                self._audit_closed(step)
        self._show_pending()
        # A branch cancelled while writing its events writes them first (Outbox.flush).
        await workflow.wait_condition(lambda: not self._outbox.busy)
        # The API passes the id of its `run.cancel_requested` event, never the person's words:
        # those are in that event, and Temporal's history stores the reason unencrypted.
        await self.finish("cancelled", cancel_request=workflow.cancellation_reason() or None)
        self._cancel_recorded = True

    async def _fail_run(self, error_type: str) -> None:
        """The author's code failed the run (an error that fails the workflow, not a retried
        task): its waiting steps close as cancelled, so no inbox keeps offering them, and the run
        records its end as `failed` with the error's type. The message stays out of the log: it
        may quote the run's input. The caller re-raises, so the workflow fails as it would have.
        """
        if self._input is None or self._finished:
            return
        for step in self._steps.values():
            if step.state is StepState.PENDING:
                self._close(step, StepState.CANCELLED)
        self._show_pending()
        # A branch interrupted while writing its events writes them first (Outbox.flush).
        await workflow.wait_condition(lambda: not self._outbox.busy)
        await self.finish("failed", error_type=error_type)

    def _remind(self, step: ApprovalStep) -> None:
        step.reminders_sent += 1
        self._notify(step, NoticeKind.REMINDER, str(step.reminders_sent))
        self._audit(
            f"step:{step.step_id}:reminded:{step.reminders_sent}",
            "step.reminded",
            target_id=step.step_id,
            data={
                "reminder": step.reminders_sent,
                "at": workflow.now().isoformat(),
                "pending_approvers": step.policy.labels(),
            },
        )

    def _escalate(self, step: ApprovalStep, escalation: Escalation) -> None:
        before = step.policy.labels()
        if escalation.replace:
            step.policy = ApprovalPolicy(
                (ApproverGroup("escalation", escalation.users, escalation.roles, 1),),
                step.policy.rejection,
                step.policy.rejections_required,
            )
        else:
            step.policy = step.policy.widened(users=escalation.users, roles=escalation.roles)
        step.escalated = True
        self._show_pending()
        self._notify(step, NoticeKind.ESCALATED)
        self._audit_escalated(step, before, reassigned=escalation.replace)

    def _audit_escalated(
        self,
        step: ApprovalStep,
        approvers_before: list[str],
        *,
        reassigned: bool,
        reason: str | None = None,
    ) -> None:
        """`step.escalated`, by the timer or (with a `reason`) at once when the step opens."""
        self._audit(
            f"step:{step.step_id}:escalated",
            "step.escalated",
            target_id=step.step_id,
            reason=reason,
            data={
                "at": workflow.now().isoformat(),
                "approvers_before": approvers_before,
                "approvers_after": step.policy.labels(),
                "reassigned": reassigned,
                "deadline": step.deadline.isoformat() if step.deadline else None,
            },
        )

    async def _breach(
        self, step: ApprovalStep, on_breach: OnBreach, remind_every: timedelta | None
    ) -> datetime | None:
        """Apply the breach action; returns when the next reminder is due (if the step stays open)."""
        step.breaches += 1
        # A second breach after an escalating one expires the step: escalation is not endless.
        action = on_breach.action if step.breaches == 1 else BreachAction.EXPIRE
        now = workflow.now()
        extend = on_breach.extend if action is BreachAction.ESCALATE else None
        widened = step.policy.widened(users=on_breach.users, roles=on_breach.roles)
        # An escalating breach also says what it changes (the pending-steps projection reads it).
        escalated = (
            {"approvers_after": widened.labels(), "deadline_after": (now + extend).isoformat()}
            if extend is not None
            else {}
        )
        self._audit(
            f"step:{step.step_id}:sla_breached:{step.breaches}",
            "step.sla_breached",
            target_id=step.step_id,
            outcome=Outcome.FAILURE,
            reason="SLA deadline passed without a decision",
            data={
                "at": now.isoformat(),
                "deadline": step.deadline.isoformat() if step.deadline else None,
                "action": action.value,
                **escalated,
            },
        )
        if extend is not None:
            step.policy = widened
            step.deadline = now + extend
            step.escalated = True
            self._show_pending()
            return now + remind_every if remind_every else None
        step.state = StepState.REJECTED if action is BreachAction.REJECT else StepState.EXPIRED
        step.decided_at = now
        if action is BreachAction.FAIL:
            self._audit(
                f"step:{step.step_id}:closed",
                "step.closed",
                target_id=step.step_id,
                outcome=Outcome.FAILURE,
                data={"state": step.state.value, "deciders": step.deciders},
            )
            await self.finish("failed", reason="sla_breached", step=step.step_id)
            raise ApplicationError(
                f"step {step.step_id!r} breached its SLA", type="sla_breached", non_retryable=True
            )
        return None


async def _wait(condition: Any, within: timedelta | None) -> bool:
    """True if the condition came true, False if the time passed first."""
    try:
        await workflow.wait_condition(condition, timeout=within)
    except TimeoutError:
        return False
    return True
