"""The three engines as the driver uses them: start a run, see it parked, decide it, await its end.

Blocks and DBOS are driven over HTTP (each behind its own web app); bare Temporal through the
client, as its users drive it. Every call checks its answer: a wrong one voids the numbers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from temporalio.client import Client, WorkflowHandle

from bench.deployed.bare_workflow import APPROVE_UPDATE, APPROVED, BARE_WORKFLOW, WAITING_QUERY
from bench.deployed.servers import BARE_WORKER, BLOCKS_API, BLOCKS_WORKER, DBOS_APP
from blocks.models.approvals.runs import workflow_id_for
from blocks.workflows.types import RunOutcome
from tests.support import EXPENSE, Org

BLOCKS, BARE, DBOS = "blocks", "bare", "dbos"
LABELS = {BLOCKS: "Blocks", BARE: "bare Temporal", DBOS: "DBOS"}


class BenchError(RuntimeError):
    """A request or run did not behave as the benchmark expects; the numbers would be void."""


class Engine(Protocol):
    """One side of the comparison; `processes` are the probe names of its own processes, and
    `retried` counts, by status, the requests it sent again after a 5xx answer."""

    name: str
    processes: tuple[str, ...]
    retried: Counter[int]

    async def start(self, index: int) -> str: ...

    async def parked(self, run: str) -> bool: ...

    async def decide(self, run: str) -> None: ...

    async def result(self, run: str) -> None: ...


RETRY_AFTER = 0.2  # seconds before sending a request again that got a 5xx
MAX_ATTEMPTS = 20


def _expect(response: httpx.Response, status: int | set[int], what: str) -> Any:
    if response.status_code not in (status if isinstance(status, set) else {status}):
        raise BenchError(f"{what}: HTTP {response.status_code} {response.text[:300]}")
    return response.json()


@dataclass
class BlocksEngine:
    """`POST /v1/runs` as the operator, `POST .../steps/approve/decisions` as the approver; the
    end is read with the Temporal client's `handle.result()` (Blocks' data converter), a long
    poll like the bare side's, so no polling interval lands in the latency."""

    http: httpx.AsyncClient
    org: Org
    temporal: Client
    name: str = BLOCKS
    processes: tuple[str, ...] = (BLOCKS_API, BLOCKS_WORKER)
    retried: Counter[int] = field(default_factory=Counter)

    async def _send(
        self, what: str, status: set[int], request: httpx.Request, *, once_retried: set[int]
    ) -> Any:
        """Send, and again after a 5xx as a client would (safe here: a start with the same
        Idempotency-Key is the same run, a decision the same Update, whose id dedupes).
        `once_retried` are further answers that mean success after a retry."""
        accepted = status
        for _ in range(MAX_ATTEMPTS - 1):
            response = await self.http.send(request)
            if response.status_code < 500:
                return _expect(response, accepted, what)
            self.retried[response.status_code] += 1
            accepted = status | once_retried
            await asyncio.sleep(RETRY_AFTER)
        return _expect(await self.http.send(request), accepted, what)

    async def start(self, index: int) -> str:
        request = self.http.build_request(
            "POST",
            "/v1/runs",
            json={"workflow": "expense_approval", "input": EXPENSE},
            headers={**self.org["operator"].headers, "Idempotency-Key": str(uuid.uuid4())},
        )
        # 201 for a new run; 200 when a retry meets the run its first attempt created.
        return str((await self._send("start", {201}, request, once_retried={200}))["id"])

    async def parked(self, run: str) -> bool:
        response = await self.http.get(f"/v1/runs/{run}", headers=self.org["operator"].headers)
        if response.status_code >= 500:  # the engine slow to answer: look again (untimed)
            return False
        body = _expect(response, 200, "read run")
        return bool(body["status"] == "running" and body["stage"] == "awaiting_approval")

    async def decide(self, run: str) -> None:
        request = self.http.build_request(
            "POST",
            f"/v1/runs/{run}/steps/approve/decisions",
            json={"decision": "approve"},
            headers=self.org["approver"].headers,
        )
        # After a 5xx the first attempt may have decided, and the run ended: 409 step closed.
        await self._send("decide", {200}, request, once_retried={409})

    async def result(self, run: str) -> None:
        handle: WorkflowHandle[Any, RunOutcome] = self.temporal.get_workflow_handle(
            workflow_id_for(uuid.UUID(run)), result_type=RunOutcome
        )
        outcome = await handle.result()
        if outcome.status != "approved":
            raise BenchError(f"Blocks run {run} finished {outcome.status}")


@dataclass
class BareEngine:
    """`client.start_workflow`, a query to see it parked, `execute_update`, `handle.result()`;
    the SDK's default data converter."""

    temporal: Client
    task_queue: str
    name: str = BARE
    processes: tuple[str, ...] = (BARE_WORKER,)
    retried: Counter[int] = field(default_factory=Counter)  # the SDK retries its own RPCs

    def _handle(self, run: str) -> WorkflowHandle[Any, str]:
        return self.temporal.get_workflow_handle(run, result_type=str)

    async def start(self, index: int) -> str:
        handle = await self.temporal.start_workflow(
            BARE_WORKFLOW, dict(EXPENSE), id=f"bare-{uuid.uuid4()}", task_queue=self.task_queue
        )
        return handle.id

    async def parked(self, run: str) -> bool:
        return bool(await self._handle(run).query(WAITING_QUERY, result_type=bool))

    async def decide(self, run: str) -> None:
        answer = await self._handle(run).execute_update(APPROVE_UPDATE, "approver", result_type=str)
        if answer != APPROVED:
            raise BenchError(f"bare update answered {answer!r}")

    async def result(self, run: str) -> None:
        result = await self._handle(run).result()
        if not str(result).startswith(APPROVED):
            raise BenchError(f"bare run {run} finished {result!r}")


@dataclass
class DbosEngine:
    """The DBOS app's own HTTP API (bench/deployed/dbos_app.py); its result endpoint awaits the
    workflow in the app, a long poll like the others'."""

    http: httpx.AsyncClient
    name: str = DBOS
    processes: tuple[str, ...] = (DBOS_APP,)
    retried: Counter[int] = field(default_factory=Counter)

    async def start(self, index: int) -> str:
        response = await self.http.post("/runs", json={"input": EXPENSE})
        return str(_expect(response, 201, "start")["id"])

    async def parked(self, run: str) -> bool:
        return bool(_expect(await self.http.get(f"/runs/{run}"), 200, "read run")["parked"])

    async def decide(self, run: str) -> None:
        response = await self.http.post(f"/runs/{run}/decisions", json={"decision": "approve"})
        _expect(response, 200, "decide")

    async def result(self, run: str) -> None:
        body = _expect(await self.http.get(f"/runs/{run}/result"), 200, "result")
        if body["result"] != "approved":
            raise BenchError(f"DBOS run {run} finished {body['result']!r}")
