"""Example workflow: an expense waits for one approver's decision, within an SLA."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field
from temporalio import workflow

from blocks.core.approvals.eligibility import StepState
from blocks.core.approvals.policy import ApprovalPolicy
from blocks.workflows.sdk import BlocksWorkflow
from blocks.workflows.types import RunInput, RunOutcome


class ExpenseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    amount: Decimal = Field(gt=0, max_digits=14, decimal_places=2)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    description: str = Field(min_length=1, max_length=500)
    sla_hours: float = Field(default=24.0, gt=0, le=24 * 90)


@workflow.defn(name="expense_approval")
class ExpenseApproval(BlocksWorkflow):
    @workflow.run
    async def run(self, run_input: RunInput) -> RunOutcome:
        self.begin(run_input)
        expense = ExpenseRequest.model_validate(run_input.params)
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
