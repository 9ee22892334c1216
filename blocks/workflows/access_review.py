"""The built-in `access_review` workflow, and the system workflow an organization's schedule starts it by.

A review is a Blocks run like an author's: it lists what can act for the organization (an
activity), opens one approval step per item for the reviewers the organization names, with an
SLA and escalation to the owners like any step (the SDK's own `request_approval`: decisions come
through the same API, inbox, console, Slack and email paths). Approving keeps an item; rejecting
revokes it at once (an activity, audited). A step that expires changes nothing and says so. At
the end the report is kept and its SHA-256 written to the audit log (`access_review.report`),
and the chain's head, with that event in it, is signed at once with the worker's checkpoint key.

The quarterly Temporal Schedule of an organization starts `blocks.access_review_scheduled`,
which opens the review's run (an activity: the run's row, so the review is `run-<id>` like any
run, sealed under the organization's key) and starts the review as a child it does not wait for.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints
from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.workflow import ParentClosePolicy

from blocks.core.approvals import search_attributes as sa
from blocks.core.approvals.eligibility import Escalation, StepState
from blocks.core.approvals.policy import ApprovalPolicy, ApproverGroup
from blocks.core.identity.access_review import (
    SCHEDULED_WORKFLOW_NAME,
    WORKFLOW_NAME,
    Inventory,
    Report,
    ReportRequest,
    ReportRow,
    ReviewItem,
    ReviewStart,
    RevocationRequest,
    RevocationResult,
    ScheduledReviewRequest,
    Trigger,
    report_row,
    step_context,
    step_title,
    summary,
)
from blocks.workflows.sdk import BlocksWorkflow
from blocks.workflows.types import RunInput, RunOutcome

with workflow.unsafe.imports_passed_through():
    from blocks.activities.access_review import AccessReviewActivities
    from blocks.activities.checkpoints import CheckpointActivities

_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=1))
_SHORT = timedelta(minutes=2)
# The owners are told and added this share of the SLA before an item's deadline.
_ESCALATE_AT = 0.25

ReviewerId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class AccessReviewParams(BaseModel):
    """Who reviews, and within what time (from the organization's settings)."""

    reviewers: list[ReviewerId] = Field(default_factory=list, max_length=50)
    reviewer_group: str | None = Field(default=None, max_length=100)
    reviewer_roles: list[str] = Field(default_factory=list, max_length=5)
    sla_hours: int = Field(default=336, ge=1, le=2160)
    trigger: Trigger = Trigger.MANUAL
    started_by: str | None = None


def reviewer_policy(params: AccessReviewParams) -> ApprovalPolicy:
    """Any one of the named reviewers, the group's members or the roles; the owners if none."""
    roles = tuple(params.reviewer_roles)
    groups = (params.reviewer_group,) if params.reviewer_group else ()
    if not params.reviewers and not roles and not groups:
        roles = ("owner",)
    return ApprovalPolicy(
        (ApproverGroup("reviewers", tuple(params.reviewers), roles, 1, member_groups=groups),)
    )


@workflow.defn(name=WORKFLOW_NAME)
class AccessReviewWorkflow(BlocksWorkflow):
    """A periodic access review: keep or revoke each admin, key, integration and connection."""

    INPUT = AccessReviewParams
    # Each item is reviewed on its own: one reviewer may keep many (rejections were never limited).
    INDEPENDENT_STEPS = True

    def __init__(self) -> None:
        super().__init__()
        self._rows: dict[str, ReportRow] = {}  # by step id, as each item closes

    @workflow.run
    async def run(self, run_input: RunInput) -> RunOutcome:
        self.begin(run_input)
        params = self.parse_input(AccessReviewParams)
        started_at = workflow.now()
        sla = timedelta(hours=params.sla_hours)
        policy = reviewer_policy(params)
        escalation = Escalation(before=sla * _ESCALATE_AT, roles=("owner",))
        inventory = Inventory(items=(), admin_count=0)
        status = "completed"
        try:
            inventory = await workflow.execute_activity_method(
                AccessReviewActivities.list_items,
                run_input.org_id,
                start_to_close_timeout=_SHORT,
                retry_policy=_RETRY,
            )
            await asyncio.gather(
                *(self._review(item, policy, sla, escalation) for item in inventory.items)
            )
        except asyncio.CancelledError:
            if workflow.cancellation_reason() is None:
                raise
            status = "cancelled"  # the report says what was decided before; then it re-raises
        rows = [
            self._rows.get(item.step_id)
            or report_row(
                item, step_state="cancelled", decided_by=None, decided_at=None, result=None
            )
            for item in inventory.items
        ]
        report = Report(
            run_id=run_input.run_id,
            org_id=run_input.org_id,
            trigger=params.trigger.value,
            started_at=started_at.isoformat(),
            finished_at=workflow.now().isoformat(),
            admin_count=inventory.admin_count,
            omitted=inventory.omitted,
            warnings=inventory.warnings,
            rows=tuple(rows),
            status=status,
        )
        sha256: str = await workflow.execute_activity_method(
            AccessReviewActivities.record_report,
            ReportRequest(org_id=run_input.org_id, report=report),
            start_to_close_timeout=_SHORT,
            retry_policy=_RETRY,
        )
        # Signed now rather than at the next scheduled checkpoint: the worker's Ed25519 key signs
        # the chain's head, which the report's event is in.
        checkpoint_id: str = await workflow.execute_activity_method(
            CheckpointActivities.checkpoint_org,
            run_input.org_id,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=_RETRY,
        )
        if status == "cancelled":
            raise asyncio.CancelledError  # the run ends cancelled (blocks.workflows.cancellation)
        counts = summary(report)
        return await self.finish(
            "completed",
            report_sha256=sha256,
            checkpoint_id=checkpoint_id,
            items=counts["items"],
            revoked=counts["revoked"],
            kept=counts["kept"],
            no_decision=counts["no_decision"],
        )

    async def _review(
        self,
        item: ReviewItem,
        policy: ApprovalPolicy,
        sla: timedelta,
        escalation: Escalation,
    ) -> None:
        step = await self.request_approval(
            item.step_id,
            title=step_title(item),
            policy=policy,
            sla=sla,
            escalation=escalation,
            context=step_context(item),
        )
        last = step.votes[-1] if step.votes else None
        result: RevocationResult | None = None
        if step.state is StepState.REJECTED:
            result = await workflow.execute_activity_method(
                AccessReviewActivities.revoke,
                RevocationRequest(
                    org_id=self.run_input.org_id,
                    run_id=self.run_input.run_id,
                    item=item,
                    decided_by=last.user_id if last else None,
                ),
                start_to_close_timeout=_SHORT,
                retry_policy=_RETRY,
            )
        self._rows[item.step_id] = report_row(
            item,
            step_state=step.state.value,
            decided_by=last.user_id if last else None,
            decided_at=last.at.isoformat() if last else None,
            result=result,
        )


@workflow.defn(name=SCHEDULED_WORKFLOW_NAME)
class ScheduledAccessReviewWorkflow:
    """Started by an organization's quarterly schedule: opens the review's run and starts it."""

    @workflow.run
    async def run(self, request: ScheduledReviewRequest) -> str | None:
        """Returns the review's run id (None: the schedule was turned off meanwhile)."""
        start: ReviewStart | None = await workflow.execute_activity_method(
            AccessReviewActivities.open_scheduled,
            args=[request.org_id, workflow.info().workflow_id],
            start_to_close_timeout=_SHORT,
            retry_policy=_RETRY,
        )
        if start is None:
            return None
        run_input = RunInput(
            org_id=request.org_id,
            run_id=start.run_id,
            workflow_name=WORKFLOW_NAME,
            requested_by=None,
            params=start.params,
        )
        await workflow.start_child_workflow(
            WORKFLOW_NAME,
            run_input,
            id=f"run-{start.run_id}",
            task_queue=workflow.info().task_queue,
            parent_close_policy=ParentClosePolicy.ABANDON,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=sa.at_start(request.org_id, WORKFLOW_NAME, None),
        )
        await workflow.execute_activity_method(
            AccessReviewActivities.settle_started,
            args=[request.org_id, start.run_id],
            start_to_close_timeout=_SHORT,
            retry_policy=_RETRY,
        )
        return start.run_id
