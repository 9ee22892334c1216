"""Small statistics helpers: percentiles in milliseconds and bounded-concurrency fan-out."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Latency:
    """Percentiles of a sample of durations, in milliseconds."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, seconds: list[float]) -> Latency:
        if not seconds:
            raise ValueError("no samples")
        ordered = sorted(s * 1000 for s in seconds)
        return cls(
            count=len(ordered),
            p50=percentile(ordered, 50),
            p90=percentile(ordered, 90),
            p99=percentile(ordered, 99),
            max=ordered[-1],
            mean=sum(ordered) / len(ordered),
        )

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


def percentile(ordered: list[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on a sorted list."""
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def in_flight(
    items: Iterable[T], concurrency: int, call: Callable[[T], Awaitable[R]]
) -> list[R]:
    """Run `call` on every item with at most `concurrency` calls in flight; results in order."""
    pending = list(enumerate(items))
    results: dict[int, R] = {}
    queue = iter(pending)

    async def lane() -> None:
        for index, item in queue:
            results[index] = await call(item)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, len(pending))):
            group.create_task(lane())
    return [results[i] for i in range(len(pending))]
