"""The agent relay benchmark's arithmetic: ratios against the targets, the split of Blocks' extra
latency, the bound one connection's message loop puts on throughput, and the tables."""

from __future__ import annotations

from typing import Any

import pytest

from bench.agent_report import derive, render

PROCS = ("worker", "api", "agent", "postgres", "temporal")


def _side(tps: float, p50: float, cpu: dict[str, float]) -> dict[str, Any]:
    return {
        "tasks": 40,
        "tasks_per_second": tps,
        "rounds_tasks_per_second": [tps - 1, tps + 1],
        "latency_ms": {"p50": p50, "p95": p50 * 1.5, "p99": p50 * 2},
        "activity_ms": {"p50": p50 / 2, "p95": p50, "p99": p50 * 1.5},
        "cpu_ms_per_task": {name: cpu.get(name, 0.0) for name in PROCS},
        "machine_busy_pct": 90.0,
    }


def _parts(**p50: float) -> dict[str, dict[str, float]]:
    names = (
        "dispatch_txn",
        "token_check_txn",
        "claim_txn",
        "ack_txn",
        "result_txn_without_rpc",
        "complete_rpc",
    )
    return {n: {"p50_ms": p50.get(n, 1.0), "p95_ms": 9.0, "cpu_ms": 0.5} for n in names}


def _results() -> dict[str, Any]:
    return {
        "params": {"concurrency": 20, "rounds": 4},
        "loaded": {
            "blocks": _side(30.0, 600.0, {"worker": 40, "api": 20, "agent": 3, "postgres": 7}),
            "bare": _side(50.0, 400.0, {"worker": 10, "temporal": 20}),
        },
        "unloaded": {
            "blocks": _side(5.0, 180.0, {"worker": 50}),
            "bare": _side(12.0, 80.0, {"worker": 12}),
        },
        "xact_per_task": 8.0,
        "timeline_ms": {
            "loaded": {k: {"p50": 10.0, "p99": 20.0} for k in ("to_claim", "to_ack", "total")},
            "unloaded": None,
        },
        "parts_ms": _parts(
            dispatch_txn=10.0,
            token_check_txn=2.0,
            claim_txn=5.0,
            ack_txn=6.0,
            result_txn_without_rpc=7.0,
            complete_rpc=3.0,
        ),
    }


def test_ratios_are_blocks_over_bare_against_the_targets() -> None:
    derived = derive(_results())
    assert derived["rate_ratio"] == 0.6
    assert derived["rate_met"] is True
    assert derived["p50_ratio"] == 1.5
    assert derived["p50_met"] is True
    assert derived["p99_ratio"] == 1.5
    assert derived["cpu_ms_per_task"] == {"blocks": 70.0, "bare": 30.0}


def test_targets_are_missed_below_half_the_rate_or_above_twice_the_p50() -> None:
    results = _results()
    results["loaded"]["blocks"] = _side(24.0, 801.0, {})
    derived = derive(results)
    assert derived["rate_ratio"] == 0.48
    assert derived["rate_met"] is False
    assert derived["p50_met"] is False


def test_the_loop_bound_counts_both_token_checks_and_the_rpc() -> None:
    derived = derive(_results())
    # token 2 + ack 6 + token 2 + result 7 + RPC 3 = 20 ms per task on one connection.
    assert derived["loop_ms_per_task"] == 20.0
    assert derived["loop_bound_tasks_per_second"] == 50.0


def test_the_extra_latency_is_split_into_the_database_on_the_path_and_the_rest() -> None:
    split = derive(_results())["split_ms"]
    # gap 180 - 80; database: dispatch 10 + (token 2 + claim 5) + 2 x token 2 + ack 6 + result 7.
    assert split == {"gap": 100.0, "database": 34.0, "rest": pytest.approx(66.0)}


def test_no_split_or_bound_without_the_pieces() -> None:
    derived = derive({**_results(), "parts_ms": None})
    assert "split_ms" not in derived
    assert "loop_ms_per_task" not in derived
    assert "split_ms" not in derive({**_results(), "unloaded": None})


def test_the_report_shows_the_ratios_and_the_verdicts() -> None:
    results = _results()
    results["derived"] = derive(results)
    table = render(results)
    assert "| tasks/s | 30.0 | 50.0 | 0.60x | >= 0.5x: met |" in table
    assert "| start → result p50 ms | 600.0 | 400.0 | 1.50x | <= 2.0x: met |" in table
    assert "| CPU ms: all processes | 70.00 | 30.00 | 2.33x |  |" in table
    assert "| CPU ms: API (relay) | 20.00 | 0.00 | n/a |  |" in table
    assert "| → at most this many tasks/s per agent connection | 50.0 | | |" in table
    # A span missing from the one-in-flight phase reads n/a, not zero.
    assert "| dispatched → finished | 10.0 | 20.0 | n/a |" in table


def test_the_connections_round_sits_beside_the_one_connection_rounds() -> None:
    results = _results()
    results["connections"] = {
        "agents": 4,
        "blocks": _side(45.0, 300.0, {"api": 18.0, "agent": 9.0}),
        "bare": _side(52.0, 350.0, {}),
        "timeline": {"to_ack": {"p50": 4.0, "p99": 8.0}},
    }
    results["derived"] = derive(results)
    table = render(results)
    assert "| tasks/s | 30.0 | 45.0 | 52.0 |" in table
    assert "| claimed → acked p50 ms | 10.0 | 4.0 | n/a |" in table
    assert "| CPU ms: agent processes | 3.0 | 9.0 | n/a |" in table
