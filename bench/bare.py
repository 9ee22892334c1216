"""The baseline workflow: waits for one `approve` Update; no validator, activity or audit."""

from __future__ import annotations

from temporalio import workflow

BARE_WORKFLOW = "bench_bare_approval"


@workflow.defn(name=BARE_WORKFLOW)
class BareApproval:
    def __init__(self) -> None:
        self._approved_by: str | None = None

    @workflow.run
    async def run(self, params: dict[str, str]) -> str:
        await workflow.wait_condition(lambda: self._approved_by is not None)
        return f"approved by {self._approved_by}"

    @workflow.update
    async def approve(self, approver: str) -> str:
        self._approved_by = approver
        return "approved"

    @workflow.query
    def waiting(self) -> bool:
        return self._approved_by is None
