"""A test workflow whose named reviewers are asked late, with an escalation to a backup: what a step
does when the people it names stopped counting before it opened (tests/e2e/test_named_approvers)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict
from temporalio import workflow

from blocks.workflows.sdk import (
    ApprovalPolicy,
    BlocksWorkflow,
    Escalation,
    MemberId,
    RunInput,
    RunOutcome,
    StepState,
    approver_field,
)


class LateReviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reviewers: list[MemberId] = approver_field(min_length=1, max_length=5)
    backup: MemberId


@workflow.defn(name="tests_late_review")
class LateReview(BlocksWorkflow):
    """Any approver takes a first look; then all the named reviewers, escalating to the backup
    4 h before a 24 h deadline."""

    INPUT = LateReviewRequest

    @workflow.run
    async def run(self, run_input: RunInput) -> RunOutcome:
        self.begin(run_input)
        request = self.parse_input(LateReviewRequest)
        first = await self.request_approval(
            "first", title="First look", policy=ApprovalPolicy.any_of(roles=["approver"])
        )
        if first.state is not StepState.APPROVED:
            return await self.finish(first.state.value, step="first")
        review = await self.request_approval(
            "review",
            title="Review",
            policy=ApprovalPolicy.all_of(request.reviewers),
            sla=timedelta(hours=24),
            escalation=Escalation(before=timedelta(hours=4), users=(request.backup,)),
        )
        return await self.finish(review.state.value, deciders=review.deciders)
