"""The deployment under test: PostgreSQL, Temporal on its file store, `blocks api` and `blocks worker`."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.cpu import tree_cpu_seconds
from blocks.infra.embedded.postgres import EmbeddedPostgres, PostgresCredentials
from blocks.infra.embedded.temporal import EmbeddedTemporal
from blocks.infra.migrate import upgrade_database
from tests.support import (
    GENEROUS_RATE_LIMITS,
    SIGNING_KEY,
    blocks_process_env,
    free_port,
    running_process,
)

TASK_QUEUE = "blocks-scale"
RSS_ROLES = ("api", "worker", "temporal")  # PostgreSQL's RSS is mostly shared buffers: left out
CPU_ROLES = ("api", "worker", "temporal", "postgres", "bench")
_READY_WITHIN = 120.0
_SAMPLE_SECONDS = 1.0
_MB = 1024 * 1024
_LOG_MESSAGE = re.compile(r'level=(?:WARN|ERROR) msg="([^"]*)"')
_LOG_METHOD = re.compile(r"method=/temporal\.api\.workflowservice\.v1\.WorkflowService/(\w+)")


class BenchError(RuntimeError):
    """A request, run or process did not behave as the benchmark expects: the numbers are void."""


@dataclass
class Phase:
    """Wall time, CPU seconds per process and how busy the machine was (0..1) during a phase."""

    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    machine_busy: float = 0.0

    def as_dict(self, items: int) -> dict[str, Any]:
        return {
            "seconds": round(self.wall, 2),
            "cpu_ms_per_item": {k: round(v * 1000 / max(items, 1), 2) for k, v in self.cpu.items()},
            "machine_busy_pct": round(self.machine_busy * 100, 1),
        }


def _busy_and_total() -> tuple[float, float]:
    times = psutil.cpu_times()
    total = sum(times)
    return total - times.idle - getattr(times, "iowait", 0.0), total


class ProcessWatch:
    """Samples the servers' RSS every second (keeping each peak) and accounts CPU per phase."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._processes = {role: psutil.Process(pid) for role, pid in pids.items()}
        self.peak_mb = dict.fromkeys(RSS_ROLES, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def rss_mb(self) -> dict[str, float]:
        """Resident memory now, in MiB, of the API, the worker and the Temporal server."""
        found: dict[str, float] = {}
        for role in RSS_ROLES:
            try:
                found[role] = round(self._processes[role].memory_info().rss / _MB, 1)
            except psutil.Error:
                found[role] = 0.0
        return found

    def alive(self) -> None:
        """Raise if a server process has died: every later number would be meaningless."""
        for role, process in self._processes.items():
            if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
                raise BenchError(f"the {role} process died")

    def _sample(self) -> None:
        while not self._stop.wait(_SAMPLE_SECONDS):
            for role, rss in self.rss_mb().items():
                self.peak_mb[role] = max(self.peak_mb[role], rss)

    def _cpu(self) -> dict[str, float]:
        seconds = {role: tree_cpu_seconds(p) for role, p in self._processes.items()}
        seconds["bench"] = time.process_time()
        return seconds

    @contextmanager
    def phase(self) -> Iterator[Phase]:
        phase = Phase()
        began, cpu0, (busy0, total0) = time.perf_counter(), self._cpu(), _busy_and_total()
        try:
            yield phase
        finally:
            cpu1, (busy1, total1) = self._cpu(), _busy_and_total()
            phase.wall = time.perf_counter() - began
            phase.cpu = {role: cpu1[role] - cpu0[role] for role in CPU_ROLES}
            phase.machine_busy = (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0


@dataclass(frozen=True)
class Deployment:
    credentials: PostgresCredentials
    api_url: str
    temporal_address: str
    temporal_log: Path
    watch: ProcessWatch

    def temporal_warnings(self) -> dict[str, int]:
        """The Temporal server's warnings and errors by message (and slow calls by method): how
        its SQLite store coped, e.g. "context deadline exceeded" on workflow updates."""
        counts: Counter[str] = Counter()
        with self.temporal_log.open(errors="replace") as log:
            for line in log:
                found = _LOG_MESSAGE.search(line)
                if found is None:
                    continue
                method = _LOG_METHOD.search(line)
                key = found.group(1) + (f" {method.group(1)}" if method else "")
                counts[key] += 1
        return dict(counts.most_common())


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "blocks.cli", *args]


def wait_ready(url: str, processes: Sequence[subprocess.Popen[bytes]] = ()) -> None:
    """Until `url`'s /readyz answers 200; a BenchError if one of `processes` exits first."""
    deadline = time.monotonic() + _READY_WITHIN
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise BenchError(f"{process.args} exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise BenchError(f"the API at {url} was not ready within {_READY_WITHIN:.0f}s")


@contextmanager
def deployed(root: Path) -> Iterator[Deployment]:
    """Everything started as an operator would, under `root`; all of it stopped on the way out.

    Start this from the main thread: the Temporal server is tied to the thread that forks it."""
    with ExitStack() as stack:
        postgres = EmbeddedPostgres(root / "pg", port=free_port())
        credentials = postgres.start()
        stack.callback(postgres.stop)
        temporal = EmbeddedTemporal(root / "temporal", port=free_port(), ui_port=free_port())
        temporal_process = temporal.start()  # the SQLite file store, search attributes flagged
        stack.callback(temporal.stop)
        api_port = free_port()
        env = blocks_process_env(
            credentials.url(),
            temporal.address,
            TASK_QUEUE,
            BLOCKS_API_PORT=str(api_port),
            BLOCKS_AUDIT_SIGNING_KEY=SIGNING_KEY,
            BLOCKS_DATA_DIR=str(root / "data"),
            # One client address sends every request: a deployment would see many.
            **{f"BLOCKS_{name.upper()}": value for name, value in GENEROUS_RATE_LIMITS.items()},
        )
        # The search attributes came with the server's flags; the checkpoint schedule is left
        # out (`blocks migrate` would add it): a signed checkpoint every 15 minutes is noise here.
        upgrade_database(credentials.url(owner=True))
        api = stack.enter_context(running_process(_cli("api"), env=env, cwd=root))
        worker = stack.enter_context(
            running_process(_cli("worker", "--workflows", "blocks_examples"), env=env, cwd=root)
        )
        api_url = f"http://127.0.0.1:{api_port}"
        wait_ready(api_url, [api, worker])
        postmaster = int((postgres.pgdata / "postmaster.pid").read_text().split()[0])
        watch = ProcessWatch(
            {
                "api": api.pid,
                "worker": worker.pid,
                "temporal": temporal_process.pid,
                "postgres": postmaster,
            }
        )
        watch.start()
        stack.callback(watch.stop)
        yield Deployment(
            credentials, api_url, temporal.address, temporal.data_dir / "temporal.log", watch
        )
