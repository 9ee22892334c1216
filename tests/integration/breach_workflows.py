"""Test workflows for tests/integration/test_pending_steps.py: a missed deadline that escalates
(more approvers, a later deadline) instead of closing the step, and a run whose own code fails
while a step waits."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

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


@workflow.defn(name="tests_fails_while_a_step_waits")
class FailsWhileAStepWaits(BlocksWorkflow):
    """Opens a review, then, an hour later, its own code fails the run (a refused ledger entry)."""

    @workflow.run
    async def run(self, run_input: RunInput) -> RunOutcome:
        self.begin(run_input)
        review = asyncio.ensure_future(
            self.request_approval(
                "review", title="Review", policy=ApprovalPolicy.any_of(roles=["approver"])
            )
        )
        await workflow.sleep(timedelta(hours=1))
        if not review.done():
            raise ApplicationError(
                "the ledger refused entry 4711", type="ledger_refused", non_retryable=True
            )
        return await self.finish((await review).state.value)
