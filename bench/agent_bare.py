"""The agent relay benchmark's baseline workflows: the same sum as one plain activity in the worker
process; and a workflow whose activity waits to be completed by its task token (for timing
Temporal's async-completion RPC alone). No Blocks SDK, audit or codec."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

BARE_AGENT_WORKFLOW = "bench_bare_agent_sum"
BARE_SUM_ACTIVITY = "bench.bare_sum"
WAIT_WORKFLOW = "bench_bare_wait"
WAIT_ACTIVITY = "bench.bare_wait"
# As Blocks' agent step: one hour in all, retried with the same backoff.
_TIMEOUT = timedelta(hours=1)
_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)


@workflow.defn(name=BARE_AGENT_WORKFLOW)
class BareAgentSum:
    """Calls the sum activity once (by name: the activity stays out of the sandbox)."""

    @workflow.run
    async def run(self, params: dict[str, Any]) -> dict[str, Any]:
        output: dict[str, Any] = await workflow.execute_activity(
            BARE_SUM_ACTIVITY,
            params,
            start_to_close_timeout=_TIMEOUT,
            retry_policy=_RETRY,
            result_type=dict,
        )
        return {"status": "done", **output}


@workflow.defn(name=WAIT_WORKFLOW)
class BareWait:
    """One activity completed from outside by its task token, as the relay completes Blocks'."""

    @workflow.run
    async def run(self, params: dict[str, Any]) -> dict[str, Any]:
        output: dict[str, Any] = await workflow.execute_activity(
            WAIT_ACTIVITY, params, start_to_close_timeout=_TIMEOUT, result_type=dict
        )
        return output
