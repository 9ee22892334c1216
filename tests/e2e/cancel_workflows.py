"""A test workflow that does an author's own work before its approval step: an activity that waits
at a gate the test holds, or a timer. A cancellation of the run then lands while no step waits
(tests/e2e/test_run_cancel)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from temporalio import activity, workflow

from blocks.workflows.sdk import ApprovalPolicy, BlocksWorkflow, RunInput, RunOutcome

GATE_ACTIVITY = "tests.wait_at_gate"
# The activity heartbeats well within its heartbeat timeout, which is how a cancel reaches it.
_BEAT_SECONDS = 0.2
_HEARTBEAT_TIMEOUT = timedelta(seconds=2)


class GatedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    item: str = Field(min_length=1, max_length=200)
    hold: Literal["activity", "timer"] = "activity"


class Gate:
    """The test's hold on the activity: `entered` once it runs, `cancelled` once a cancel
    reached it; it returns only when `opened` is set."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()
        self.cancelled = asyncio.Event()

    @activity.defn(name=GATE_ACTIVITY)
    async def wait(self, item: str) -> str:
        self.entered.set()
        try:
            while not self.opened.is_set():
                activity.heartbeat()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.opened.wait(), timeout=_BEAT_SECONDS)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return f"passed:{item}"


@workflow.defn(name="tests_gated_purchase")
class GatedPurchase(BlocksWorkflow):
    """The author's own check (an activity, or a day's wait) before an approver decides."""

    INPUT = GatedRequest

    @workflow.run
    async def run(self, run_input: RunInput) -> RunOutcome:
        self.begin(run_input)
        request = self.parse_input(GatedRequest)
        if request.hold == "activity":
            await workflow.execute_activity(
                GATE_ACTIVITY,
                request.item,
                result_type=str,
                start_to_close_timeout=timedelta(minutes=10),
                heartbeat_timeout=_HEARTBEAT_TIMEOUT,
            )
        else:
            await workflow.sleep(timedelta(days=1))
        step = await self.request_approval(
            "approve", title=f"Buy {request.item}", policy=ApprovalPolicy.any_of(roles=["approver"])
        )
        return await self.finish(step.state.value)
