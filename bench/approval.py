"""Approval round trip: Blocks through its HTTP API versus a bare workflow on the same server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any, TypeVar

import httpx
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from bench.bare import BareApproval
from bench.cpu import CpuProbe, CpuUse
from bench.stats import Latency, in_flight
from blocks.core.approvals.eligibility import Decision, DecisionRequest, DecisionResult
from blocks.infra.temporal.client import describe_execution
from blocks.models.approvals.runs import workflow_id_for
from blocks.workflows.sdk import DECIDE_UPDATE
from blocks.workflows.types import RunOutcome
from tests.support import EXPENSE, Org, Stack

_READY_WITHIN = 60.0
_POLL = 0.02

H = TypeVar("H")


class BenchError(RuntimeError):
    """A request or run did not behave as the benchmark expects; the numbers would be void."""


@dataclass(frozen=True)
class RoundTrip:
    """One side of the comparison: a start phase (context only) and the measured decide phase."""

    side: str
    runs: int
    concurrency: int
    start_seconds: float
    decide_seconds: float
    start_samples: list[float]
    ack_samples: list[float]  # decision sent -> acknowledged (HTTP 200 / Update result)
    done_samples: list[float]  # decision sent -> workflow completed (the measured number)
    start_cpu: CpuUse
    decide_cpu: CpuUse

    @property
    def start_rps(self) -> float:
        return self.runs / self.start_seconds

    @property
    def rps(self) -> float:
        return self.runs / self.decide_seconds

    @property
    def latency(self) -> Latency:
        return Latency.of(self.done_samples)

    def __add__(self, other: RoundTrip) -> RoundTrip:
        """Two segments of the same side as one: runs and times add up, samples pool."""
        if (self.side, self.concurrency) != (other.side, other.concurrency):
            raise ValueError("only segments of one side and concurrency add up")
        return RoundTrip(
            side=self.side,
            runs=self.runs + other.runs,
            concurrency=self.concurrency,
            start_seconds=self.start_seconds + other.start_seconds,
            decide_seconds=self.decide_seconds + other.decide_seconds,
            start_samples=self.start_samples + other.start_samples,
            ack_samples=self.ack_samples + other.ack_samples,
            done_samples=self.done_samples + other.done_samples,
            start_cpu=self.start_cpu + other.start_cpu,
            decide_cpu=self.decide_cpu + other.decide_cpu,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "runs": self.runs,
            "concurrency": self.concurrency,
            "start_seconds": round(self.start_seconds, 3),
            "start_rps": round(self.start_rps, 2),
            "start_latency_ms": Latency.of(self.start_samples).as_dict(),
            "start_cpu": self.start_cpu.as_dict(self.runs),
            "decide_seconds": round(self.decide_seconds, 3),
            "rps": round(self.rps, 2),
            "approve_ack_ms": Latency.of(self.ack_samples).as_dict(),
            "approve_to_completion_ms": self.latency.as_dict(),
            "decide_cpu": self.decide_cpu.as_dict(self.runs),
        }


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + _READY_WITHIN
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise BenchError(f"{what} did not happen within {_READY_WITHIN:.0f}s")
        await asyncio.sleep(_POLL)


async def _round(
    side: str,
    *,
    runs: int,
    concurrency: int,
    settle: float,
    probe: CpuProbe,
    start: Callable[[int], Awaitable[H]],
    ready: Callable[[H], Awaitable[bool]],
    decide: Callable[[H], Awaitable[None]],
    complete: Callable[[H], Awaitable[None]],
) -> RoundTrip:
    """Start every run, wait until all are parked on their decision, then decide them all.

    Only the decide phase is the measured comparison; the start phase is reported as context.
    """
    start_times: list[float] = []

    async def timed_start(index: int) -> H:
        began = perf_counter()
        handle = await start(index)
        start_times.append(perf_counter() - began)
        return handle

    with probe.measure() as start_cpu:
        handles = await in_flight(range(runs), concurrency, timed_start)
    start_seconds = start_cpu.wall

    async def parked(handle: H) -> None:
        await _until(lambda: ready(handle), f"{side} run {handle} waiting for its decision")

    await in_flight(handles, concurrency, parked)
    await asyncio.sleep(settle)

    async def round_trip(handle: H) -> tuple[float, float]:
        sent = perf_counter()
        await decide(handle)
        acked = perf_counter()
        await complete(handle)
        return acked - sent, perf_counter() - sent

    with probe.measure() as decide_cpu:
        timings = await in_flight(handles, concurrency, round_trip)
    return RoundTrip(
        side=side,
        runs=runs,
        concurrency=concurrency,
        start_seconds=start_seconds,
        decide_seconds=decide_cpu.wall,
        start_samples=start_times,
        ack_samples=[a for a, _ in timings],
        done_samples=[d for _, d in timings],
        start_cpu=start_cpu,
        decide_cpu=decide_cpu,
    )


async def blocks_round(
    stack: Stack,
    http: httpx.AsyncClient,
    org: Org,
    *,
    runs: int,
    concurrency: int,
    settle: float,
    probe: CpuProbe,
    via_api: bool = True,
) -> RoundTrip:
    """Start expense approvals through the API, then approve each through the API.

    With `via_api=False` the decision skips the HTTP API and goes straight to the workflow as
    the same `blocks.decide` Update the API would send: a diagnostic that splits the overhead
    between the API layer and the workflow (validator, audit activity, search attributes).
    """
    client = stack.temporal
    approver = org["approver"]

    async def start(_: int) -> str:
        response = await http.post(
            "/v1/runs",
            json={"workflow": "expense_approval", "input": EXPENSE},
            headers=org["operator"].headers,
        )
        if response.status_code != 201:
            raise BenchError(f"start: {response.status_code} {response.text}")
        return str(response.json()["id"])

    async def ready(run_id: str) -> bool:
        # The stage attribute is upserted by the workflow task that also wrote the step.opened
        # audit event, so once it reads awaiting_approval the run is parked in wait_condition.
        state = await describe_execution(client, workflow_id_for(uuid.UUID(run_id)))
        return state.stage == "awaiting_approval"

    async def decide_via_api(run_id: str) -> None:
        response = await http.post(
            f"/v1/runs/{run_id}/steps/approve/decisions",
            json={"decision": "approve"},
            headers=approver.headers,
        )
        if response.status_code != 200:
            raise BenchError(f"decide: {response.status_code} {response.text}")

    async def decide_direct(run_id: str) -> None:
        handle = client.get_workflow_handle(workflow_id_for(uuid.UUID(run_id)))
        request = DecisionRequest(
            step_id="approve",
            actor_user_id=str(approver.user_id),
            actor_roles=("approver",),
            decision=Decision.APPROVE,
            channel="api",
        )
        await handle.execute_update(
            DECIDE_UPDATE,
            request,
            id=f"decide:approve:{approver.user_id}",
            result_type=DecisionResult,
        )

    async def complete(run_id: str) -> None:
        handle: WorkflowHandle[Any, RunOutcome] = client.get_workflow_handle(
            workflow_id_for(uuid.UUID(run_id)), result_type=RunOutcome
        )
        outcome = await handle.result()
        if outcome.status != "approved":
            raise BenchError(f"run {run_id} finished {outcome.status}")

    return await _round(
        "blocks" if via_api else "blocks_direct_update",
        runs=runs,
        concurrency=concurrency,
        settle=settle,
        probe=probe,
        start=start,
        ready=ready,
        decide=decide_via_api if via_api else decide_direct,
        complete=complete,
    )


async def bare_round(
    client: Client,
    task_queue: str,
    *,
    runs: int,
    concurrency: int,
    settle: float,
    probe: CpuProbe,
) -> RoundTrip:
    """Start bare workflows with the client, then send each its `approve` Update."""

    async def start(_: int) -> WorkflowHandle[BareApproval, str]:
        return await client.start_workflow(
            BareApproval.run, dict(EXPENSE), id=f"bare-{uuid.uuid4()}", task_queue=task_queue
        )

    async def ready(handle: WorkflowHandle[BareApproval, str]) -> bool:
        # A query is answered after the first workflow task, i.e. once run() is parked.
        return await handle.query(BareApproval.waiting)

    async def decide(handle: WorkflowHandle[BareApproval, str]) -> None:
        answer = await handle.execute_update(BareApproval.approve, "approver")
        if answer != "approved":
            raise BenchError(f"update answered {answer!r}")

    async def complete(handle: WorkflowHandle[BareApproval, str]) -> None:
        await handle.result()

    return await _round(
        "bare",
        runs=runs,
        concurrency=concurrency,
        settle=settle,
        probe=probe,
        start=start,
        ready=ready,
        decide=decide,
        complete=complete,
    )


def bare_worker(client: Client, task_queue: str) -> Worker:
    """Configured like `blocks.workers.main.build_worker`: SDK defaults, sandboxed workflows."""
    return Worker(client, task_queue=task_queue, workflows=[BareApproval])
