"""The baseline workflow: waits for one `approve` Update within an SLA; no validator, activity or audit."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

BARE_WORKFLOW = "bench_bare_approval"
SLA = timedelta(hours=24)


@workflow.defn(name=BARE_WORKFLOW)
class BareApproval:
    def __init__(self) -> None:
        self._approved_by: str | None = None

    @workflow.run
    async def run(self, params: dict[str, str]) -> str:
        # The same wait as Blocks' approval step: an Update, or the 24 h SLA timer, whichever first.
        await workflow.wait_condition(lambda: self._approved_by is not None, timeout=SLA)
        return f"approved by {self._approved_by}"

    @workflow.update
    async def approve(self, approver: str) -> str:
        self._approved_by = approver
        return "approved"

    @workflow.query
    def waiting(self) -> bool:
        return self._approved_by is None
