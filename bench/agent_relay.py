"""`python -m bench.agent_relay`: a remote agent's task through Blocks' relay against a bare activity
doing the same work.

Side by side in one run, on one PostgreSQL and one Temporal dev server:

- **Blocks**: `bench.agent_workflow.BenchAgentSum` (begin, `await self.agent(agent, "echo-sum",
  {"numbers": [...]})`, finish) on a worker built by `build_worker` in this process (sandbox,
  audit outbox, the dispatch activity), payloads sealed under the organization's key
  (`DatabaseOrgKeys` installed, as the worker does). The relay is `blocks api` in a process of its
  own (WebSocket `/v1/agents/connect`), and the agent is a third process: the agent SDK's
  `blocks agent run ... bench.agent_echo:agent`, adding up the numbers. Each run's row is made
  before the clock starts, as the API's claim would; the clock runs from `start_workflow` to
  `handle.result()`.
- **bare**: `bench.agent_bare.BareAgentSum`, SDK defaults (default data converter, sandboxed), one
  activity in this process adding up the same numbers, the same retry policy and timeouts.

Rounds alternate sides (Blocks first in even rounds); latencies pool over rounds, tasks/s is all
tasks over all measured wall time. Dispatch → result is the activity's ActivityTaskScheduled →
ActivityTaskCompleted in its history (the server's clock). Then one task at a time per side, each
Blocks task's own timestamps, the relay path's pieces timed alone (`bench.agent_parts`), and a
diagnostic round per side with several agent processes on the one token (does the relay's
one-frame-at-a-time loop per connection bound the rate?); `bench.agent_report` renders it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from time import perf_counter
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from bench.agent_bare import BareAgentSum, BareWait
from bench.agent_echo import SKILL
from bench.agent_parts import (
    BareActivities,
    PartsTarget,
    measure_parts,
    task_timeline,
    xact_commits,
)
from bench.agent_procs import ROOT, start_agent, start_api
from bench.agent_report import derive, render
from bench.agent_sides import Segment, Sides, pcts
from bench.agent_workflow import BenchAgentSum
from bench.cpu import CpuProbe
from blocks.core.approvals.search_attributes import ALL_KEYS
from blocks.infra.crypto.org_keys import install_org_keys
from blocks.infra.crypto.signing import parse_signing_key
from blocks.infra.db import create_engine
from blocks.infra.embedded.postgres import EmbeddedPostgres, PostgresCredentials
from blocks.infra.embedded.temporal import temporal_cli_path
from blocks.infra.migrate import upgrade_database
from blocks.models.keys.org_keys import DatabaseOrgKeys
from blocks.workers.main import build_worker
from tests.e2e.agent_stack import register_agent
from tests.support import (
    DATA_CONVERTER,
    SIGNING_KEY,
    free_port,
    make_org,
)

DEFAULT_OUT = ROOT / "bench" / "results" / "agent_relay.json"
STATS_SETTLE = 11.0  # seconds: an idle backend flushes its statistics within 10 s


async def _rounds(sides: Sides, tasks: int, rounds: int, concurrency: int) -> dict[str, Segment]:
    """`rounds` rounds, sides alternating which goes first; `tasks` per side split over them."""
    pooled = {"blocks": Segment(), "bare": Segment()}
    per_round = [tasks // rounds + (1 if r < tasks % rounds else 0) for r in range(rounds)]
    for index, n in enumerate(per_round):
        order = ("blocks", "bare") if index % 2 == 0 else ("bare", "blocks")
        for name in order:
            _log(f"{name}: {n} tasks, {concurrency} in flight")
            pooled[name].add(await sides.timed(name, n, concurrency))
    return pooled


def _log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


@contextmanager
def _postgres(tmp: Path) -> Iterator[tuple[EmbeddedPostgres, PostgresCredentials]]:
    _log("starting embedded PostgreSQL and applying migrations")
    server = EmbeddedPostgres(tmp / "pg", port=free_port())
    credentials = server.start()
    try:
        upgrade_database(credentials.url(owner=True))
        yield server, credentials
    finally:
        server.stop()


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    began = perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="blocks-bench-agent-") as tmp,
        _postgres(Path(tmp)) as (pg, credentials),
    ):
        results = await _measure(args, Path(tmp), pg, credentials)
    results["wall_seconds"] = round(perf_counter() - began, 1)
    return results


async def _measure(
    args: argparse.Namespace, tmp: Path, pg: EmbeddedPostgres, credentials: PostgresCredentials
) -> dict[str, Any]:
    _log("starting the Temporal dev server")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(),
        search_attributes=ALL_KEYS,
        data_converter=DATA_CONVERTER,
    )
    database_url = credentials.url()
    engine = create_engine(database_url, pool_size=2 * args.concurrency + 4)
    keys = DatabaseOrgKeys(engine)
    install_org_keys(keys)  # as the worker does at start: each run sealed under its org's key
    probe = CpuProbe(pg.pgdata)
    probe.locate()
    try:
        with ExitStack() as stack:
            return await _with_processes(args, tmp, stack, env, engine, keys, probe, database_url)
    finally:
        install_org_keys(None)
        await engine.dispose()
        _log("stopping the Temporal dev server")
        await env.shutdown()


async def _with_processes(
    args: argparse.Namespace,
    tmp: Path,
    stack: ExitStack,
    env: WorkflowEnvironment,
    engine: AsyncEngine,
    keys: DatabaseOrgKeys,
    probe: CpuProbe,
    database_url: str,
) -> dict[str, Any]:
    org = await make_org(engine)
    # The organization's data key made once before any concurrency: twenty first uses at once
    # race in `live_org_key` (one commits the key between another's two reads, which then takes
    # it for a destroyed one and raises OrgKeyUnavailable).
    await keys.active_key(org.id)
    agent = await register_agent(engine, org.id, skills=(SKILL,))
    idle = await register_agent(engine, org.id, skills=(SKILL,))  # never connects: the pieces'
    suffix = uuid.uuid4().hex[:8]
    blocks_queue, bare_queue = f"bench-agent-blocks-{suffix}", f"bench-agent-bare-{suffix}"
    api, base_url = await start_api(
        stack, tmp, database_url, env.client.service_client.config.target_host, blocks_queue
    )
    agent_proc = await start_agent(stack, tmp, "agent", base_url, agent.token)
    bare_client = Client(env.client.service_client, namespace=env.client.namespace)
    bare = BareActivities()
    sides = Sides(
        blocks_client=env.client,
        bare_client=bare_client,
        blocks_queue=blocks_queue,
        bare_queue=bare_queue,
        org_id=org.id,
        requester=org["operator"].user_id,
        agent_name=agent.name,
        keys=keys,
        engine=engine,
        probe=probe,
        api=api,
        agents=[agent_proc],
    )
    blocks_worker = build_worker(
        env.client,
        engine,
        task_queue=blocks_queue,
        signer=parse_signing_key(SIGNING_KEY),
        workflows=[BenchAgentSum],
    )
    # As bench.llm_step's bare worker: SDK defaults, sandboxed.
    bare_worker = Worker(
        bare_client,
        task_queue=bare_queue,
        workflows=[BareAgentSum, BareWait],
        activities=[bare.bare_sum, bare.bare_wait],
    )
    async with blocks_worker, bare_worker:
        _log(f"warm-up: {args.warmup} tasks per side (discarded)")
        for name in ("blocks", "bare"):
            await sides.timed(name, args.warmup, args.concurrency)
        _log(f"waiting {STATS_SETTLE:.0f} s for PostgreSQL's transaction counts to settle")
        await asyncio.sleep(STATS_SETTLE)
        commits0 = await xact_commits(engine)
        loaded = await _rounds(sides, args.tasks, args.rounds, args.concurrency)
        await asyncio.sleep(STATS_SETTLE)
        commits = await xact_commits(engine) - commits0
        unloaded: dict[str, Segment] | None = None
        if args.serial_tasks > 0:
            unloaded = await _rounds(sides, args.serial_tasks, 2, 1)
        timeline = {"loaded": await _timeline(engine, org.id, loaded["blocks"])}
        if unloaded is not None:
            timeline["unloaded"] = await _timeline(engine, org.id, unloaded["blocks"])
        parts: dict[str, dict[str, float]] | None = None
        if args.parts > 0:
            _log(f"breakdown: {args.parts} tasks through each piece, one at a time")
            target = PartsTarget(org.id, idle.name, idle.token, bare_client, bare_queue, bare)
            parts = await measure_parts(engine, target, args.parts)
        connections: dict[str, Any] | None = None
        if args.connections > 1:
            # Does the relay's one-message-at-a-time loop per connection bound the rate? The same
            # token from more agent processes: the relay serves each connection's loop apart.
            _log(f"diagnostic: {args.connections} agent processes on one token, a round per side")
            for n in range(2, args.connections + 1):
                sides.agents.append(
                    await start_agent(stack, tmp, f"agent-{n}", base_url, agent.token)
                )
            n_tasks = args.tasks // args.rounds
            more = {
                name: await sides.timed(name, n_tasks, args.concurrency)
                for name in ("blocks", "bare")
            }
            connections = {
                "agents": args.connections,
                **{name: segment.as_dict() for name, segment in more.items()},
                "timeline": await _timeline(engine, org.id, more["blocks"]),
            }
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "temporalio": version("temporalio"),
            "websockets": version("websockets"),
        },
        "method": {"api": "`blocks api` subprocess", "agent": "agent SDK, `blocks agent run`"},
        "params": {k: v for k, v in vars(args).items() if k != "out"},
        "loaded": {k: v.as_dict() for k, v in loaded.items()},
        "unloaded": {k: v.as_dict() for k, v in unloaded.items()} if unloaded else None,
        "xact_per_task": round(commits / len(loaded["blocks"].samples), 2),
        "timeline_ms": timeline,
        "parts_ms": parts,
        "connections": connections,
    }


async def _timeline(engine: AsyncEngine, org_id: uuid.UUID, segment: Segment) -> dict[str, Any]:
    run_ids = [wid.removeprefix("run-") for wid in segment.workflow_ids]
    spans = await task_timeline(engine, org_id, run_ids)
    return {key: pcts(values) for key, values in spans.items()}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.agent_relay", description=__doc__)
    parser.add_argument("--tasks", type=int, default=400, help="measured tasks per side")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds to split into")
    parser.add_argument("--concurrency", type=int, default=20, help="tasks in flight")
    parser.add_argument("--warmup", type=int, default=20, help="discarded tasks per side first")
    parser.add_argument(
        "--serial-tasks", type=int, default=40, help="tasks per side one at a time (0 skips)"
    )
    parser.add_argument(
        "--parts", type=int, default=60, help="tasks through each piece alone (0 skips)"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=4,
        help="agent processes (one token) in a last diagnostic round per side (< 2 skips)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON goes")
    args = parser.parse_args(argv)
    if min(args.tasks, args.rounds, args.concurrency) < 1 or args.tasks < args.rounds:
        parser.error("--tasks, --rounds and --concurrency must be positive, tasks >= rounds")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    results = asyncio.run(bench(args))
    results["derived"] = derive(results)
    print(render(results))
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {out} ({results['wall_seconds']} s in all)")


if __name__ == "__main__":
    main()
