"""The bench driver: wait for the processes, make the organization, run the rounds, collect results."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import httpx
from temporalio.client import Client

from bench.deployed.engines import BLOCKS, LABELS, BareEngine, BlocksEngine, DbosEngine, Engine
from bench.deployed.probes import ProcessProbe, Watched
from bench.deployed.servers import BLOCKS_API, BLOCKS_WORKER, POSTGRES, Servers, wait_ready
from bench.deployed.summary import (
    LOADED_TARGETS,
    RSS_TARGET_MB,
    SERIAL_TARGETS,
    Target,
    median_cpu,
    ratio,
    spreads,
)
from bench.deployed.workload import Round, run_round
from blocks.infra.db import create_engine
from tests.support import DATA_CONVERTER, Org, make_org

IDLE_SETTLE = 2.0  # seconds after every process is ready before idle memory is read

CHOICES = {
    "blocks": "POST /v1/runs (operator key) and POST /v1/runs/{id}/steps/approve/decisions "
    "(approver key) over HTTP; parked = GET /v1/runs/{id} running/awaiting_approval (untimed); "
    "end = Temporal handle.result() with Blocks' data converter (a long poll, as for bare).",
    "bare": "client.start_workflow / query `waiting` (untimed) / handle.execute_update / "
    "handle.result(); SDK default converter; worker in its own process, sandboxed.",
    "dbos": "its own FastAPI app process (uvicorn) with start/read/decide/result endpoints: "
    "DBOS.start_workflow_async, DBOS.send_async, and the result awaits the workflow's handle "
    "in the app (a push; a handle retrieved by id would poll the status table every second). "
    "Chosen over DBOSClient, whose enqueue goes through a queue the app polls (1 s by default): "
    "an HTTP app in front of the engine is how Blocks is deployed too.",
    "postgres_memory": "PSS summed over the postmaster and all its children (shared buffers "
    "counted once), sampled every second; every other process: RSS every 100 ms.",
}


def _machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "temporalio": version("temporalio"),
        "dbos": version("dbos"),
    }


async def _org(servers: Servers) -> Org:
    engine = create_engine(servers.credentials.url(), pool_size=1)
    try:
        return await make_org(engine)
    finally:
        await engine.dispose()


def _ratios(
    figures: dict[str, dict[str, Any]], targets: dict[str, Target]
) -> dict[str, dict[str, Any]]:
    """Blocks ÷ bare and Blocks ÷ DBOS per figure (of the medians), with the target where set."""
    out: dict[str, dict[str, Any]] = {}
    for key, spread in figures[BLOCKS].items():
        vs_bare = ratio(spread.median, figures["bare"][key].median)
        target = targets.get(key)
        out[key] = {
            "vs_bare": vs_bare,
            "vs_dbos": ratio(spread.median, figures["dbos"][key].median),
            "target": target.describe() if target else None,
            "met": target.met(vs_bare) if target else None,
        }
    return out


def _section(rounds: dict[str, list[Round]], targets: dict[str, Target]) -> dict[str, Any]:
    figures = {name: spreads([r.figures() for r in rs]) for name, rs in rounds.items()}
    return {
        "engines": {
            name: {
                "label": LABELS[name],
                "figures": {k: s.as_dict() for k, s in figures[name].items()},
                "cpu_ms_per_run": median_cpu([r.cpu_ms_per_run() for r in rs]),
                "rounds": [r.as_dict() for r in rs],
            }
            for name, rs in rounds.items()
        },
        "ratios": _ratios(figures, targets),
    }


async def measure(
    args: argparse.Namespace, servers: Servers, say: Callable[[str], None]
) -> dict[str, Any]:
    """Everything measured in this run, as the JSON document (see report.py for the tables)."""
    org = await _org(servers)
    client = await Client.connect(servers.temporal_address)
    # Same connection; Blocks' converter (pydantic + AES-GCM payload codec) reads its results.
    blocks_client = Client(
        client.service_client, namespace=client.namespace, data_converter=DATA_CONVERTER
    )
    say("waiting for the API, the worker's catalogue, the workers' polls and the DBOS app")
    await wait_ready(servers, client, org["operator"], say)
    probe = ProcessProbe(
        [Watched(name, p.pid, tree=name == POSTGRES) for name, p in servers.processes.items()]
    )
    await asyncio.sleep(IDLE_SETTLE)
    idle = probe.memory_mb()
    # Idle connections are dropped before uvicorn's 5 s keep-alive ends them: a request sent on
    # one the server is closing at that moment fails with ReadError, and a POST is not retried.
    limits = httpx.Limits(max_connections=args.concurrency + 10, keepalive_expiry=2.0)
    async with (
        httpx.AsyncClient(base_url=servers.blocks_url, timeout=120, limits=limits) as blocks_http,
        httpx.AsyncClient(base_url=servers.dbos_url, timeout=120, limits=limits) as dbos_http,
    ):
        engines: list[Engine] = [
            BlocksEngine(blocks_http, org, blocks_client),
            BareEngine(client, servers.bare_queue),
            DbosEngine(dbos_http),
        ]
        loaded: dict[str, list[Round]] = {e.name: [] for e in engines}
        serial: dict[str, list[Round]] = {e.name: [] for e in engines}
        probe.start_sampling()
        try:
            for number in range(1, args.rounds + 1):
                for engine in engines:
                    say(
                        f"round {number}/{args.rounds}, {LABELS[engine.name]}: "
                        f"{args.runs} runs, {args.concurrency} in flight"
                    )
                    loaded[engine.name].append(
                        await run_round(engine, args.runs, args.concurrency, probe)
                    )
            if args.serial_runs > 0:
                for engine in engines:
                    say(f"one at a time, {LABELS[engine.name]}: {args.serial_runs} runs")
                    serial[engine.name].append(await run_round(engine, args.serial_runs, 1, probe))
        finally:
            probe.stop_sampling()
    peaks = dict(probe.peaks_mb)
    return {
        "machine": _machine(),
        "params": {
            "runs": args.runs,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "serial_runs": args.serial_runs,
        },
        "choices": CHOICES,
        "retried_by_status": {e.name: dict(e.retried) for e in engines},
        "processes": {
            name: sorted(e.name for e in engines if name in e.processes) for name in probe.names
        },
        "loaded": _section(loaded, LOADED_TARGETS),
        "serial": _section(serial, SERIAL_TARGETS) if args.serial_runs > 0 else None,
        "memory_mb": {
            name: {
                "idle": round(idle.get(name, 0.0), 1),
                "peak": round(max(peaks.get(name, 0.0), idle.get(name, 0.0)), 1),
                "target_max": RSS_TARGET_MB if name in (BLOCKS_API, BLOCKS_WORKER) else None,
                "met": peaks.get(name, 0.0) <= RSS_TARGET_MB
                if name in (BLOCKS_API, BLOCKS_WORKER)
                else None,
            }
            for name in probe.names
        },
    }
