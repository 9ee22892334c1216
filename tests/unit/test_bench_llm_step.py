"""The LLM step benchmark's pure pieces: Blocks' extra per call split by the pieces timed alone."""

from __future__ import annotations

from typing import Any

import pytest

from bench.llm_report import derive, render


def _side(p50: float, cpu: float) -> dict[str, Any]:
    return {
        "calls": 40,
        "calls_per_second": 1000 / p50,
        "rounds_calls_per_second": [1000 / p50],
        "latency_ms": {"p50": p50, "p95": p50 * 1.5, "p99": p50 * 2},
        "cpu": {
            "cpu_ms_per_item": {"python": cpu, "postgres": 1.0, "temporal": 5.0},
            "model_server_ms_per_item": 1.5,
            "machine_busy_pct": 50.0,
        },
    }


def _results() -> dict[str, Any]:
    piece = {"p50_ms": 0.0, "p95_ms": 0.0, "cpu_ms": 0.0}
    parts = {
        "activity_blocks": {**piece, "p50_ms": 60.0, "cpu_ms": 40.0},
        "activity_bare": {**piece, "p50_ms": 10.0, "cpu_ms": 5.0},
        "audit_append_3_events": {**piece, "p50_ms": 8.0, "cpu_ms": 3.0},
        "payloads_of_a_run_sealed": {**piece, "p50_ms": 1.0, "cpu_ms": 1.0},
        "payloads_of_a_run_plain": {**piece, "p50_ms": 0.5, "cpu_ms": 0.5},
    }
    return {
        "params": {"concurrency": 10, "rounds": 4},
        "loaded": {"blocks": _side(900.0, 150.0), "bare": _side(300.0, 30.0)},
        "unloaded": {"blocks": _side(200.0, 120.0), "bare": _side(100.0, 40.0)},
        "parts_ms": parts,
        "replays_ms": {
            "blocks": {"mean_ms": 40.0, "cpu_ms": 38.0},
            "bare": {"mean_ms": 10.0, "cpu_ms": 9.0},
        },
    }


def test_the_extra_per_call_is_split_into_pieces_and_what_is_left() -> None:
    split = derive(_results())
    assert split is not None
    latency = {name: figures["latency_ms"] for name, figures in split.items()}
    cpu = {name: figures["cpu_ms"] for name, figures in split.items()}
    assert latency == {
        "gap": 100.0,
        "activity": 50.0,
        "audit": 8.0,
        "codec": 0.5,
        "workflow": 30.0,
        "rest": pytest.approx(11.5),
    }
    assert cpu == {
        "gap": 80.0,
        "activity": 35.0,
        "audit": 3.0,
        "codec": 0.5,
        "workflow": 29.0,
        "rest": pytest.approx(12.5),
    }


def test_no_split_without_the_unloaded_phase_or_the_pieces() -> None:
    for missing in ("unloaded", "parts_ms", "replays_ms"):
        assert derive({**_results(), missing: None}) is None


def test_the_report_shows_ratios_blocks_over_bare() -> None:
    results = _results()
    results["derived_ms"] = derive(results)
    table = render(results)
    assert "| calls/s | 1.1 | 3.3 | 0.33x |" in table
    assert "| start → result p50 ms | 900.0 | 300.0 | 3.00x |" in table
    assert "| CPU ms: worker + client process | 150.00 | 30.00 | 5.00x |" in table
