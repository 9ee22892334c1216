"""CPU accounting per phase: this Python process, the PostgreSQL server, the Temporal server."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil


def tree_cpu_seconds(root: psutil.Process | None) -> float:
    """CPU seconds of a process, its live descendants and the children it has reaped."""
    if root is None:
        return 0.0
    total = 0.0
    try:
        times = root.cpu_times()
        total += times.user + times.system + times.children_user + times.children_system
        children = root.children(recursive=True)
    except psutil.Error:
        return total
    for child in children:
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


def _machine_busy_and_total() -> tuple[float, float]:
    times = psutil.cpu_times()
    total = sum(times)
    idle = times.idle + getattr(times, "iowait", 0.0)
    return total - idle, total


@dataclass
class CpuUse:
    """CPU seconds spent during one phase, and how busy the whole machine was (0..1)."""

    wall: float = 0.0
    python: float = 0.0
    postgres: float = 0.0
    temporal: float = 0.0
    machine_busy: float = 0.0

    def __add__(self, other: CpuUse) -> CpuUse:
        wall = self.wall + other.wall
        busy = (
            (self.machine_busy * self.wall + other.machine_busy * other.wall) / wall
            if wall
            else 0.0
        )
        return CpuUse(
            wall=wall,
            python=self.python + other.python,
            postgres=self.postgres + other.postgres,
            temporal=self.temporal + other.temporal,
            machine_busy=busy,
        )

    def per_item_ms(self, items: int) -> dict[str, float]:
        return {
            "python": round(self.python * 1000 / items, 3),
            "postgres": round(self.postgres * 1000 / items, 3),
            "temporal": round(self.temporal * 1000 / items, 3),
        }

    def as_dict(self, items: int) -> dict[str, Any]:
        return {
            "cpu_ms_per_item": self.per_item_ms(items),
            "machine_busy_pct": round(self.machine_busy * 100, 1),
            "cores": os.cpu_count(),
        }


@dataclass
class CpuProbe:
    """Finds the servers once (PostgreSQL by its postmaster.pid, Temporal as our child)."""

    pgdata: Path
    _postgres: psutil.Process | None = field(default=None, init=False)
    _temporal: psutil.Process | None = field(default=None, init=False)

    def locate(self) -> None:
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
            self._postgres = psutil.Process(pid)
        except (OSError, ValueError, IndexError, psutil.Error):
            self._postgres = None
        me = psutil.Process()
        self._temporal = next(
            (c for c in me.children() if "temporal" in c.name().lower()),
            None,
        )

    @contextmanager
    def measure(self) -> Iterator[CpuUse]:
        use = CpuUse()
        began = time.perf_counter()
        python0 = time.process_time()
        postgres0 = tree_cpu_seconds(self._postgres)
        temporal0 = tree_cpu_seconds(self._temporal)
        busy0, total0 = _machine_busy_and_total()
        try:
            yield use
        finally:
            busy1, total1 = _machine_busy_and_total()
            use.wall = time.perf_counter() - began
            use.python = time.process_time() - python0
            use.postgres = tree_cpu_seconds(self._postgres) - postgres0
            use.temporal = tree_cpu_seconds(self._temporal) - temporal0
            use.machine_busy = (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0
