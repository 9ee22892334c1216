"""Pure pieces of the report: percentiles, medians with their range, ratios and the issue's targets."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.stats import percentile

RSS_TARGET_MB = 125.0  # peak RSS of the Blocks API and of the Blocks worker, each


def percentiles(ms: Sequence[float]) -> dict[str, float]:
    """p50, p95 and p99 of a sample (numpy's default interpolation)."""
    if not ms:
        raise ValueError("no samples")
    ordered = sorted(ms)
    return {f"p{p}": percentile(ordered, p) for p in (50, 95, 99)}


@dataclass(frozen=True)
class Spread:
    """The median of one figure over the rounds, with the lowest and highest round."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("no values")
        return cls(statistics.median(values), min(values), max(values))

    @classmethod
    def from_dict(cls, stored: Mapping[str, float]) -> Spread:
        """Back from `as_dict` (the JSON document)."""
        return cls(stored["median"], stored["min"], stored["max"])

    def as_dict(self) -> dict[str, float]:
        return {
            "median": round(self.median, 2),
            "min": round(self.low, 2),
            "max": round(self.high, 2),
        }


def spreads(rounds: Sequence[Mapping[str, float]]) -> dict[str, Spread]:
    """Each figure's spread over rounds that all report the same figures."""
    return {key: Spread.of([r[key] for r in rounds]) for key in rounds[0]} if rounds else {}


def ratio(value: float | None, baseline: float | None) -> float | None:
    """value / baseline, or None when either is missing or the baseline is zero."""
    if value is None or baseline is None or baseline == 0:
        return None
    return value / baseline


def digits_for(value: float) -> int:
    """Decimals worth showing: none from 100 (1,234 ms) or for zero, 1 from 1 (38.2), else 2."""
    if value == 0 or abs(value) >= 100:
        return 0
    return 1 if abs(value) >= 1 else 2


def fmt_number(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits_for(value)}f}"


def fmt_spread(spread: Spread | None, rounds: int) -> str:
    """`38.2 (36.0-40.1)`; just the value when there was one round."""
    if spread is None:
        return "n/a"
    if rounds <= 1 or spread.low == spread.high:
        return fmt_number(spread.median)
    return f"{fmt_number(spread.median)} ({fmt_number(spread.low)}-{fmt_number(spread.high)})"


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


@dataclass(frozen=True)
class Target:
    """A bound on Blocks ÷ bare Temporal for one figure, from the performance issue."""

    figure: str
    bound: float
    at_least: bool

    def met(self, value: float | None) -> bool:
        if value is None:
            return False
        return value >= self.bound if self.at_least else value <= self.bound

    def describe(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.bound:.2f}x bare"


# Under load: the decide phase's throughput and tail, and the start phase's throughput.
LOADED_TARGETS = {
    t.figure: t
    for t in (
        Target("completions_per_s", 1.0, at_least=True),
        Target("approve_to_result_p99_ms", 1.25, at_least=False),
        Target("starts_per_s", 0.9, at_least=True),
    )
}
# One run at a time: the unloaded approve-to-result latency.
SERIAL_TARGETS = {t.figure: t for t in (Target("approve_to_result_p50_ms", 1.0, at_least=False),)}


def median_cpu(
    per_round: Sequence[Mapping[str, Mapping[str, float]]],
) -> dict[str, dict[str, float]]:
    """Per phase and process, the median over rounds of CPU ms per run."""
    if not per_round:
        return {}
    return {
        phase: {
            name: statistics.median(r[phase][name] for r in per_round)
            for name in per_round[0][phase]
        }
        for phase in per_round[0]
    }
