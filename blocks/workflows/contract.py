"""Example workflow: legal and security review a contract in parallel; both must approve."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field
from temporalio import workflow

from blocks.core.approvals.eligibility import StepState
from blocks.core.approvals.policy import ApprovalPolicy
from blocks.workflows.sdk import BlocksWorkflow
from blocks.workflows.types import RunInput, RunOutcome


class ContractRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    counterparty: str = Field(min_length=1, max_length=200)
    legal: list[str] = Field(min_length=1, max_length=50)
    security: list[str] = Field(min_length=1, max_length=50)
    sla_hours: float = Field(default=72.0, gt=0, le=24 * 90)


@workflow.defn(name="contract_review")
class ContractReview(BlocksWorkflow):
    @workflow.run
    async def run(self, run_input: RunInput) -> RunOutcome:
        self.begin(run_input)
        request = ContractRequest.model_validate(run_input.params)
        sla = timedelta(hours=request.sla_hours)
        legal, security = await asyncio.gather(
            self.request_approval(
                "legal",
                title=f"Legal review: {request.counterparty}",
                policy=ApprovalPolicy.any_of(users=request.legal),
                sla=sla,
            ),
            self.request_approval(
                "security",
                title=f"Security review: {request.counterparty}",
                policy=ApprovalPolicy.any_of(users=request.security),
                sla=sla,
            ),
        )
        states = {"legal": legal.state.value, "security": security.state.value}
        if legal.state is StepState.APPROVED and security.state is StepState.APPROVED:
            return await self.finish("approved", **states)
        return await self.finish("not_approved", **states)
