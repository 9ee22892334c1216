"""Run the benchmarks in one process against one PostgreSQL and one Temporal dev server."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from time import perf_counter
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from bench.approval import RoundTrip, bare_round, bare_worker, blocks_round
from bench.audit import (
    AppendRun,
    blocks_appends,
    chain_is_linear,
    create_plain_table,
    make_plain_rows,
    make_records,
    plain_inserts,
)
from bench.cpu import CpuProbe
from bench.verify import measure as measure_verify
from blocks.core.approvals.search_attributes import ALL_KEYS
from blocks.infra.db import create_engine
from blocks.infra.embedded.postgres import EmbeddedPostgres, PostgresCredentials
from blocks.infra.embedded.temporal import temporal_cli_path
from blocks.infra.migrate import upgrade_database
from tests.support import DATA_CONVERTER, free_port, make_org, running_stack

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"
TARGET_RPS_RATIO = 0.8  # blocks_rps / bare_rps, at least
TARGET_P50_RATIO = 1.25  # blocks_p50 / bare_p50, at most
TARGET_AUDIT_RATIO = 0.5  # blocks events/s / plain events/s, at least
SETTLE_SECONDS = 0.5  # pause between parking every run and deciding them

console = Console(width=max(Console().width, 140))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--runs", type=int, default=200, help="approval runs per side")
    parser.add_argument(
        "--events",
        type=int,
        default=20_000,
        help="audit events appended per side, split evenly over the writer levels",
    )
    parser.add_argument("--concurrency", type=int, default=20, help="approval runs in flight")
    parser.add_argument(
        "--writers", default="1,8,32", help="comma-separated concurrent audit writers"
    )
    parser.add_argument("--warmup", type=int, default=10, help="discarded runs per side first")
    parser.add_argument(
        "--serial-runs",
        type=int,
        default=30,
        help="extra runs per side with one in flight, for unloaded latency (0 to skip)",
    )
    parser.add_argument(
        "--audit-warmup", type=int, default=500, help="discarded appends per side first"
    )
    parser.add_argument(
        "--no-diagnose",
        dest="diagnose",
        action="store_false",
        help="skip the extra Blocks round decided by a direct Update (no HTTP API)",
    )
    parser.add_argument(
        "--verify-events",
        type=int,
        default=1_000_000,
        help="synthetic events for the offline verifier's speed (0 to skip)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write JSON")
    args = parser.parse_args(argv)
    args.writer_levels = [int(w) for w in str(args.writers).split(",") if w.strip()]
    if args.runs < 1 or args.concurrency < 1 or not args.writer_levels:
        parser.error("--runs, --concurrency and --writers must be positive")
    if args.events < len(args.writer_levels) or min(args.writer_levels) < 1:
        parser.error("--events must give every writer level at least one event")
    args.events_per_level = args.events // len(args.writer_levels)
    return args


def _phase(message: str) -> None:
    console.log(f"[bold cyan]{message}")


async def approval_section(
    engine: AsyncEngine,
    credentials: PostgresCredentials,
    env: WorkflowEnvironment,
    probe: CpuProbe,
    args: argparse.Namespace,
) -> dict[str, Any]:
    org = await make_org(engine)
    suffix = uuid.uuid4().hex[:8]
    bare_queue = f"bench-bare-{suffix}"
    # Same server and connection, but the SDK's default converter: no Blocks payload encryption.
    bare_client = Client(env.client.service_client, namespace=env.client.namespace)
    async with (
        running_stack(
            engine=engine,
            temporal=env.client,
            database_url=credentials.url(),
            task_queue=f"bench-blocks-{suffix}",
        ) as stack,
        bare_worker(bare_client, bare_queue),
        stack.http() as http,
    ):

        async def bare_side(runs: int, concurrency: int) -> RoundTrip:
            _phase(f"approval, bare Temporal: {runs} runs, {concurrency} in flight")
            return await bare_round(
                bare_client,
                bare_queue,
                runs=runs,
                concurrency=concurrency,
                settle=SETTLE_SECONDS,
                probe=probe,
            )

        async def blocks_side(runs: int, concurrency: int, *, via_api: bool = True) -> RoundTrip:
            how = "via HTTP API" if via_api else "decided by a direct Update (diagnostic)"
            _phase(f"approval, Blocks {how}: {runs} runs, {concurrency} in flight")
            return await blocks_round(
                stack,
                http,
                org,
                runs=runs,
                concurrency=concurrency,
                settle=SETTLE_SECONDS,
                probe=probe,
                via_api=via_api,
            )

        direct: list[RoundTrip] = []

        async def diagnose() -> None:
            if args.diagnose:
                direct.append(await blocks_side(args.runs, args.concurrency, via_api=False))

        _phase(f"approval warm-up: {args.warmup} runs per side (discarded)")
        await blocks_side(args.warmup, args.concurrency)
        await bare_side(args.warmup, args.concurrency)
        bare, blocks = await _abba(args.runs, args.concurrency, bare_side, blocks_side, diagnose)
        unloaded: dict[str, Any] | None = None
        if args.serial_runs > 0:
            serial_bare, serial_blocks = await _abba(args.serial_runs, 1, bare_side, blocks_side)
            unloaded = {
                "blocks": serial_blocks.as_dict(),
                "bare": serial_bare.as_dict(),
                "p50_ratio": round(serial_blocks.latency.p50 / serial_bare.latency.p50, 3),
            }
    return {
        "blocks": blocks.as_dict(),
        "bare": bare.as_dict(),
        "blocks_direct_update": direct[0].as_dict() if direct else None,
        "ratios": _approval_ratios(blocks, bare),
        "unloaded": unloaded,
    }


async def _abba(
    runs: int,
    concurrency: int,
    first: Callable[[int, int], Awaitable[RoundTrip]],
    second: Callable[[int, int], Awaitable[RoundTrip]],
    middle: Callable[[], Awaitable[None]] | None = None,
) -> tuple[RoundTrip, RoundTrip]:
    """Measure in halves, first-second-second-first, and pool each side's halves.

    The dev server slows a little as it accumulates closed workflows; this order cancels that
    drift instead of handing it to whichever side happens to run last.
    """
    head, tail = runs - runs // 2, runs // 2
    a = await first(head, concurrency)
    b = await second(head, concurrency)
    if middle is not None:
        await middle()
    if tail:
        b = b + await second(tail, concurrency)
        a = a + await first(tail, concurrency)
    return a, b


def _approval_ratios(blocks: RoundTrip, bare: RoundTrip) -> dict[str, Any]:
    rps = blocks.rps / bare.rps
    p50 = blocks.latency.p50 / bare.latency.p50
    return {
        "rps": round(rps, 3),
        "rps_target_min": TARGET_RPS_RATIO,
        "rps_met": rps >= TARGET_RPS_RATIO,
        "p50": round(p50, 3),
        "p50_target_max": TARGET_P50_RATIO,
        "p50_met": p50 <= TARGET_P50_RATIO,
        "p99": round(blocks.latency.p99 / bare.latency.p99, 3),
    }


async def audit_section(
    engine: AsyncEngine, owner_engine: AsyncEngine, probe: CpuProbe, args: argparse.Namespace
) -> dict[str, Any]:
    org = await make_org(engine)
    # Created by the table owner like every Blocks table; the app role inserts into both sides.
    await create_plain_table(owner_engine)
    appended = 0
    next_seq = 1

    async def both(events: int, writers: int, *, plain_first: bool) -> tuple[AppendRun, AppendRun]:
        nonlocal appended, next_seq
        records = make_records(events)
        rows = make_plain_rows(make_records(events), org.id, next_seq)
        if plain_first:
            plain = await plain_inserts(engine, rows, writers, probe)
            blocks = await blocks_appends(engine, org.id, records, writers, probe)
        else:
            blocks = await blocks_appends(engine, org.id, records, writers, probe)
            plain = await plain_inserts(engine, rows, writers, probe)
        appended += events
        next_seq += events
        return blocks, plain

    _phase(f"audit warm-up: {args.audit_warmup} appends per side (discarded)")
    await both(args.audit_warmup, max(args.writer_levels), plain_first=True)
    levels: list[dict[str, Any]] = []
    for index, writers in enumerate(args.writer_levels):
        _phase(f"audit append: {args.events_per_level} events per side, {writers} writer(s)")
        # Alternate which side goes first, so neither always meets the larger tables.
        blocks, plain = await both(args.events_per_level, writers, plain_first=index % 2 == 0)
        ratio = blocks.events_per_second / plain.events_per_second
        levels.append(
            {
                "writers": writers,
                "blocks": blocks.as_dict(),
                "plain": plain.as_dict(),
                "ratio": round(ratio, 3),
                "ratio_target_min": TARGET_AUDIT_RATIO,
                "ratio_met": ratio >= TARGET_AUDIT_RATIO,
            }
        )
    verified = await chain_is_linear(engine, org.id, appended)
    return {"levels": levels, "chain_verified": verified, "events_in_chain": appended}


async def _postgres_version(engine: AsyncEngine) -> str:
    async with engine.connect() as conn:
        return str((await conn.execute(text("SHOW server_version"))).scalar_one())


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    began = perf_counter()
    with tempfile.TemporaryDirectory(prefix="blocks-bench-") as tmp:
        _phase("starting embedded PostgreSQL and applying migrations")
        server = EmbeddedPostgres(Path(tmp) / "pg", port=free_port())
        credentials = await asyncio.to_thread(server.start)
        try:
            await asyncio.to_thread(upgrade_database, credentials.url(owner=True))
            _phase("starting the Temporal dev server")
            env = await WorkflowEnvironment.start_local(
                dev_server_existing_path=temporal_cli_path(),
                search_attributes=ALL_KEYS,
                data_converter=DATA_CONVERTER,
            )
            probe = CpuProbe(server.pgdata)
            probe.locate()
            try:
                # The API and the worker share this pool (as in running_stack): an in-flight
                # decision holds an API connection while its run's audit activity takes another,
                # so the pool has room for both and never opens and closes overflow connections.
                stack_engine = create_engine(credentials.url(), pool_size=2 * args.concurrency + 4)
                audit_engine = create_engine(credentials.url(), pool_size=max(args.writer_levels))
                owner_engine = create_engine(credentials.url(owner=True), pool_size=1)
                try:
                    postgres_version = await _postgres_version(audit_engine)
                    approval = await approval_section(stack_engine, credentials, env, probe, args)
                    audit = await audit_section(audit_engine, owner_engine, probe, args)
                finally:
                    await stack_engine.dispose()
                    await audit_engine.dispose()
                    await owner_engine.dispose()
            finally:
                _phase("stopping the Temporal dev server")
                await env.shutdown()
        finally:
            _phase("stopping PostgreSQL")
            await asyncio.to_thread(server.stop)
    verify: dict[str, Any] | None = None
    if args.verify_events > 0:
        # After the servers stop, so nothing else competes for the CPU.
        _phase(f"offline verifier: {args.verify_events} synthetic events (generation not timed)")
        verify = measure_verify(args.verify_events)
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(perf_counter() - began, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "postgres": postgres_version,
            "temporalio": version("temporalio"),
            "sqlalchemy": version("sqlalchemy"),
        },
        "params": {
            "runs": args.runs,
            "concurrency": args.concurrency,
            "warmup_runs": args.warmup,
            "events": args.events,
            "events_per_level": args.events_per_level,
            "serial_runs": args.serial_runs,
            "writers": args.writer_levels,
            "audit_warmup": args.audit_warmup,
            "diagnose": args.diagnose,
            "verify_events": args.verify_events,
        },
        "approval": approval,
        "audit": audit,
        "verify": verify,
    }


def _ok(met: bool) -> str:
    return "[green]yes[/]" if met else "[red]no[/]"


def _cpu(side: dict[str, Any], phase: str, part: str) -> str:
    return f"{side[phase]['cpu_ms_per_item'][part]:.2f}"


def render(results: dict[str, Any]) -> None:
    approval = results["approval"]
    blocks, bare, ratios = approval["blocks"], approval["bare"], approval["ratios"]
    direct = approval.get("blocks_direct_update")
    sides = [blocks, *([direct] if direct else []), bare]
    table = Table(
        title=f"Approval round trip: {blocks['runs']} runs per side, "
        f"{blocks['concurrency']} in flight, decide phase"
    )
    table.add_column("metric")
    table.add_column("Blocks (HTTP API)", justify="right")
    if direct:
        table.add_column("Blocks wf, direct Update", justify="right")
    table.add_column("bare Temporal", justify="right")
    table.add_column("Blocks / bare", justify="right")
    table.add_column("target", justify="right")

    def row(label: str, cell: Any, ratio: str = "", target: str = "") -> None:
        table.add_row(label, *(cell(side) for side in sides), ratio, target)

    row(
        "decide+complete runs/s",
        lambda s: f"{s['rps']:.1f}",
        f"{ratios['rps']:.2f}",
        f">= {TARGET_RPS_RATIO} {_ok(ratios['rps_met'])}",
    )
    row(
        "approve -> completed p50 ms",
        lambda s: f"{s['approve_to_completion_ms']['p50']:.1f}",
        f"{ratios['p50']:.2f}",
        f"<= {TARGET_P50_RATIO} {_ok(ratios['p50_met'])}",
    )
    row(
        "approve -> completed p99 ms",
        lambda s: f"{s['approve_to_completion_ms']['p99']:.1f}",
        f"{ratios['p99']:.2f}",
    )
    row("approve acknowledged p50 ms", lambda s: f"{s['approve_ack_ms']['p50']:.1f}")
    for part in ("python", "postgres", "temporal"):
        row(f"CPU ms per run: {part}", lambda s, part=part: _cpu(s, "decide_cpu", part))
    row("machine CPU busy %", lambda s: f"{s['decide_cpu']['machine_busy_pct']:.0f}")
    row(
        "start runs/s (context)",
        lambda s: f"{s['start_rps']:.1f}",
        f"{blocks['start_rps'] / bare['start_rps']:.2f}",
    )
    console.print(table)

    unloaded = approval.get("unloaded")
    if unloaded:
        table = Table(title=f"Unloaded latency: {unloaded['blocks']['runs']} runs, one in flight")
        for column in ("metric", "Blocks (HTTP API)", "bare Temporal", "Blocks / bare"):
            table.add_column(column, justify="right" if column != "metric" else "left")
        ub, ut = unloaded["blocks"], unloaded["bare"]
        for pct in ("p50", "p99"):
            b, t = ub["approve_to_completion_ms"][pct], ut["approve_to_completion_ms"][pct]
            table.add_row(f"approve -> completed {pct} ms", f"{b:.1f}", f"{t:.1f}", f"{b / t:.2f}")
        table.add_row(
            "start p50 ms (context)",
            f"{ub['start_latency_ms']['p50']:.1f}",
            f"{ut['start_latency_ms']['p50']:.1f}",
            f"{ub['start_latency_ms']['p50'] / ut['start_latency_ms']['p50']:.2f}",
        )
        console.print(table)

    audit = results["audit"]
    table = Table(title="Audit append: one event per transaction, one organization")
    for column in (
        "writers",
        "Blocks ev/s",
        "plain ev/s",
        "Blocks / plain",
        "target",
        "p50 / p99 ms Blocks",
        "p50 / p99 ms plain",
        "CPU ms/ev py+pg Blocks",
        "CPU ms/ev py+pg plain",
        "busy % B / p",
    ):
        table.add_column(column, justify="right")
    for level in audit["levels"]:
        b, p = level["blocks"], level["plain"]
        table.add_row(
            str(level["writers"]),
            f"{b['events_per_second']:.0f}",
            f"{p['events_per_second']:.0f}",
            f"{level['ratio']:.2f}",
            f">= {TARGET_AUDIT_RATIO} {_ok(level['ratio_met'])}",
            f"{b['append_latency_ms']['p50']:.2f} / {b['append_latency_ms']['p99']:.2f}",
            f"{p['append_latency_ms']['p50']:.2f} / {p['append_latency_ms']['p99']:.2f}",
            f"{_cpu(b, 'cpu', 'python')} + {_cpu(b, 'cpu', 'postgres')}",
            f"{_cpu(p, 'cpu', 'python')} + {_cpu(p, 'cpu', 'postgres')}",
            f"{b['cpu']['machine_busy_pct']:.0f} / {p['cpu']['machine_busy_pct']:.0f}",
        )
    console.print(table)
    chain = "[green]linear and linked[/]" if audit["chain_verified"] else "[red]BROKEN[/]"
    console.print(f"audit chain after the run: {audit['events_in_chain']} events, {chain}")
    verify = results.get("verify")
    if verify:
        console.print(
            f"offline verify (verify_export): {verify['events']} events in {verify['seconds']} s, "
            f"{verify['events_per_second']:,} events/s"
        )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    results = asyncio.run(bench(args))
    render(results)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"results written to {out} ({results['wall_seconds']}s in all)")


if __name__ == "__main__":
    main()
