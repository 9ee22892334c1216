"""A test workflow whose missed deadline escalates (more approvers, a later deadline) instead of
closing the step (tests/integration/test_pending_steps.py)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from blocks.workflows.sdk import (
    ApprovalPolicy,
    BlocksWorkflow,
    BreachAction,
    OnBreach,
    RunInput,
    RunOutcome,
)


@workflow.defn(name="tests_breach_escalation")
class BreachEscalation(BlocksWorkflow):
    """Any approver within 2 h; then admins too, for 3 h more; then the step expires."""

    @workflow.run
    async def run(self, run_input: RunInput) -> RunOutcome:
        self.begin(run_input)
        step = await self.request_approval(
            "review",
            title="Review",
            policy=ApprovalPolicy.any_of(roles=["approver"]),
            sla=timedelta(hours=2),
            on_breach=OnBreach(BreachAction.ESCALATE, roles=("admin",), extend=timedelta(hours=3)),
        )
        return await self.finish(step.state.value)
