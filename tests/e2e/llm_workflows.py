"""The LLM tests' own workflow: a run that asks a model once (`self.llm`) and finishes with the
tokens it used (tests/e2e/test_llm_step.py). Only what a workflow needs is imported here: the
sandbox imports this module again for every run."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict
from temporalio import workflow

from blocks.workflows.sdk import BlocksWorkflow, RunInput, RunOutcome


class DraftRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str
    model: str = "gpt-test"
    credential: str = "default"
    api: Literal["chat", "responses"] | None = None
    timeout_seconds: float = 30.0
    max_attempts: int = 5
    step: str = "draft"


@workflow.defn(name="tests_llm_draft")
class LlmDraft(BlocksWorkflow):
    """Asks the model for a draft once, then finishes with the tokens it used (not the text)."""

    INPUT = DraftRequest

    @workflow.run
    async def run(self, run_input: RunInput) -> RunOutcome:
        self.begin(run_input)
        request = self.parse_input(DraftRequest)
        reply = await self.llm(
            request.prompt,
            system="Answer in one line.",
            credential=request.credential,
            model=request.model,
            api=request.api,
            timeout=timedelta(seconds=request.timeout_seconds),
            max_attempts=request.max_attempts,
            step=request.step,
        )
        return await self.finish(
            "drafted", output_tokens=reply.output_tokens, finish_reason=reply.finish_reason
        )
