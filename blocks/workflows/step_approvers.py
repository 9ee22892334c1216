"""The members a step names are checked again when it opens; those who no longer count are dropped.

A member named when the run started may have been deactivated, or lost every role that lets them
decide, by the time their step opens, days later. `StepApprovers` is a mixin of `BlocksWorkflow`:
before a step opens it asks the worker (the `blocks.approvers.check` local activity) which of the
people the step names still count, drops the others (and the requester) from the step, and
audits it once. A step nobody left can decide escalates at once if it has an escalation, or else
closes as expired (`no_eligible_approvers`).

Runs that opened steps before this check existed replay unchanged: the check sits behind
`workflow.patched(APPROVERS_CHECKED)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

from blocks.core.approvals.eligibility import ApprovalStep, Escalation, OnBreach, StepState
from blocks.core.approvals.named_approvers import ApproversLeft, without_members
from blocks.core.approvals.policy import ApprovalPolicy

with workflow.unsafe.imports_passed_through():
    from blocks.activities.approvers import ApproverActivities, MemberCheck

APPROVERS_CHECKED = "blocks.approvers-checked-at-open"
NO_ELIGIBLE_APPROVERS = "no_eligible_approvers"

_CHECK_TIMEOUT = timedelta(seconds=30)
# Retried until PostgreSQL answers: the step waits to open rather than open unchecked.
_CHECK_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10)
)

# Why a named member was dropped, as the audit event says it.
REQUESTER = "requester"
NOT_COUNTING = "not_an_active_member_allowed_to_decide"


@dataclass(frozen=True)
class ApproversAtOpen:
    """Who of the people a step names no longer count (id -> why), and the step without them."""

    dropped: dict[str, str]
    adjusted: ApproversLeft


class StepApprovers:
    """The approver check of `BlocksWorkflow.request_approval`; the hooks are the workflow's."""

    def _audit(self, key: str, action: str, **fields: Any) -> None:
        raise NotImplementedError

    def _show_pending(self) -> None:
        raise NotImplementedError

    def _audit_closed(self, step: ApprovalStep, reason: str | None = None, **extra: object) -> None:
        raise NotImplementedError

    def _audit_escalated(
        self,
        step: ApprovalStep,
        approvers_before: list[str],
        *,
        reassigned: bool,
        reason: str | None = None,
    ) -> None:
        raise NotImplementedError

    async def _approvers_at_open(
        self,
        policy: ApprovalPolicy,
        escalation: Escalation | None,
        on_breach: OnBreach,
        *,
        org_id: str,
        requester: str | None,
    ) -> ApproversAtOpen | None:
        """None when the step names nobody by id, no one was dropped, or the run's history
        predates the check."""
        named = list(
            dict.fromkeys(
                [
                    *policy.named_users(),
                    *(escalation.users if escalation else ()),
                    *on_breach.users,
                ]
            )
        )
        if not named or not workflow.patched(APPROVERS_CHECKED):
            return None
        others = [u for u in named if u != requester]
        counting: set[str] = set()
        if others:
            counting = set(
                await workflow.execute_local_activity_method(
                    ApproverActivities.check_members,
                    MemberCheck(org_id=org_id, user_ids=others),
                    start_to_close_timeout=_CHECK_TIMEOUT,
                    retry_policy=_CHECK_RETRY,
                )
            )
        dropped = {
            u: REQUESTER if u == requester else NOT_COUNTING for u in named if u not in counting
        }
        if not dropped:
            return None
        return ApproversAtOpen(dropped, without_members(policy, escalation, on_breach, dropped))

    def _drop_approvers(self, step: ApprovalStep, at_open: ApproversAtOpen) -> None:
        """Apply the check to a step that just opened: fewer approvers, escalated, or closed."""
        before = step.policy.labels()
        adjusted = at_open.adjusted
        now = workflow.now()
        if adjusted.policy is not None:
            step.policy = adjusted.policy
        self._audit(
            f"step:{step.step_id}:approvers_dropped",
            "step.approvers_dropped",
            target_id=step.step_id,
            data={
                "at": now.isoformat(),
                "dropped": [{"user_id": u, "reason": why} for u, why in at_open.dropped.items()],
                "approvers_before": before,
                "approvers_after": step.policy.labels() if adjusted.policy else [],
                "outcome": (
                    "escalated"
                    if adjusted.escalated
                    else "closed"
                    if adjusted.policy is None
                    else "kept"
                ),
            },
        )
        if adjusted.escalated:
            step.escalated = True
            # As the escalation timer writes it (StepTimers._escalate), a little early.
            self._audit_escalated(
                step, before, reassigned=adjusted.reassigned, reason=NO_ELIGIBLE_APPROVERS
            )
        if adjusted.policy is None:
            step.state = StepState.EXPIRED
            step.decided_at = now
            self._audit_closed(step, reason=NO_ELIGIBLE_APPROVERS)
        self._show_pending()
