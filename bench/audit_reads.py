"""`python -m bench.audit_reads`: the SLA report and the JSON Lines export over a large audit log.

Sets up once (a directory that can be kept with `--dir` and reused): an embedded PostgreSQL, a
Temporal dev server and `blocks worker` + `blocks api` processes; a few real expense runs are
started and decided, then the log is topped up to `--events` by cloning one of them
(`bench.scale.audit_load.top_up`). Then, in rounds, each API under test is started as a fresh
`blocks api` process and measured alone: the SLA report (the whole report, following
`next_cursor` when the API pages it, at the API's default page size and at its largest), the
API's peak RSS while it answers (sampled every 10 ms), and the export's MB/s.

`--before DIR` adds a second API started from another copy of the `blocks` package (DIR holds
`blocks/`), alternating with this tree's (or `--after DIR`'s) in every round, so a change is
measured against what it replaces in the same sitting; the two must answer with the same rows and
the same export bytes. Compare RSS growth above idle (`*_growth_mb`) when the trees differ in
more than the change.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from statistics import median
from time import perf_counter
from typing import Any

import httpx
import psutil

from bench.scale.audit_load import top_up
from bench.scale.load import Tally, count_actions, decide_run, start_run, wait_for_catalogue
from bench.scale.servers import BenchError, wait_ready
from blocks.infra.db import create_engine
from blocks.infra.embedded.postgres import EmbeddedPostgres
from blocks.infra.embedded.temporal import EmbeddedTemporal
from blocks.infra.migrate import upgrade_database
from tests.support import (
    GENEROUS_RATE_LIMITS,
    MASTER_KEYS,
    PAYLOAD_KEYS,
    SIGNING_KEY,
    Member,
    blocks_process_env,
    free_port,
    make_org,
    running_process,
)

TASK_QUEUE = "blocks-audit-reads"
_MB = 1_000_000
_MIB = 1024 * 1024
_SAMPLE = 0.01


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_reads", description=__doc__)
    parser.add_argument("--dir", type=Path, help="keep the database here and reuse it")
    parser.add_argument("--events", type=int, default=100_000, help="audit events in the log")
    parser.add_argument("--runs", type=int, default=10, help="real runs the clones are made of")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (APIs alternate in each)")
    parser.add_argument("--sla-requests", type=int, default=3, help="whole reports per round")
    parser.add_argument("--exports", type=int, default=2, help="exports per round")
    parser.add_argument("--before", type=Path, help="a directory holding another `blocks/`")
    parser.add_argument("--after", type=Path, help="measure this `blocks/` instead of the tree's")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    return parser.parse_args(argv)


class PeakRss:
    """Samples one process's RSS every 10 ms in a thread; `peak` is the highest seen (MiB)."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def now(self) -> float:
        return float(self._process.memory_info().rss) / _MIB

    def _sample(self) -> None:
        while not self._stop.wait(_SAMPLE):
            self.peak = max(self.peak, self.now())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return round(max(self.peak, self.now()), 1)


@contextmanager
def api_process(env: dict[str, str], root: Path, tree: Path | None) -> Iterator[tuple[str, int]]:
    """`blocks api` on a free port, from `tree` (a directory holding `blocks/`) if given."""
    port = free_port()
    env = {**env, "BLOCKS_API_PORT": str(port)}
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")]).rstrip(":")
    args = [sys.executable, "-m", "blocks.cli", "api"]
    with running_process(args, env=env, cwd=root) as process:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, [process])
        yield url, process.pid


async def _walk_sla(http: httpx.AsyncClient, auditor: Member, limit: int | None) -> dict[str, Any]:
    """The whole report: the first answer, then each `next_cursor` until there is none."""
    params: dict[str, str] = {} if limit is None else {"limit": str(limit)}
    rows: list[dict[str, Any]] = []
    pages = size = 0
    first: dict[str, Any] | None = None
    first_ms = 0.0
    began = perf_counter()
    while True:
        response = await http.get("/v1/reports/sla", params=params, headers=auditor.headers)
        if response.status_code != 200:
            raise BenchError(f"SLA report: {response.status_code} {response.text[:300]}")
        body = response.json()
        pages += 1
        size += len(response.content)
        if first is None:
            first, first_ms = body, (perf_counter() - began) * 1000
        rows.extend(body["steps"])
        cursor = body.get("next_cursor")
        if not cursor:
            break
        params = {**params, "cursor": cursor}
    assert first is not None
    return {
        "ms": (perf_counter() - began) * 1000,
        "first_page_ms": first_ms,
        "pages": pages,
        "mb": size / _MB,
        "rows": rows,
        "summary": first["summary"],
        "overall": first["overall"],
    }


async def _export(http: httpx.AsyncClient, auditor: Member) -> dict[str, Any]:
    chunks: list[bytes] = []
    began = perf_counter()
    async with http.stream(
        "GET", "/v1/audit/export", params={"format": "jsonl"}, headers=auditor.headers
    ) as response:
        if response.status_code != 200:
            await response.aread()
            raise BenchError(f"export: {response.status_code} {response.text[:300]}")
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
    seconds = perf_counter() - began
    body = b"".join(chunks)
    return {"seconds": seconds, "mb": len(body) / _MB, "body": body}


async def measure(url: str, pid: int, auditor: Member, args: argparse.Namespace) -> dict[str, Any]:
    """One fresh API process: SLA reports (default page size, then the largest), export."""
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        warm = await http.get("/v1/members", headers=auditor.headers)
        if warm.status_code != 200:
            raise BenchError(f"/v1/members: {warm.status_code} {warm.text[:300]}")
        idle = PeakRss(pid).stop()
        watch = PeakRss(pid)
        default = [await _walk_sla(http, auditor, None) for _ in range(args.sla_requests)]
        peak_default = watch.stop()
        watch = PeakRss(pid)
        largest = [await _walk_sla(http, auditor, 10_000) for _ in range(args.sla_requests)]
        peak_largest = watch.stop()
        watch = PeakRss(pid)
        exports = [await _export(http, auditor) for _ in range(args.exports)]
        peak_export = watch.stop()
    return {
        "rss_idle_mb": idle,
        "sla_default": default,
        "sla_default_peak_mb": peak_default,
        "sla_largest": largest,
        "sla_largest_peak_mb": peak_largest,
        "exports": exports,
        "export_peak_mb": peak_export,
    }


def _summary(name: str, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    def med(key: str, field: str) -> float:
        return round(median(x[field] for r in rounds for x in r[key]), 1)

    exports = [x for r in rounds for x in r["exports"]]
    return {
        "api": name,
        "rss_idle_mb": median(r["rss_idle_mb"] for r in rounds),
        "sla_default_ms": med("sla_default", "ms"),
        "sla_default_first_page_ms": med("sla_default", "first_page_ms"),
        "sla_default_pages": rounds[0]["sla_default"][0]["pages"],
        "sla_default_mb": round(rounds[0]["sla_default"][0]["mb"], 2),
        "sla_default_peak_mb": max(r["sla_default_peak_mb"] for r in rounds),
        # Above the process's idle RSS: what answering took (trees may differ when idle).
        "sla_default_growth_mb": max(r["sla_default_peak_mb"] - r["rss_idle_mb"] for r in rounds),
        "sla_largest_growth_mb": max(r["sla_largest_peak_mb"] - r["rss_idle_mb"] for r in rounds),
        "sla_largest_ms": med("sla_largest", "ms"),
        "sla_largest_pages": rounds[0]["sla_largest"][0]["pages"],
        "sla_largest_peak_mb": max(r["sla_largest_peak_mb"] for r in rounds),
        "rows": len(rounds[0]["sla_default"][0]["rows"]),
        "export_mb": round(exports[0]["mb"], 2),
        "export_mb_per_s": round(median(x["mb"] / x["seconds"] for x in exports), 2),
        "export_mb_per_s_range": [
            round(min(x["mb"] / x["seconds"] for x in exports), 2),
            round(max(x["mb"] / x["seconds"] for x in exports), 2),
        ],
        "export_peak_mb": max(r["export_peak_mb"] for r in rounds),
    }


def _same_answers(a: dict[str, Any], b: dict[str, Any]) -> None:
    """The two APIs must agree: the same rows and summaries, the same export after its header."""
    for key in ("rows", "summary", "overall"):
        if a["sla_default"][0][key] != b["sla_default"][0][key]:
            raise BenchError(f"the SLA reports differ in {key}")
        if a["sla_largest"][0][key] != b["sla_default"][0][key]:
            raise BenchError(f"the SLA report pages differ in {key}")
    first, second = a["exports"][0]["body"], b["exports"][0]["body"]
    if first.split(b"\n", 1)[1] != second.split(b"\n", 1)[1]:
        raise BenchError("the exports differ after their header line")


async def _setup(url: str, temporal: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """An org with `--runs` decided runs, its log topped up to `--events`; its keys."""
    engine = create_engine(url, pool_size=4)
    tally = Tally()
    try:
        org = await make_org(engine)
        env = blocks_process_env(url, temporal, TASK_QUEUE, **_keys())
        with ExitStack() as stack:
            worker = [
                sys.executable,
                "-m",
                "blocks.cli",
                "worker",
                "--workflows",
                "blocks_examples",
            ]
            stack.enter_context(running_process(worker, env=env, cwd=root))
            api, _ = stack.enter_context(api_process(env, root, None))
            async with httpx.AsyncClient(base_url=api, timeout=120) as http:
                await wait_for_catalogue(http, org["operator"], 120)
                runs = [await start_run(http, org["operator"], tally) for _ in range(args.runs)]
                for run in runs:
                    if run is None or await decide_run(http, run, org["approver"], tally) is None:
                        raise BenchError(f"a run did not start or decide: {tally.as_dict()}")
                deadline = time.monotonic() + 120
                while await count_actions(engine, org.id, "run.completed") < args.runs:
                    if time.monotonic() > deadline:
                        raise BenchError("the runs did not complete")
                    await asyncio.sleep(0.5)
        have = await count_actions(engine, org.id, None)
        await top_up(engine, org.id, args.events - have)
        events = await count_actions(engine, org.id, None)
    finally:
        await engine.dispose()
    auditor = org["auditor"]
    return {
        "org": str(org.id),
        "auditor": {"email": auditor.email, "key": auditor.key},
        "events": events,
    }


def _keys(signing: str = SIGNING_KEY) -> dict[str, str]:
    return {
        "BLOCKS_AUDIT_SIGNING_KEY": signing,
        **{f"BLOCKS_{name.upper()}": value for name, value in GENEROUS_RATE_LIMITS.items()},
    }


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    state_file = root / "state.json"
    with ExitStack() as stack:
        # The same port each time: a server still up on this directory is reused as it is.
        port_file = root / "pgport"
        port = int(port_file.read_text()) if port_file.exists() else free_port()
        port_file.write_text(str(port))
        postgres = EmbeddedPostgres(root / "pg", port=port)
        credentials = postgres.start()
        stack.callback(postgres.stop)
        temporal = EmbeddedTemporal(root / "temporal", port=free_port(), ui_port=free_port())
        temporal.start()
        stack.callback(temporal.stop)
        url = credentials.url()
        if not state_file.exists():
            upgrade_database(credentials.url(owner=True))
            state = asyncio.run(_setup(url, temporal.address, root, args))
            # The keys the data was written with, for the next invocation on this directory.
            state["keys"] = {"master": MASTER_KEYS, "payload": PAYLOAD_KEYS, "signing": SIGNING_KEY}
            state_file.write_text(json.dumps(state))
        state = json.loads(state_file.read_text())
        auditor = Member(uuid.UUID(int=0), state["auditor"]["email"], state["auditor"]["key"])
        env = blocks_process_env(
            url,
            temporal.address,
            TASK_QUEUE,
            **_keys(state["keys"]["signing"]),
            BLOCKS_MASTER_KEYS=state["keys"]["master"],
            BLOCKS_PAYLOAD_KEYS=state["keys"]["payload"],
        )
        after = None if args.after is None else args.after.resolve()
        trees: list[tuple[str, Path | None]] = [("this tree" if after is None else "after", after)]
        if args.before is not None:
            trees.insert(0, ("before", args.before.resolve()))
        results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in trees}
        for number in range(args.rounds):
            for name, tree in trees if number % 2 == 0 else list(reversed(trees)):
                with api_process(env, root, tree) as (api, pid):
                    measured = asyncio.run(measure(api, pid, auditor, args))
                results[name].append(measured)
                print(f"round {number + 1} {name}: {json.dumps(_summary(name, [measured]))}")
        if args.before is not None:
            _same_answers(results["before"][0], results[trees[-1][0]][0])
            print("the APIs agree: the same SLA rows and summaries, the same export bytes")
    return {
        "events": state["events"],
        "summaries": [_summary(name, rounds) for name, rounds in results.items()],
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        out = run(args, args.dir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="blocks-audit-reads-") as tmp:
            out = run(args, Path(tmp))
    text = json.dumps(out, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
