"""The LLM step's baseline workflow: one activity calls the model; no Blocks SDK, audit or codec."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

BARE_LLM_WORKFLOW = "bench_bare_llm"
BARE_LLM_ACTIVITY = "bench.bare_llm_call"
# What Blocks' step gives an attempt (60 s default + 10 s margin) and how often it retries.
_TIMEOUT = timedelta(seconds=70)
_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=5,
)


@workflow.defn(name=BARE_LLM_WORKFLOW)
class BareLlmCall:
    """Calls the model activity once (by name: the activity and openai stay out of the sandbox)."""

    @workflow.run
    async def run(self, params: dict[str, Any]) -> dict[str, Any]:
        reply: dict[str, Any] = await workflow.execute_activity(
            BARE_LLM_ACTIVITY,
            params,
            start_to_close_timeout=_TIMEOUT,
            retry_policy=_RETRY,
            result_type=dict,
        )
        return {"status": "drafted", "output_tokens": reply["output_tokens"]}
