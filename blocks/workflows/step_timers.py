"""The wait of an open approval step: reminders, escalation and the SLA breach on durable timers.

`StepTimers` is a mixin of `BlocksWorkflow`: it holds the loop that waits for decisions and the
three things a timer may do to a step, each audited with an id derived from the run and step.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

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
from blocks.workflows.types import RunOutcome

_MAX_REMINDERS = 100


class StepTimers:
    """The waiting half of `BlocksWorkflow`; the hooks below are the other half's."""

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
        self._audit(
            f"step:{step.step_id}:closed",
            "step.closed",
            target_id=step.step_id,
            outcome=Outcome.FAILURE if step.state is StepState.EXPIRED else Outcome.SUCCESS,
            data={
                "state": step.state.value,
                "deciders": step.deciders,
                "decided_at": step.decided_at.isoformat() if step.decided_at else None,
                "deadline": step.deadline.isoformat() if step.deadline else None,
                "reminders": step.reminders_sent,
                "escalated": step.escalated,
            },
        )

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
        self._audit(
            f"step:{step.step_id}:escalated",
            "step.escalated",
            target_id=step.step_id,
            data={
                "at": workflow.now().isoformat(),
                "approvers_before": before,
                "approvers_after": step.policy.labels(),
                "reassigned": escalation.replace,
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
        self._audit(
            f"step:{step.step_id}:sla_breached:{step.breaches}",
            "step.sla_breached",
            target_id=step.step_id,
            outcome=Outcome.FAILURE,
            reason="SLA deadline passed without a decision",
            data={
                "at": workflow.now().isoformat(),
                "deadline": step.deadline.isoformat() if step.deadline else None,
                "action": action.value,
            },
        )
        now = workflow.now()
        if action is BreachAction.ESCALATE and on_breach.extend is not None:
            step.policy = step.policy.widened(users=on_breach.users, roles=on_breach.roles)
            step.deadline = now + on_breach.extend
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
