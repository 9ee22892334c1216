"""Example workflow: an expense waits for one approver's decision, within an SLA."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from blocks.workflows.sdk import (
    ApprovalPolicy,
    BlocksWorkflow,
    RunInput,
    RunOutcome,
    StepState,
)

with workflow.unsafe.imports_passed_through():
    from blocks_examples.models import ExpenseRequest


@workflow.defn(name="expense_approval")
class ExpenseApproval(BlocksWorkflow):
    """An expense waits for one approver's decision within an SLA."""

    INPUT = ExpenseRequest

    @workflow.run
    async def run(self, run_input: RunInput) -> RunOutcome:
        self.begin(run_input)
        expense = self.parse_input(ExpenseRequest)
        step = await self.request_approval(
            "approve",
            title=f"Expense of {expense.amount} {expense.currency}: {expense.description}",
            policy=ApprovalPolicy.any_of(roles=["approver"]),
            sla=timedelta(hours=expense.sla_hours),
        )
        if step.state is StepState.APPROVED:
            return await self.finish("approved", approved_by=step.deciders[-1])
        if step.state is StepState.REJECTED:
            return await self.finish("rejected", rejected_by=step.deciders[-1])
        return await self.finish("expired")
