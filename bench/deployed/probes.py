"""CPU seconds and memory of every process of the run, read from the driver with psutil.

CPU is a snapshot of each process's user + system seconds (PostgreSQL: the postmaster, its live
backends and the backends it has reaped); phases subtract two snapshots. Memory is sampled by a
background thread: RSS every tick for single processes; for PostgreSQL the PSS sum of the
postmaster and its children (PSS shares each shared page out among the processes mapping it, so
shared buffers count once instead of once per backend) every `tree_every` ticks, as reading
`smaps_rollup` costs about 0.7 ms a process.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import psutil

from bench.cpu import tree_cpu_seconds

DRIVER = "driver"
MB = 1024 * 1024


@dataclass(frozen=True)
class Watched:
    """A process to account for; `tree` sums it with its children (PostgreSQL)."""

    name: str
    pid: int
    tree: bool = False


def _children(pid: int) -> list[int]:
    """Direct children from /proc (one small read, where psutil scans every process)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except (OSError, ValueError):
        return []


def _pss_tree_mb(pid: int) -> float:
    total = 0
    for member in (pid, *_children(pid)):
        try:
            total += psutil.Process(member).memory_full_info().pss
        except psutil.Error:
            continue
    return total / MB


def _rss_mb(process: psutil.Process) -> float:
    try:
        return float(process.memory_info().rss) / MB
    except psutil.Error:
        return 0.0


@dataclass
class ProcessProbe:
    """Per-process CPU snapshots on demand, and a sampler thread keeping each one's peak memory."""

    watched: list[Watched]
    interval: float = 0.1
    tree_every: int = 10
    peaks_mb: dict[str, float] = field(default_factory=dict)
    _processes: dict[str, psutil.Process] = field(default_factory=dict, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._processes = {w.name: psutil.Process(w.pid) for w in self.watched}
        self._processes[DRIVER] = psutil.Process(os.getpid())

    @property
    def names(self) -> list[str]:
        return [*(w.name for w in self.watched), DRIVER]

    def cpu_seconds(self) -> dict[str, float]:
        """User + system seconds so far, per process (the driver without its children)."""
        out: dict[str, float] = {}
        for name, process in self._processes.items():
            if name == DRIVER:
                times = process.cpu_times()
                out[name] = times.user + times.system
            else:
                out[name] = tree_cpu_seconds(process)
        return out

    def memory_mb(self) -> dict[str, float]:
        """Memory now: RSS, or PSS summed over the tree where `tree` is set."""
        out: dict[str, float] = {}
        for w in self.watched:
            process = self._processes[w.name]
            out[w.name] = _pss_tree_mb(w.pid) if w.tree else _rss_mb(process)
        out[DRIVER] = _rss_mb(self._processes[DRIVER])
        return out

    def _sample(self, tick: int) -> None:
        for w in [*self.watched, Watched(DRIVER, os.getpid())]:
            if w.tree:
                if tick % self.tree_every:
                    continue
                value = _pss_tree_mb(w.pid)
            else:
                value = _rss_mb(self._processes[w.name])
            if value > self.peaks_mb.get(w.name, 0.0):
                self.peaks_mb[w.name] = value

    def _loop(self) -> None:
        tick = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            self._sample(tick)
            tick += 1
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def start_sampling(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="memory-sampler", daemon=True)
        self._thread.start()

    def stop_sampling(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each process spent between two snapshots."""
    return {name: max(0.0, after[name] - before.get(name, 0.0)) for name in after}
