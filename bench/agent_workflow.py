"""The agent relay benchmark's Blocks workflow: one `self.agent(...)` step, then finish with the
agent's output. Only what a workflow needs is imported here: the sandbox imports this module again
for every run."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from temporalio import workflow

from blocks.workflows.sdk import BlocksWorkflow, RunInput, RunOutcome

BLOCKS_AGENT_WORKFLOW = "bench_agent_sum"
SKILL = "echo-sum"


class SumRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str
    numbers: list[int]


@workflow.defn(name=BLOCKS_AGENT_WORKFLOW)
class BenchAgentSum(BlocksWorkflow):
    """Asks the remote agent for the sum of some numbers; finishes with its answer."""

    INPUT = SumRequest

    @workflow.run
    async def run(self, run_input: RunInput) -> RunOutcome:
        self.begin(run_input)
        request = self.parse_input(SumRequest)
        output = await self.agent(request.agent, SKILL, {"numbers": request.numbers}, step="sum")
        return await self.finish("done", **output)
