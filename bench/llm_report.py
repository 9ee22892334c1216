"""The LLM step benchmark's report: its tables as Markdown, and Blocks' extra latency split up."""

from __future__ import annotations

from typing import Any

PART_LABELS = {
    "activity_blocks": "Blocks' activity (`LlmActivities.call_model`), whole",
    "activity_bare": "bare activity (shared `AsyncOpenAI`), whole",
    "credential_load_decrypt": "credential load + key decrypt (one transaction)",
    "ssrf_recheck": "SSRF re-check of the base URL",
    "model_call_guarded_new_client": "model call, new guarded httpx client (as Blocks)",
    "guarded_client_open_close": "of which: opening and closing that client",
    "model_call_shared_client": "model call, shared `AsyncOpenAI` client (as bare)",
    "usage_insert": "`llm_usage` insert (one transaction)",
    "audit_append_3_events": "audit append of the run's 3 events (combining writer)",
    "workflow_module_blocks": "workflow module run afresh (the sandbox's per-run import), Blocks",
    "workflow_module_bare": "the same, bare workflow module",
    "payloads_of_a_run_sealed": "a run's 6 payloads, encode+decode, organization key",
    "payloads_of_a_run_plain": "the same through the pydantic converter alone",
}
DERIVED_LABELS = {
    "gap": "Blocks - bare, start → result",
    "activity": "in the activity (Blocks' activity - bare activity)",
    "audit": "audit append, on the path at the run's end (local activity)",
    "codec": "payload codec (sealed - plain, one run's payloads)",
    "workflow": "workflow code, replayed alone (sandbox, SDK, outbox, payload decoding)",
    "rest": "rest: Temporal round trips (local-activity marker, search attributes, more events)",
}


def derive(results: dict[str, Any]) -> dict[str, dict[str, float]] | None:
    """Blocks' extra per call with one in flight, split by the pieces timed alone; `rest` is what
    is left (the workflow side). Latency from p50s; CPU (this process) from means per call."""
    parts, unloaded = results.get("parts_ms"), results.get("unloaded")
    replays = results.get("replays_ms")
    if not parts or not unloaded or not replays:
        return None
    blocks, bare = unloaded["blocks"], unloaded["bare"]
    split: dict[str, dict[str, float]] = {}
    for figure, piece in (("latency_ms", "p50_ms"), ("cpu_ms", "cpu_ms")):
        if figure == "latency_ms":
            gap = blocks["latency_ms"]["p50"] - bare["latency_ms"]["p50"]
        else:
            gap = (
                blocks["cpu"]["cpu_ms_per_item"]["python"]
                - bare["cpu"]["cpu_ms_per_item"]["python"]
            )
        activity = parts["activity_blocks"][piece] - parts["activity_bare"][piece]
        audit = parts["audit_append_3_events"][piece]
        codec = parts["payloads_of_a_run_sealed"][piece] - parts["payloads_of_a_run_plain"][piece]
        replayed = "mean_ms" if figure == "latency_ms" else "cpu_ms"
        code = replays["blocks"][replayed] - replays["bare"][replayed]
        rest = gap - activity - audit - codec - code
        values = {
            "gap": gap,
            "activity": activity,
            "audit": audit,
            "codec": codec,
            "workflow": code,
            "rest": rest,
        }
        for name, value in values.items():
            split.setdefault(name, {})[figure] = round(value, 2)
    return split


def _ratio(a: float, b: float) -> str:
    # Below 0.1 ms the baseline is rounding noise (bare touches no database): no ratio.
    return f"{a / b:.2f}x" if b >= 0.1 else "n/a"


def render(results: dict[str, Any]) -> str:
    """The tables as Markdown (printed, and pasted into bench/README.md)."""
    lines: list[str] = []
    loaded, params = results["loaded"], results["params"]
    b, t = loaded["blocks"], loaded["bare"]
    lines += [
        f"**{b['calls']} calls per side, {params['concurrency']} in flight, "
        f"{params['rounds']} alternating rounds**",
        "",
        "| per call | Blocks `self.llm` | bare activity | Blocks / bare |",
        "|---|---:|---:|---:|",
    ]

    def row(label: str, bv: float, tv: float, fmt: str = "{:,.1f}") -> None:
        lines.append(f"| {label} | {fmt.format(bv)} | {fmt.format(tv)} | {_ratio(bv, tv)} |")

    rates = "{:,.1f}"
    row("calls/s", b["calls_per_second"], t["calls_per_second"], rates)
    lines.append(
        "| calls/s per round (min-max) | "
        f"{min(b['rounds_calls_per_second']):.1f}-{max(b['rounds_calls_per_second']):.1f} | "
        f"{min(t['rounds_calls_per_second']):.1f}-{max(t['rounds_calls_per_second']):.1f} | |"
    )
    for p in ("p50", "p95"):
        row(f"start → result {p} ms", b["latency_ms"][p], t["latency_ms"][p])
    for part, label in (
        ("python", "worker + client process"),
        ("postgres", "PostgreSQL"),
        ("temporal", "Temporal server"),
    ):
        row(
            f"CPU ms: {label}",
            b["cpu"]["cpu_ms_per_item"][part],
            t["cpu"]["cpu_ms_per_item"][part],
            "{:.2f}",
        )
    row(
        "CPU ms: model server",
        b["cpu"]["model_server_ms_per_item"],
        t["cpu"]["model_server_ms_per_item"],
        "{:.2f}",
    )
    lines.append(
        f"| machine CPU busy % | {b['cpu']['machine_busy_pct']:.0f} | "
        f"{t['cpu']['machine_busy_pct']:.0f} | |"
    )
    unloaded = results.get("unloaded")
    if unloaded:
        ub, ut = unloaded["blocks"], unloaded["bare"]
        for p in ("p50", "p95"):
            row(
                f"one in flight ({ub['calls']} calls): {p} ms",
                ub["latency_ms"][p],
                ut["latency_ms"][p],
            )
        row(
            "one in flight: CPU ms, worker + client",
            ub["cpu"]["cpu_ms_per_item"]["python"],
            ut["cpu"]["cpu_ms_per_item"]["python"],
            "{:.2f}",
        )
    parts = results.get("parts_ms")
    if parts:
        lines += [
            "",
            "| piece, timed alone, one at a time | p50 ms | p95 ms | CPU ms (mean) |",
            "|---|---:|---:|---:|",
        ]
        for name, value in parts.items():
            label = PART_LABELS.get(name, name)
            lines.append(
                f"| {label} | {value['p50_ms']:.2f} | {value['p95_ms']:.2f} | "
                f"{value['cpu_ms']:.2f} |"
            )
    replays = results.get("replays_ms")
    if replays:
        lines += [
            "",
            "| one run's history replayed (workflow side alone) | mean ms | CPU ms |",
            "|---|---:|---:|",
        ]
        for name, value in replays.items():
            lines.append(f"| {name} | {value['mean_ms']:.2f} | {value['cpu_ms']:.2f} |")
    derived = results.get("derived_ms")
    if derived:
        lines += [
            "",
            "| Blocks' extra per call, one in flight | latency ms (p50s) | CPU ms, worker + client |",
            "|---|---:|---:|",
        ]
        for name, value in derived.items():
            lines.append(
                f"| {DERIVED_LABELS[name]} | {value['latency_ms']:.1f} | {value['cpu_ms']:.1f} |"
            )
    return "\n".join(lines)
