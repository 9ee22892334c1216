"""The agent tests' own workflow: a run that hands one task to a remote agent (`self.agent`) and
finishes with the agent's output. Only what a workflow needs is imported here: the sandbox imports
this module again for every run."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict
from temporalio import workflow

from blocks.workflows.sdk import ApprovalPolicy, BlocksWorkflow, RunInput, RunOutcome


class AgentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str
    skill: str = "extract-totals"
    lines: list[dict[str, Any]] = []
    heartbeat_seconds: float = 30.0
    timeout_seconds: float = 600.0
    approve_first: bool = False


@workflow.defn(name="tests_agent_totals")
class AgentTotals(BlocksWorkflow):
    """Asks the agent for the totals of some lines; an approver answers its questions."""

    INPUT = AgentRequest

    @workflow.run
    async def run(self, run_input: RunInput) -> RunOutcome:
        self.begin(run_input)
        request = self.parse_input(AgentRequest)
        output = await self.agent(
            request.agent,
            request.skill,
            {"lines": request.lines},
            step="totals",
            heartbeat_timeout=timedelta(seconds=request.heartbeat_seconds),
            timeout=timedelta(seconds=request.timeout_seconds),
            on_input=ApprovalPolicy.any_of(roles=["approver"]),
            approve_first=ApprovalPolicy.any_of(roles=["approver"])
            if request.approve_first
            else None,
        )
        return await self.finish("done", **output)
