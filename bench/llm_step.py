"""`python -m bench.llm_step`: an LLM step in Blocks against a bare activity calling the same server.

Side by side in one run, on one PostgreSQL, one Temporal dev server and one local
OpenAI-compatible server (tests/servers/openai_compatible.py, process of its own):

- **Blocks**: `tests.e2e.llm_workflows.LlmDraft` (begin, `await self.llm(...)`, finish) on a worker
  built by `build_worker` (sandbox, audit outbox, `LlmActivities` with the SSRF guard allowing
  the server's loopback port), payloads sealed under the organization's key (`DatabaseOrgKeys`
  installed, as the worker does), the credential made by `create_credential`. Each run's row is
  made before the clock starts, as the API's claim would; the clock runs from `start_workflow`
  (search attributes and ids as the API sets them) to `handle.result()`.
- **bare**: `bench.llm_bare.BareLlmCall`, SDK defaults (default data converter, sandboxed), one
  activity calling the server with `AsyncOpenAI(base_url, api_key, max_retries=0)`: same model,
  system line and prompt, same retry policy.

Rounds alternate sides (Blocks first in even rounds); latencies pool over rounds, calls/s is all
calls over all measured wall time. Then one call at a time per side (unloaded), a breakdown of
Blocks' pieces timed alone, and each side's workflow code alone, its last run's history replayed
(`bench.llm_parts`); `bench.llm_report` renders the tables and splits Blocks' extra per call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from time import perf_counter
from typing import Any

import psutil
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client, WorkflowHistory
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from bench.cpu import CpuProbe, CpuUse, tree_cpu_seconds
from bench.llm_bare import BareLlmCall
from bench.llm_parts import (
    MODEL,
    PROMPT,
    BareLlmActivity,
    Target,
    bare_params,
    measure_parts,
    measure_replays,
)
from bench.llm_report import derive, render
from bench.stats import in_flight, percentile
from blocks.core.approvals import search_attributes as sa
from blocks.core.approvals.search_attributes import ALL_KEYS
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import Role
from blocks.infra.crypto.org_keys import install_org_keys
from blocks.infra.crypto.signing import parse_signing_key
from blocks.infra.db import create_engine, session_factory
from blocks.infra.embedded.postgres import EmbeddedPostgres
from blocks.infra.embedded.temporal import temporal_cli_path
from blocks.infra.integrations.outbound_addresses import parse_allowed_pairs
from blocks.infra.integrations.outbound_http import OutboundPolicy
from blocks.infra.migrate import upgrade_database
from blocks.models.approvals.runs import StartState, create_run, settle_start
from blocks.models.keys.org_keys import DatabaseOrgKeys
from blocks.models.llm.credentials import create_credential
from blocks.workers.main import INTERCEPTORS, SANDBOX, build_worker
from blocks.workflows.types import RunInput, RunOutcome
from tests.e2e.llm_stack import allowed_pair
from tests.e2e.llm_workflows import LlmDraft
from tests.servers.openai_compatible import running_openai_server
from tests.support import DATA_CONVERTER, SIGNING_KEY, free_port, make_org

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "llm_step.json"
WORKFLOW = "tests_llm_draft"


class BenchError(RuntimeError):
    """A run did not end as the benchmark expects; the numbers would be void."""


@dataclass
class Segment:
    """Calls of one side: start -> result per call, wall time, CPU, the model server's CPU."""

    samples: list[float] = field(default_factory=list)
    wall: float = 0.0
    cpu: CpuUse = field(default_factory=CpuUse)
    model_cpu: float = 0.0
    rates: list[float] = field(default_factory=list)  # calls/s of each round

    def add(self, other: Segment) -> None:
        self.samples += other.samples
        self.wall += other.wall
        self.cpu = self.cpu + other.cpu
        self.model_cpu += other.model_cpu
        self.rates += other.rates

    def as_dict(self) -> dict[str, Any]:
        calls = len(self.samples)
        ordered = sorted(s * 1000 for s in self.samples)
        return {
            "calls": calls,
            "wall_seconds": round(self.wall, 3),
            "calls_per_second": round(calls / self.wall, 2),
            "rounds_calls_per_second": [round(r, 2) for r in self.rates],
            "latency_ms": {p: round(percentile(ordered, q), 2) for p, q in _PCTS},
            "cpu": {
                **self.cpu.as_dict(calls),
                "model_server_ms_per_item": round(self.model_cpu * 1000 / calls, 3),
            },
        }


_PCTS = (("p50", 50), ("p95", 95), ("p99", 99))


def _model_server() -> psutil.Process | None:
    """The OpenAI-compatible server: our child started by `running_openai_server`."""
    for child in psutil.Process().children():
        try:
            if any("openai_compatible" in part for part in child.cmdline()):
                return child
        except psutil.Error:
            continue
    return None


async def timed(
    calls: int,
    concurrency: int,
    call: Callable[[int], Awaitable[None]],
    probe: CpuProbe,
    model_server: psutil.Process | None,
) -> Segment:
    samples: list[float] = []

    async def one(index: int) -> None:
        began = perf_counter()
        await call(index)
        samples.append(perf_counter() - began)

    model0 = tree_cpu_seconds(model_server)
    with probe.measure() as cpu:
        await in_flight(range(calls), concurrency, one)
    model = tree_cpu_seconds(model_server) - model0
    return Segment(samples, cpu.wall, cpu, model, [calls / cpu.wall])


@dataclass
class Sides:
    """What each side needs to make its calls."""

    blocks_client: Client
    bare_client: Client
    blocks_queue: str
    bare_queue: str
    org_id: uuid.UUID
    requester: uuid.UUID
    keys: DatabaseOrgKeys
    sessions: async_sessionmaker[AsyncSession]
    last_blocks: str = ""  # the workflow id of the last run that completed, for its history
    last_bare: str = ""

    async def histories(self) -> dict[str, tuple[Replayer, WorkflowHistory]]:
        """The last run of each side, with a replayer configured as that side's worker."""
        blocks = await self.blocks_client.get_workflow_handle(self.last_blocks).fetch_history()
        bare = await self.bare_client.get_workflow_handle(self.last_bare).fetch_history()
        return {
            "blocks": (
                Replayer(
                    workflows=[LlmDraft],
                    workflow_runner=SANDBOX,
                    interceptors=INTERCEPTORS,
                    data_converter=DATA_CONVERTER,
                ),
                blocks,
            ),
            "bare": (Replayer(workflows=[BareLlmCall]), bare),
        }

    async def prepare_runs(self, count: int) -> list[uuid.UUID]:
        """Run rows, claimed and settled `started` as the API leaves them (not timed)."""
        ctx = OrgContext(
            org_id=OrgId(self.org_id), user_id=self.requester, roles=(), auth=AuthMethod.API_KEY
        )
        ids: list[uuid.UUID] = []
        async with self.sessions() as session, session.begin():
            for _ in range(count):
                run = await create_run(ctx, session, workflow_name=WORKFLOW, workflow_version="1")
                assert run is not None
                await settle_start(ctx, session, run.id, StartState.STARTED)
                ids.append(run.id)
        return ids

    def blocks_call(self, run_ids: list[uuid.UUID]) -> Callable[[int], Awaitable[None]]:
        async def call(index: int) -> None:
            run_id = run_ids[index]
            workflow_id = f"run-{run_id}"
            self.keys.remember_run(workflow_id, self.org_id)  # as the API does before its start
            run_input = RunInput(
                org_id=str(self.org_id),
                run_id=str(run_id),
                workflow_name=WORKFLOW,
                requested_by=str(self.requester),
                params={"prompt": PROMPT, "model": MODEL},
            )
            handle = await self.blocks_client.start_workflow(
                WORKFLOW,
                run_input,
                id=workflow_id,
                task_queue=self.blocks_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=sa.at_start(str(self.org_id), WORKFLOW, str(self.requester)),
                result_type=RunOutcome,
            )
            outcome = await handle.result()
            if outcome.status != "drafted":
                raise BenchError(f"Blocks run {run_id} ended {outcome.status}")
            self.last_blocks = workflow_id

        return call

    async def bare_call(self, _: int) -> None:
        workflow_id = f"bare-llm-{uuid.uuid4()}"
        result = await self.bare_client.execute_workflow(
            BareLlmCall.run, bare_params(), id=workflow_id, task_queue=self.bare_queue
        )
        self.last_bare = workflow_id
        if result.get("status") != "drafted":
            raise BenchError(f"bare run ended {result!r}")


async def _side(
    name: str,
    sides: Sides,
    calls: int,
    concurrency: int,
    probe: CpuProbe,
    model_server: psutil.Process | None,
) -> Segment:
    _log(f"{name}: {calls} calls, {concurrency} in flight")
    if name == "blocks":
        run_ids = await sides.prepare_runs(calls)
        return await timed(calls, concurrency, sides.blocks_call(run_ids), probe, model_server)
    return await timed(calls, concurrency, sides.bare_call, probe, model_server)


async def _rounds(
    sides: Sides,
    calls: int,
    rounds: int,
    concurrency: int,
    probe: CpuProbe,
    model_server: psutil.Process | None,
) -> dict[str, Segment]:
    """`rounds` rounds, sides alternating which goes first; `calls` per side split over them."""
    pooled = {"blocks": Segment(), "bare": Segment()}
    per_round = [calls // rounds + (1 if r < calls % rounds else 0) for r in range(rounds)]
    for index, n in enumerate(per_round):
        order = ("blocks", "bare") if index % 2 == 0 else ("bare", "blocks")
        for name in order:
            pooled[name].add(await _side(name, sides, n, concurrency, probe, model_server))
    return pooled


def _log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


@contextmanager
def _servers(tmp: Path) -> Iterator[tuple[EmbeddedPostgres, str, str]]:
    """PostgreSQL (migrated) and the model server; stopped on the way out, also on failure."""
    with ExitStack() as stack:
        _log("starting embedded PostgreSQL and applying migrations; the model server")
        server = EmbeddedPostgres(tmp / "pg", port=free_port())
        credentials = server.start()
        stack.callback(server.stop)
        upgrade_database(credentials.url(owner=True))
        base_url = stack.enter_context(running_openai_server())
        yield server, credentials.url(), base_url


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    began = perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="blocks-bench-llm-") as tmp,
        _servers(Path(tmp)) as (pg, database_url, base_url),
    ):
        results = await _measure(args, pg, database_url, base_url)
    results["wall_seconds"] = round(perf_counter() - began, 1)
    return results


async def _measure(
    args: argparse.Namespace, pg: EmbeddedPostgres, database_url: str, base_url: str
) -> dict[str, Any]:
    _log("starting the Temporal dev server")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(),
        search_attributes=ALL_KEYS,
        data_converter=DATA_CONVERTER,
    )
    engine = create_engine(database_url, pool_size=2 * args.concurrency + 4)
    keys = DatabaseOrgKeys(engine)
    install_org_keys(keys)  # as the worker does at start: each run sealed under its org's key
    probe = CpuProbe(pg.pgdata)
    probe.locate()
    model_server = _model_server()
    try:
        org = await make_org(engine)
        api_key = f"sk-ok-{uuid.uuid4().hex}"
        policy = OutboundPolicy(parse_allowed_pairs(allowed_pair(base_url)))
        admin = OrgContext(
            org_id=OrgId(org.id),
            user_id=org["admin"].user_id,
            roles=(Role.ADMIN,),
            auth=AuthMethod.API_KEY,
        )
        sessions = session_factory(engine)
        async with sessions() as session, session.begin():
            credential = await create_credential(
                admin,
                session,
                name="default",
                provider="openai-compatible",
                base_url=base_url,
                api="chat",
                allowed_models=[MODEL],
                api_key=api_key,
            )
        suffix = uuid.uuid4().hex[:8]
        bare_act = BareLlmActivity(base_url, api_key)
        bare_client = Client(env.client.service_client, namespace=env.client.namespace)
        sides = Sides(
            blocks_client=env.client,
            bare_client=bare_client,
            blocks_queue=f"bench-llm-blocks-{suffix}",
            bare_queue=f"bench-llm-bare-{suffix}",
            org_id=org.id,
            requester=org["operator"].user_id,
            keys=keys,
            sessions=sessions,
        )
        blocks_worker = build_worker(
            env.client,
            engine,
            task_queue=sides.blocks_queue,
            signer=parse_signing_key(SIGNING_KEY),
            workflows=[LlmDraft],
            outbound_policy=policy,
        )
        # As bench.approval's bare worker: SDK defaults, sandboxed.
        bare_worker = Worker(
            bare_client,
            task_queue=sides.bare_queue,
            workflows=[BareLlmCall],
            activities=[bare_act.call],
        )
        async with blocks_worker, bare_worker:
            _log(f"warm-up: {args.warmup} calls per side (discarded)")
            for name in ("blocks", "bare"):
                await _side(name, sides, args.warmup, args.concurrency, probe, model_server)
            loaded = await _rounds(
                sides, args.calls, args.rounds, args.concurrency, probe, model_server
            )
            unloaded: dict[str, Segment] | None = None
            if args.serial_calls > 0:
                unloaded = await _rounds(sides, args.serial_calls, 2, 1, probe, model_server)
            parts: dict[str, dict[str, float]] | None = None
            replays: dict[str, dict[str, float]] | None = None
            if args.parts > 0:
                _log(f"breakdown: {args.parts} samples of each piece, one at a time")
                [run_id] = await sides.prepare_runs(1)
                keys.remember_run(f"run-{run_id}", org.id)
                target = Target(org.id, "default", credential.id, base_url, api_key, policy)
                parts = await measure_parts(
                    engine, target, DATA_CONVERTER, f"run-{run_id}", args.parts
                )
                _log(f"workflow side: each side's last run replayed {args.parts} times")
                replays = await measure_replays(await sides.histories(), args.parts)
        await bare_act.client.close()
    finally:
        install_org_keys(None)
        await engine.dispose()
        _log("stopping the Temporal dev server")
        await env.shutdown()
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "temporalio": version("temporalio"),
            "openai": version("openai"),
        },
        "params": {k: v for k, v in vars(args).items() if k != "out"},
        "loaded": {k: v.as_dict() for k, v in loaded.items()},
        "unloaded": {k: v.as_dict() for k, v in unloaded.items()} if unloaded else None,
        "parts_ms": parts,
        "replays_ms": replays,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.llm_step", description=__doc__)
    parser.add_argument("--calls", type=int, default=300, help="measured calls per side")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds to split into")
    parser.add_argument("--concurrency", type=int, default=10, help="calls in flight")
    parser.add_argument("--warmup", type=int, default=20, help="discarded calls per side first")
    parser.add_argument(
        "--serial-calls", type=int, default=40, help="calls per side one at a time (0 skips)"
    )
    parser.add_argument(
        "--parts", type=int, default=60, help="samples of each piece in the breakdown (0 skips)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON goes")
    args = parser.parse_args(argv)
    if min(args.calls, args.rounds, args.concurrency) < 1 or args.calls < args.rounds:
        parser.error("--calls, --rounds and --concurrency must be positive, calls >= rounds")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    results = asyncio.run(bench(args))
    results["derived_ms"] = derive(results)
    print(render(results))
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {out} ({results['wall_seconds']} s in all)")


if __name__ == "__main__":
    main()
