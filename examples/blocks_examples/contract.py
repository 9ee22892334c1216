"""Example workflow: legal and security review a contract in parallel; both must approve."""

from __future__ import annotations

import asyncio
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
    from blocks_examples.models import ContractRequest


@workflow.defn(name="contract_review")
class ContractReview(BlocksWorkflow):
    """Legal and security review a contract in parallel; both must approve."""

    INPUT = ContractRequest

    @workflow.run
    async def run(self, run_input: RunInput) -> RunOutcome:
        self.begin(run_input)
        request = self.parse_input(ContractRequest)
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
