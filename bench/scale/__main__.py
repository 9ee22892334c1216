"""`python -m bench.scale`: Blocks at scale as deployed (separate processes, driven over HTTP)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter
from typing import Any

import httpx

from bench.scale.audit_load import audit_section
from bench.scale.load import Tally, wait_for_catalogue
from bench.scale.report import console, markdown, render
from bench.scale.scenarios import Bench, scenario_a, scenario_b
from bench.scale.servers import Deployment, deployed
from blocks.infra.db import create_engine
from tests.support import Org, make_org

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "results" / "scale.json"
_CATALOGUE_WITHIN = 120.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000, help="scenario A: runs in one org")
    parser.add_argument("--orgs", type=int, default=10, help="scenario B: organizations (0 skips)")
    parser.add_argument("--runs-per-org", type=int, default=1_000, help="scenario B: runs each")
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight")
    parser.add_argument("--requests", type=int, default=50, help="sequential GETs per read route")
    parser.add_argument("--slice", type=int, default=1_000, help="starts per reported slice")
    parser.add_argument(
        "--audit-events", type=int, default=100_000, help="events in A's log for the SLA report"
    )
    parser.add_argument("--sla-requests", type=int, default=10, help="SLA report requests")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write JSON")
    parser.add_argument(
        "--hold",
        type=float,
        default=0.0,
        help="seconds to keep everything running at the end, for diagnosis (Ctrl-C ends it);"
        " the addresses and keys are written to hold.json in the temporary directory",
    )
    args = parser.parse_args(argv)
    if min(args.runs, args.concurrency, args.requests, args.slice, args.sla_requests) < 1:
        parser.error("--runs, --concurrency, --requests, --slice, --sla-requests must be >= 1")
    if args.orgs < 0 or args.runs_per_org < 1:
        parser.error("--orgs must be >= 0 and --runs-per-org >= 1")
    return args


def _phase(message: str) -> None:
    console.log(f"[bold cyan]{message}")


def _keys(org: Org) -> dict[str, Any]:
    return {"id": str(org.id), **{name: m.key for name, m in org.members.items()}}


async def _run(
    deployment: Deployment, args: argparse.Namespace, handles: dict[str, Any]
) -> dict[str, Any]:
    url = deployment.credentials.url()
    # The bench's own pool: org setup, counts and the audit top-up (not the API's or worker's).
    engine = create_engine(url, pool_size=4)
    limits = httpx.Limits(max_connections=args.concurrency + 10)
    tally = Tally()
    watch = deployment.watch
    try:
        async with httpx.AsyncClient(
            base_url=deployment.api_url, timeout=300, limits=limits
        ) as http:
            probe = await make_org(engine)
            await wait_for_catalogue(http, probe["operator"], _CATALOGUE_WITHIN)
            rss_idle = watch.rss_mb()
            bench = Bench(http, engine, watch, tally, args.concurrency, args.requests, args.slice)
            _phase(
                f"scenario A: {args.runs} runs in one organization, {args.concurrency} in flight"
            )
            a, org_a = await scenario_a(bench, args.runs)
            handles["org_a"] = _keys(org_a)
            _phase(f"audit: SLA report and export over >= {args.audit_events} events")
            audit = await audit_section(
                engine,
                http,
                org_a,
                target_events=args.audit_events,
                sla_requests=args.sla_requests,
                watch=watch,
                tally=tally,
            )
            b: dict[str, Any] | None = None
            if args.orgs:
                _phase(f"scenario B: {args.orgs} organizations of {args.runs_per_org} runs")
                b, orgs_b = await scenario_b(bench, args.orgs, args.runs_per_org)
                handles["orgs_b"] = [_keys(org) for org in orgs_b]
            watch.alive()
    finally:
        await engine.dispose()
    return {
        "rss_mb_idle": rss_idle,
        "rss_mb_peak": dict(watch.peak_mb),
        "scenario_a": a,
        "audit": audit,
        "scenario_b": b,
        "errors": tally.as_dict(),
    }


def _hold(root: Path, handles: dict[str, Any], seconds: float) -> None:
    """Keep every server up for a while, for EXPLAIN, profiles and requests by hand."""
    path = root / "hold.json"
    path.write_text(json.dumps(handles, indent=2) + "\n")
    _phase(f"holding for {seconds:.0f}s (Ctrl-C to stop now); addresses and keys in {path}")
    with contextlib.suppress(KeyboardInterrupt):
        time.sleep(seconds)


def _stop_on_sigterm(signum: int, _: object) -> None:
    """A SIGTERM unwinds like Ctrl-C, so every server is stopped and the directory removed."""
    console.log(f"[bold red]signal {signum}: stopping")
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    began = perf_counter()
    with tempfile.TemporaryDirectory(prefix="blocks-scale-") as tmp:
        _phase("starting PostgreSQL, Temporal (SQLite file store), `blocks api`, `blocks worker`")
        with deployed(Path(tmp)) as deployment:
            handles: dict[str, Any] = {
                "api_url": deployment.api_url,
                "database_url": deployment.credentials.url(),
                "owner_database_url": deployment.credentials.url(owner=True),
                "temporal_address": deployment.temporal_address,
            }
            measured = asyncio.run(_run(deployment, args, handles))
            measured["temporal_warnings"] = deployment.temporal_warnings()
            if args.hold > 0:
                _hold(Path(tmp), handles, args.hold)
        _phase("stopped every server; removing the temporary directory")
    results = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(perf_counter() - began, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "params": {
            k: getattr(args, k)
            for k in (
                "runs",
                "orgs",
                "runs_per_org",
                "concurrency",
                "requests",
                "slice",
                "audit_events",
                "sla_requests",
            )
        },
        **measured,
    }
    render(results)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results))
    console.print(f"results written to {out} and {out.with_suffix('.md')}")
    ok = results["scenario_a"]["batch_ok"] and not results["errors"]["non_2xx"]
    if not ok:
        raise SystemExit("the batch did not complete without error: see `errors` in the JSON")


if __name__ == "__main__":
    main()
