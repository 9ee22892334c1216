"""The as-deployed benchmark's pure pieces: percentiles, spreads over rounds, ratios and targets."""

from __future__ import annotations

import pytest

from bench.deployed.summary import (
    LOADED_TARGETS,
    SERIAL_TARGETS,
    Spread,
    Target,
    fmt_number,
    fmt_ratio,
    fmt_spread,
    median_cpu,
    percentiles,
    ratio,
    spreads,
)


def test_percentiles_interpolate_between_ranks() -> None:
    sample = [float(v) for v in range(1, 101)]  # 1..100 ms, shuffled order must not matter
    result = percentiles(list(reversed(sample)))
    assert result == {
        "p50": pytest.approx(50.5),
        "p95": pytest.approx(95.05),
        "p99": pytest.approx(99.01),
    }
    assert percentiles([7.0]) == {"p50": 7.0, "p95": 7.0, "p99": 7.0}
    with pytest.raises(ValueError, match="no samples"):
        percentiles([])


def test_spreads_take_the_median_and_range_of_each_figure_over_rounds() -> None:
    rounds = [
        {"rps": 40.0, "p99": 900.0},
        {"rps": 38.0, "p99": 1500.0},
        {"rps": 44.0, "p99": 1000.0},
    ]
    result = spreads(rounds)
    assert result["rps"] == Spread(40.0, 38.0, 44.0)
    assert result["p99"] == Spread(1000.0, 900.0, 1500.0)
    assert Spread.from_dict(result["p99"].as_dict()) == result["p99"]
    assert spreads([]) == {}


def test_formatting_shows_the_range_only_when_there_is_one() -> None:
    assert fmt_spread(Spread(38.24, 36.0, 40.12), rounds=3) == "38.2 (36.0-40.1)"
    assert fmt_spread(Spread(1261.4, 1100.0, 1400.2), rounds=3) == "1,261 (1,100-1,400)"
    assert fmt_spread(Spread(4.123, 4.0, 5.0), rounds=1) == "4.1"
    assert fmt_spread(None, rounds=3) == "n/a"
    assert fmt_number(0.456) == "0.46"
    assert fmt_number(0.0) == "0"
    assert fmt_ratio(0.8571) == "0.86x"
    assert fmt_ratio(None) == "n/a"


def test_ratio_is_missing_rather_than_infinite() -> None:
    assert ratio(38.0, 44.0) == pytest.approx(0.8636, abs=1e-4)
    assert ratio(38.0, 0.0) is None
    assert ratio(None, 44.0) is None


def test_targets_bound_blocks_over_bare_in_the_right_direction() -> None:
    throughput = LOADED_TARGETS["completions_per_s"]
    assert throughput.met(1.0)
    assert throughput.met(1.3)
    assert not throughput.met(0.86)
    tail = LOADED_TARGETS["approve_to_result_p99_ms"]
    assert tail.met(1.25)
    assert not tail.met(2.6)
    assert not LOADED_TARGETS["starts_per_s"].met(0.66)
    assert SERIAL_TARGETS["approve_to_result_p50_ms"].met(0.9)
    assert not Target("x", 1.0, at_least=True).met(None)
    assert throughput.describe() == ">= 1.00x bare"


def test_median_cpu_is_per_phase_and_process() -> None:
    per_round = [
        {"start": {"api": 10.0, "pg": 2.0}, "decide": {"api": 20.0, "pg": 4.0}},
        {"start": {"api": 30.0, "pg": 1.0}, "decide": {"api": 10.0, "pg": 5.0}},
        {"start": {"api": 20.0, "pg": 3.0}, "decide": {"api": 15.0, "pg": 6.0}},
    ]
    assert median_cpu(per_round) == {
        "start": {"api": 20.0, "pg": 2.0},
        "decide": {"api": 15.0, "pg": 5.0},
    }
