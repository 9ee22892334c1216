"""One round of the workload on one engine: start N runs, wait until all are parked, decide all.

Timed: the start phase (each start's latency, starts/s) and the decide phase (each decision's
acknowledgement and the run's end, completions/s). The wait for all runs to park is not timed,
but its CPU is kept: it holds each run's first workflow task (and the bench's polling).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import httpx
from temporalio.service import RPCError

from bench.deployed.engines import BenchError, Engine
from bench.deployed.probes import ProcessProbe, cpu_delta
from bench.deployed.summary import percentiles
from bench.stats import in_flight

PARK_WITHIN = 180.0  # seconds for every run of a round to reach its wait
PARK_POLL = 0.25  # per run; the Blocks poll is a GET that queries the worker
SETTLE = 0.5  # pause before a round and between all parked and the first decision


@dataclass(frozen=True)
class Round:
    """What one round of one engine measured (latencies in ms, CPU in seconds per process)."""

    engine: str
    runs: int
    concurrency: int
    start_seconds: float
    decide_seconds: float
    start_ms: list[float]
    ack_ms: list[float]
    done_ms: list[float]
    start_cpu: dict[str, float]
    park_cpu: dict[str, float]
    decide_cpu: dict[str, float]
    retries: int  # requests sent again after a 5xx, start and decide phases

    def figures(self) -> dict[str, float]:
        """The numbers compared across engines (rates per second, latencies in ms)."""
        start = percentiles(self.start_ms)
        done = percentiles(self.done_ms)
        return {
            "starts_per_s": self.runs / self.start_seconds,
            "start_p50_ms": start["p50"],
            "start_p99_ms": start["p99"],
            "completions_per_s": self.runs / self.decide_seconds,
            "approve_to_result_p50_ms": done["p50"],
            "approve_to_result_p95_ms": done["p95"],
            "approve_to_result_p99_ms": done["p99"],
            "approve_ack_p50_ms": percentiles(self.ack_ms)["p50"],
            "retries": float(self.retries),
        }

    def cpu_ms_per_run(self) -> dict[str, dict[str, float]]:
        return {
            phase: {name: s * 1000 / self.runs for name, s in cpu.items()}
            for phase, cpu in (
                ("start", self.start_cpu),
                ("park", self.park_cpu),
                ("decide", self.decide_cpu),
            )
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "runs": self.runs,
            "concurrency": self.concurrency,
            "start_seconds": round(self.start_seconds, 3),
            "decide_seconds": round(self.decide_seconds, 3),
            "retries": self.retries,
            "figures": {k: round(v, 2) for k, v in self.figures().items()},
            "cpu_ms_per_run": {
                phase: {k: round(v, 2) for k, v in per.items()}
                for phase, per in self.cpu_ms_per_run().items()
            },
            "samples_ms": {
                "start": [round(v, 1) for v in self.start_ms],
                "ack": [round(v, 1) for v in self.ack_ms],
                "approve_to_result": [round(v, 1) for v in self.done_ms],
            },
        }


async def _parked(engine: Engine, run: str) -> None:
    deadline = asyncio.get_running_loop().time() + PARK_WITHIN
    while not await _looks_parked(engine, run):
        if asyncio.get_running_loop().time() > deadline:
            raise BenchError(f"{engine.name} run {run} did not park within {PARK_WITHIN:.0f}s")
        await asyncio.sleep(PARK_POLL)


async def _looks_parked(engine: Engine, run: str) -> bool:
    """One look; a server too busy to answer in time (untimed here) is asked again later."""
    try:
        return await engine.parked(run)
    except (RPCError, httpx.TransportError):
        return False


async def _phase(
    probe: ProcessProbe, work: Callable[[], Awaitable[list[Any]]]
) -> tuple[list[Any], float, dict[str, float]]:
    before = probe.cpu_seconds()
    began = perf_counter()
    results = await work()
    wall = perf_counter() - began
    return results, wall, cpu_delta(before, probe.cpu_seconds())


async def run_round(engine: Engine, runs: int, concurrency: int, probe: ProcessProbe) -> Round:
    """Start `runs` runs, `concurrency` in flight; park them all; decide them all likewise."""
    await asyncio.sleep(SETTLE)  # the previous round's background work drains first
    retries = engine.retried.total()

    async def timed_start(index: int) -> tuple[str, float]:
        began = perf_counter()
        run = await engine.start(index)
        return run, (perf_counter() - began) * 1000

    started, start_seconds, start_cpu = await _phase(
        probe, lambda: in_flight(range(runs), concurrency, timed_start)
    )
    handles = [run for run, _ in started]

    async def park() -> list[None]:
        parked = await in_flight(handles, concurrency, lambda run: _parked(engine, run))
        await asyncio.sleep(SETTLE)
        return parked

    _, _, park_cpu = await _phase(probe, park)

    async def round_trip(run: str) -> tuple[float, float]:
        sent = perf_counter()
        await engine.decide(run)
        acked = perf_counter()
        await engine.result(run)
        return (acked - sent) * 1000, (perf_counter() - sent) * 1000

    timings, decide_seconds, decide_cpu = await _phase(
        probe, lambda: in_flight(handles, concurrency, round_trip)
    )
    return Round(
        engine=engine.name,
        runs=runs,
        concurrency=concurrency,
        start_seconds=start_seconds,
        decide_seconds=decide_seconds,
        start_ms=[ms for _, ms in started],
        ack_ms=[a for a, _ in timings],
        done_ms=[d for _, d in timings],
        start_cpu=start_cpu,
        park_cpu=park_cpu,
        decide_cpu=decide_cpu,
        retries=engine.retried.total() - retries,
    )
