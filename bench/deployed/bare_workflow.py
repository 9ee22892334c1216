"""The bare Temporal workflow: an `approve` Update awaited under a 24 h timer, then one activity."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow

BARE_WORKFLOW = "bench_deployed_bare_approval"
APPROVE_UPDATE = "approve"
WAITING_QUERY = "waiting"
SLA = timedelta(hours=24)
APPROVED = "approved"


@activity.defn(name="bench_deployed_one_step")
async def one_step(approver: str) -> str:
    """The run's one step after the decision."""
    return f"{APPROVED} by {approver}"


@workflow.defn(name=BARE_WORKFLOW)
class BareApproval:
    """Waits for an `approve` Update within a 24 h durable timer, runs one activity, completes."""

    def __init__(self) -> None:
        self._approved_by: str | None = None

    @workflow.run
    async def run(self, params: dict[str, str]) -> str:
        await workflow.wait_condition(lambda: self._approved_by is not None, timeout=SLA)
        return await workflow.execute_activity(
            one_step, self._approved_by, start_to_close_timeout=timedelta(seconds=60)
        )

    @workflow.update(name=APPROVE_UPDATE)
    async def approve(self, approver: str) -> str:
        self._approved_by = approver
        return APPROVED

    @workflow.query(name=WAITING_QUERY)
    def waiting(self) -> bool:
        return self._approved_by is None
