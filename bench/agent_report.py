"""The agent relay benchmark's report: ratios against the targets, Blocks' extra latency split by
the pieces timed alone, and the bound one agent connection's message loop puts on throughput."""

from __future__ import annotations

from typing import Any

TARGET_RATE = 0.5  # relay tasks/s >= 0.5x bare
TARGET_P50 = 2.0  # relay start -> result p50 <= 2x bare
PROCESSES = (
    ("worker", "worker + bench client (one process)"),
    ("api", "API (relay)"),
    ("agent", "agent (SDK process)"),
    ("postgres", "PostgreSQL"),
    ("temporal", "Temporal server"),
)
PART_LABELS = {
    "dispatch_txn": "dispatch transaction (worker): agent by name, row + sealed input, "
    "NOTIFY, audit event",
    "token_check_txn": "token check (API), before every message from the agent and every claim",
    "claim_txn": "claim (API): lock the due rows, open the input, mark delivered",
    "ack_txn": "`ack` transaction (API): lock, drop the input, audit event, last seen",
    "result_txn_without_rpc": "`result` transaction (API) without its Temporal call: lock, "
    "finish, audit event, last seen",
    "complete_rpc": "Temporal async completion by task token (RespondActivityTaskCompleted)",
}
# The message loop of one connection handles, per task, in order: the ack (token check + its
# transaction) and the result (token check + its transaction, holding the row while Temporal's
# completion RPC runs). Nothing else of that connection moves meanwhile.
_LOOP_PARTS = ("token_check_txn", "ack_txn", "token_check_txn", "result_txn_without_rpc")
# On a task's path: the dispatch; the sender's token check before its claim; the loop's work.
_PATH_DB = ("dispatch_txn", "token_check_txn", "claim_txn", *_LOOP_PARTS)


def _ratio(a: float, b: float, digits: int | None = 2) -> float | None:
    if b <= 0:
        return None
    return a / b if digits is None else round(a / b, digits)


def derive(results: dict[str, Any]) -> dict[str, Any]:
    """Ratios and verdicts (loaded phase); with the pieces and the one-at-a-time phase, Blocks'
    extra latency split into the database work on the path and the rest; the loop's bound."""
    blocks, bare = results["loaded"]["blocks"], results["loaded"]["bare"]
    # Verdicts on the exact ratios (a rounded 2.00x may be 2.004x).
    rate = _ratio(blocks["tasks_per_second"], bare["tasks_per_second"], None)
    p50 = _ratio(blocks["latency_ms"]["p50"], bare["latency_ms"]["p50"], None)
    derived: dict[str, Any] = {
        "rate_ratio": None if rate is None else round(rate, 2),
        "rate_target": TARGET_RATE,
        "rate_met": rate is not None and rate >= TARGET_RATE,
        "p50_ratio": None if p50 is None else round(p50, 2),
        "p50_target": TARGET_P50,
        "p50_met": p50 is not None and p50 <= TARGET_P50,
        "p99_ratio": _ratio(blocks["latency_ms"]["p99"], bare["latency_ms"]["p99"]),
        "cpu_ms_per_task": {
            side: round(sum(results["loaded"][side]["cpu_ms_per_task"].values()), 2)
            for side in ("blocks", "bare")
        },
    }
    parts, unloaded = results.get("parts_ms"), results.get("unloaded")
    if parts:
        loop = sum(parts[name]["p50_ms"] for name in _LOOP_PARTS) + parts["complete_rpc"]["p50_ms"]
        derived["loop_ms_per_task"] = round(loop, 2)
        derived["loop_bound_tasks_per_second"] = round(1000 / loop, 1) if loop > 0 else None
    if parts and unloaded:
        gap = unloaded["blocks"]["latency_ms"]["p50"] - unloaded["bare"]["latency_ms"]["p50"]
        database = sum(parts[name]["p50_ms"] for name in _PATH_DB)
        derived["split_ms"] = {
            "gap": round(gap, 2),
            "database": round(database, 2),
            "rest": round(gap - database, 2),
        }
    return derived


def _num(value: float | None, fmt: str = "{:,.1f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def render(results: dict[str, Any]) -> str:
    """The tables as Markdown (printed, and pasted into bench/README.md)."""
    params, derived = results["params"], results["derived"]
    b, t = results["loaded"]["blocks"], results["loaded"]["bare"]
    lines = [
        f"**{b['tasks']} tasks per side, {params['concurrency']} in flight, "
        f"{params['rounds']} alternating rounds**",
        "",
        "| per task | Blocks `self.agent` via relay | bare activity | Blocks / bare | target |",
        "|---|---:|---:|---:|---|",
    ]

    def row(label: str, bv: float, tv: float, fmt: str = "{:,.1f}", target: str = "") -> None:
        # Below 0.5 the baseline is idle noise (bare uses no API, agent or database): no ratio.
        ratio = _ratio(bv, tv) if tv >= 0.5 else None
        lines.append(
            f"| {label} | {fmt.format(bv)} | {fmt.format(tv)} | "
            f"{_num(ratio, '{:.2f}x')} | {target} |"
        )

    row(
        "tasks/s",
        b["tasks_per_second"],
        t["tasks_per_second"],
        target=f">= {TARGET_RATE}x: {_verdict(derived['rate_met'])}",
    )
    lines.append(
        "| tasks/s per round (min-max) | "
        f"{min(b['rounds_tasks_per_second']):.1f}-{max(b['rounds_tasks_per_second']):.1f} | "
        f"{min(t['rounds_tasks_per_second']):.1f}-{max(t['rounds_tasks_per_second']):.1f} | | |"
    )
    row(
        "start → result p50 ms",
        b["latency_ms"]["p50"],
        t["latency_ms"]["p50"],
        target=f"<= {TARGET_P50}x: {_verdict(derived['p50_met'])}",
    )
    row("start → result p99 ms", b["latency_ms"]["p99"], t["latency_ms"]["p99"])
    for p in ("p50", "p99"):
        row(f"dispatch → result {p} ms", b["activity_ms"][p], t["activity_ms"][p])
    for key, label in PROCESSES:
        row(
            f"CPU ms: {label}",
            b["cpu_ms_per_task"][key],
            t["cpu_ms_per_task"][key],
            "{:.2f}",
        )
    row(
        "CPU ms: all processes",
        derived["cpu_ms_per_task"]["blocks"],
        derived["cpu_ms_per_task"]["bare"],
        "{:.2f}",
    )
    lines.append(
        f"| machine CPU busy % (of it, the bench's processes) | {b['machine_busy_pct']:.0f} "
        f"({b.get('ours_pct', 0):.0f}) | {t['machine_busy_pct']:.0f} ({t.get('ours_pct', 0):.0f})"
        " | | |"
    )
    if results.get("xact_per_task") is not None:
        lines.append(
            "| PostgreSQL commits per task (pg_stat_database; each pool pre-ping `;` is one) | "
            f"{results['xact_per_task']:.1f} | 0 | | |"
        )
    unloaded = results.get("unloaded")
    if unloaded:
        ub, ut = unloaded["blocks"], unloaded["bare"]
        for p in ("p50", "p99"):
            row(
                f"one in flight ({ub['tasks']} tasks): start → result {p} ms",
                ub["latency_ms"][p],
                ut["latency_ms"][p],
            )
        row(
            "one in flight: dispatch → result p50 ms",
            ub["activity_ms"]["p50"],
            ut["activity_ms"]["p50"],
        )
        row(
            "one in flight: CPU ms, all processes",
            sum(ub["cpu_ms_per_task"].values()),
            sum(ut["cpu_ms_per_task"].values()),
            "{:.2f}",
        )
    timeline = results.get("timeline_ms")
    if timeline:
        lines += [
            "",
            "| a Blocks task's path, from its `agent_tasks` row | loaded p50 | loaded p99 "
            "| one in flight p50 |",
            "|---|---:|---:|---:|",
        ]
        labels = {
            "to_claim": "dispatched → claimed by the relay (commit, NOTIFY, LISTEN, claim)",
            "to_ack": "claimed → acked (sent, the agent, its ack back, token check, ack txn)",
            "to_finish": "acked → finished (the result, token check, its txn + Temporal RPC)",
            "total": "dispatched → finished",
        }
        for key, label in labels.items():
            loaded, serial = timeline["loaded"].get(key), (timeline.get("unloaded") or {}).get(key)
            lines.append(
                f"| {label} | {_num(loaded and loaded['p50'])} | {_num(loaded and loaded['p99'])}"
                f" | {_num(serial and serial['p50'])} |"
            )
    parts = results.get("parts_ms")
    if parts:
        lines += [
            "",
            "| piece, timed alone, one task at a time | p50 ms | p95 ms | CPU ms (mean) |",
            "|---|---:|---:|---:|",
        ]
        for name, value in parts.items():
            lines.append(
                f"| {PART_LABELS.get(name, name)} | {value['p50_ms']:.2f} | {value['p95_ms']:.2f}"
                f" | {value['cpu_ms']:.2f} |"
            )
        lines.append(
            f"| one connection's message loop per task (2 token checks, ack txn, result txn, "
            f"RPC) | {derived['loop_ms_per_task']:.2f} | | |"
        )
        lines.append(
            "| → at most this many tasks/s per agent connection | "
            f"{_num(derived['loop_bound_tasks_per_second'])} | | |"
        )
    connections = results.get("connections")
    if connections:
        lines += _connections(results, connections)
    split = derived.get("split_ms")
    if split:
        lines += [
            "",
            "| Blocks' extra, one in flight (p50s) | ms |",
            "|---|---:|",
            f"| Blocks - bare, start → result | {split['gap']:.1f} |",
            "| database on the path (dispatch, token check + claim, 2 token checks, ack, "
            "result txn) "
            f"| {split['database']:.1f} |",
            "| rest: NOTIFY wake-up, WebSocket hops, the agent, the workflow's own extra (audit "
            f"flush, search attributes, codec) | {split['rest']:.1f} |",
        ]
    return "\n".join(lines)


def _connections(results: dict[str, Any], more: dict[str, Any]) -> list[str]:
    """The diagnostic round: the same load with several agent processes on one token."""
    one, bare = results["loaded"]["blocks"], more["bare"]
    many = more["blocks"]
    to_ack = (results.get("timeline_ms") or {}).get("loaded", {}).get("to_ack") or {}
    many_ack = (more.get("timeline") or {}).get("to_ack") or {}
    rows = [
        ("tasks/s", one["tasks_per_second"], many["tasks_per_second"], bare["tasks_per_second"]),
        (
            "start → result p50 ms",
            one["latency_ms"]["p50"],
            many["latency_ms"]["p50"],
            bare["latency_ms"]["p50"],
        ),
        ("claimed → acked p50 ms", to_ack.get("p50"), many_ack.get("p50"), None),
        (
            "CPU ms: API",
            one["cpu_ms_per_task"]["api"],
            many["cpu_ms_per_task"]["api"],
            None,
        ),
        (
            "CPU ms: agent processes",
            one["cpu_ms_per_task"]["agent"],
            many["cpu_ms_per_task"]["agent"],
            None,
        ),
    ]
    lines = [
        "",
        f"| the same load, {more['agents']} agent processes on one token (one round) "
        f"| Blocks, 1 connection (rounds above) | Blocks, {more['agents']} connections "
        "| bare, same round |",
        "|---|---:|---:|---:|",
    ]
    for label, a, b, c in rows:
        lines.append(f"| {label} | {_num(a)} | {_num(b)} | {_num(c)} |")
    return lines
