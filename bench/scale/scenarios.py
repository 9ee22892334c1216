"""Scenario A (one organization: start, park, read, decide all) and B (many organizations)."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.scale.load import (
    Tally,
    add_approvers,
    count_actions,
    decide_run,
    run_ids_with,
    running_listed,
    start_run,
    start_states,
    timed_reads,
    wait_for_counts,
    wait_for_inbox,
)
from bench.scale.servers import ProcessWatch
from bench.stats import Latency, in_flight
from tests.support import Member, Org, make_org

INBOX = "/v1/inbox"
RUNNING = "/v1/runs?status=running"
PAGE = 50  # the default `limit` of both routes
_SETTLE_WITHIN = 120.0


@dataclass(frozen=True)
class Bench:
    """What every scenario works with."""

    http: httpx.AsyncClient
    engine: AsyncEngine
    watch: ProcessWatch
    tally: Tally
    concurrency: int
    requests: int  # sequential requests per read route
    slice: int  # runs per start slice


# How long parking or completing may go without progress before the benchmark gives up on it.
_STALL = 300.0


def slice_rates(done_at: list[float], size: int) -> list[dict[str, Any]]:
    """Starts/s per consecutive `size` starts, from their completion times (seconds from t0)."""
    ordered = sorted(done_at)
    slices = []
    for first in range(0, len(ordered), size):
        last = min(first + size, len(ordered)) - 1
        began = ordered[first - 1] if first else 0.0
        seconds = ordered[last] - began
        slices.append(
            {
                "from": first + 1,
                "to": last + 1,
                "seconds": round(seconds, 2),
                "runs_per_s": round((last - first + 1) / seconds, 1) if seconds > 0 else None,
            }
        )
    return slices


async def _start_batch(
    bench: Bench, jobs: Sequence[tuple[int, Member]]
) -> tuple[list[tuple[int, str, float, float]], float]:
    """Start a run per (org index, operator): (org, run id, began, done) of each that started,
    times in seconds from the first request, and the wall time."""
    t0 = perf_counter()

    async def one(job: tuple[int, Member]) -> tuple[int, str, float, float] | None:
        began = perf_counter() - t0
        run_id = await start_run(bench.http, job[1], bench.tally)
        return None if run_id is None else (job[0], run_id, began, perf_counter() - t0)

    started = await in_flight(jobs, bench.concurrency, one)
    return [s for s in started if s is not None], perf_counter() - t0


async def _reads(bench: Bench, approver: Member, requests: int) -> dict[str, Any]:
    inbox = await timed_reads(bench.http, INBOX, approver, requests, bench.tally)
    running = await timed_reads(bench.http, RUNNING, approver, requests, bench.tally)
    return {"inbox": inbox.as_dict(), "runs_running": running.as_dict()}


async def _decide_all(
    bench: Bench, run_ids: list[str], approvers: list[Member]
) -> tuple[list[tuple[float, float]], int]:
    """Every run approved, `concurrency` lanes each with its own approver: (seconds to the 200
    and when it came, from the first decision sent) of each decision, and how many were refused."""
    acks: list[tuple[float, float]] = []
    refused = 0
    t0 = perf_counter()

    async def lane(ids: list[str], approver: Member) -> None:
        nonlocal refused
        for run_id in ids:
            took = await decide_run(bench.http, run_id, approver, bench.tally)
            if took is None:
                refused += 1
            else:
                acks.append((took, perf_counter() - t0))

    async with asyncio.TaskGroup() as group:
        for index in range(bench.concurrency):
            group.create_task(lane(run_ids[index :: bench.concurrency], approvers[index]))
    return acks, refused


async def scenario_a(bench: Bench, runs: int) -> tuple[dict[str, Any], Org]:
    """`runs` expense approvals in one organization: start, park, read, decide them all."""
    org = await make_org(bench.engine)
    approvers = await add_approvers(bench.engine, org, bench.concurrency)
    operator = org["operator"]
    first_start = perf_counter()
    with bench.watch.phase() as start_phase:
        started, start_wall = await _start_batch(bench, [(0, operator)] * runs)
    # How far the worker got while the starts came in: the rest waits in Temporal's backlog.
    parked_by_end_of_starts = await count_actions(bench.engine, org.id, "step.opened")
    run_ids = [s[1] for s in started]
    await wait_for_counts(bench.engine, [org.id], "step.opened", [len(run_ids)], _STALL)
    all_parked = perf_counter() - first_start
    parked = await run_ids_with(bench.engine, org.id, "step.opened")
    run_ids = [run_id for run_id in run_ids if run_id in parked]
    inbox_settled = await wait_for_inbox(
        bench.http, approvers[0], min(len(run_ids), PAGE), _SETTLE_WITHIN
    )
    bench.watch.alive()
    rss_parked = bench.watch.rss_mb()
    reads = await _reads(bench, approvers[0], bench.requests)

    with bench.watch.phase() as decide_phase:
        began = perf_counter()
        acks, refused = await _decide_all(bench, run_ids, approvers)
        decided_at = perf_counter()
        await wait_for_counts(bench.engine, [org.id], "run.completed", [len(acks)], _STALL)
        completed_at = perf_counter()
    completed = await count_actions(bench.engine, org.id, "run.completed")
    still_listed = await _until_none_running(bench.http, approvers[0])
    decided = len(acks)
    result = {
        "org_id": str(org.id),
        "runs": runs,
        "started": len(started),
        "parked": len(run_ids),
        "start_states": await start_states(bench.engine, org.id),
        "inbox_settled": inbox_settled,
        "start": {
            "runs_per_s": round(len(started) / start_wall, 1),
            "latency_ms": Latency.of([s[3] - s[2] for s in started]).as_dict(),
            "slices": slice_rates([s[3] for s in started], bench.slice),
            **start_phase.as_dict(len(started)),
        },
        # First start sent -> every run's step.opened event written: the worker's pace.
        "all_parked_seconds": round(all_parked, 1),
        "parked_runs_per_s": round(len(run_ids) / all_parked, 1),
        "parked_by_end_of_starts": parked_by_end_of_starts,
        "rss_mb_all_parked": rss_parked,
        "reads": reads,
        "decide": {
            "approvers": len(approvers),
            "decided": decided,
            "refused": refused,
            "decisions_seconds": round(decided_at - began, 2),
            "decisions_per_s": round(decided / (decided_at - began), 1),
            "ack_latency_ms": Latency.of([took for took, _ in acks]).as_dict(),
            "slices": slice_rates([at for _, at in acks], bench.slice),
            "all_completed_seconds": round(completed_at - began, 2),
            "completions_per_s": round(decided / (completed_at - began), 1),
            **decide_phase.as_dict(decided),
        },
        "completed": completed,
        "still_listed_running": still_listed,
        "batch_ok": completed == runs and refused == 0,
    }
    return result, org


async def _until_none_running(http: httpx.AsyncClient, member: Member) -> int:
    """Runs `GET /v1/runs?status=running` still lists once visibility has caught up."""
    deadline = asyncio.get_running_loop().time() + _SETTLE_WITHIN
    while True:
        listed = await running_listed(http, member)
        if not listed or asyncio.get_running_loop().time() > deadline:
            return listed
        await asyncio.sleep(0.5)


async def scenario_b(
    bench: Bench, orgs: int, runs_per_org: int
) -> tuple[dict[str, Any], list[Org]]:
    """`orgs` organizations of `runs_per_org` runs, started interleaved, then read per org."""
    made = [await make_org(bench.engine) for _ in range(orgs)]
    jobs = [(index, org["operator"]) for _ in range(runs_per_org) for index, org in enumerate(made)]
    with bench.watch.phase() as start_phase:
        started, start_wall = await _start_batch(bench, jobs)
    per_org_started = [sum(1 for s in started if s[0] == index) for index in range(orgs)]
    parked = await wait_for_counts(
        bench.engine, [o.id for o in made], "step.opened", per_org_started, _STALL
    )
    for org in made:
        await wait_for_inbox(bench.http, org["approver"], min(runs_per_org, PAGE), _SETTLE_WITHIN)
    bench.watch.alive()
    rss_parked = bench.watch.rss_mb()
    per_org: list[dict[str, Any]] = []
    for index, org in enumerate(made):
        mine = [s for s in started if s[0] == index]
        span = max(s[3] for s in mine) - min(s[2] for s in mine)
        # The first organization gets the full count of reads; the others a few, for the spread.
        requests = bench.requests if index == 0 else max(5, bench.requests // 5)
        per_org.append(
            {
                "org_id": str(org.id),
                "started": len(mine),
                "start_runs_per_s": round(len(mine) / span, 1),
                **await _reads(bench, org["approver"], requests),
            }
        )

    def spread(values: list[float]) -> dict[str, float]:
        return {
            "min": round(min(values), 1),
            "median": round(statistics.median(values), 1),
            "max": round(max(values), 1),
        }

    result = {
        "orgs": orgs,
        "runs_per_org": runs_per_org,
        "started": len(started),
        "parked": parked,
        "start": {
            "runs_per_s": round(len(started) / start_wall, 1),
            "latency_ms": Latency.of([s[3] - s[2] for s in started]).as_dict(),
            "slices": slice_rates([s[3] for s in started], bench.slice),
            **start_phase.as_dict(len(started)),
        },
        "rss_mb_all_parked": rss_parked,
        "per_org_start_runs_per_s": spread([o["start_runs_per_s"] for o in per_org]),
        "per_org_inbox_p50_ms": spread([o["inbox"]["latency_ms"]["p50"] for o in per_org]),
        "per_org_inbox_p99_ms": spread([o["inbox"]["latency_ms"]["p99"] for o in per_org]),
        "per_org_running_p50_ms": spread([o["runs_running"]["latency_ms"]["p50"] for o in per_org]),
        "first_org": per_org[0],
        "per_org": per_org,
        "batch_ok": parked == len(started) == len(jobs),
    }
    return result, made
