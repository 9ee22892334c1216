"""The scale benchmark's results as rich tables on the console and a markdown table for the README."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(width=max(Console().width, 140))

Row = tuple[str, str, str]  # figure, value, what it means


def _pp(latency: dict[str, Any]) -> str:
    return f"{latency['p50']:,.0f} / {latency['p99']:,.0f}"


def _rss(rss: dict[str, float]) -> str:
    return f"{rss['api']:.0f} / {rss['worker']:.0f} / {rss['temporal']:.0f}"


def _cpu(phase: dict[str, Any]) -> str:
    ms = phase["cpu_ms_per_item"]
    return " / ".join(f"{ms[k]:.1f}" for k in ("api", "worker", "postgres", "temporal"))


def _slices(slices: list[dict[str, Any]]) -> str:
    return ", ".join(f"{s['runs_per_s']}" for s in slices)


def rows_a(results: dict[str, Any]) -> list[Row]:
    a = results["scenario_a"]
    start, decide, reads = a["start"], a["decide"], a["reads"]
    inbox, running = reads["inbox"], reads["runs_running"]
    errors = sum(results["errors"]["non_2xx"].values())
    warnings = results.get("temporal_warnings", {})
    slow = sum(n for k, n in warnings.items() if k.startswith("Slow gRPC call"))
    failed = warnings.get("Update workflow execution operation failed.", 0)
    return [
        ("runs started / parked / completed",
         f"{a['started']:,} / {a['parked']:,} / {a['completed']:,} of {a['runs']:,}",
         "201 and running / step.opened written / run.completed written (audit log counts)"),
        ("run rows abandoned by the reconciler", f"{a['start_states'].get('abandoned', 0):,}",
         "starts still unsettled after BLOCKS_RUN_START_BOUND_SECONDS (60 s), answered"
         " `abandoned`"),
        ("start runs/s (whole batch)", f"{start['runs_per_s']}",
         f"runs ÷ wall time of the batch, {results['params']['concurrency']} requests in flight"),
        (f"start runs/s per {results['params']['slice']:,}", _slices(start["slices"]),
         "the same, per consecutive slice of starts: a falling series means starts slow with N"),
        ("start p50 / p99 ms", _pp(start["latency_ms"]), "one POST /v1/runs, sent to 201"),
        ("all parked after s (runs/s)", f"{a['all_parked_seconds']} ({a['parked_runs_per_s']})",
         "first start sent → every run's step.opened written: the worker's pace"),
        ("parked when the last start answered", f"{a['parked_by_end_of_starts']:,}",
         "step.opened written by then; the rest waited in Temporal's task backlog"),
        ("RSS MB idle: api / worker / temporal", _rss(results["rss_mb_idle"]),
         "resident memory before the first run"),
        ("RSS MB all parked", _rss(a["rss_mb_all_parked"]), "with every run waiting on its step"),
        ("RSS MB peak (whole benchmark)", _rss(results["rss_mb_peak"]),
         "highest of a 1 s sample over every phase"),
        (f"GET /v1/inbox p50 / p99 ms ({inbox['page_items']} items)", _pp(inbox["latency_ms"]),
         f"{inbox['latency_ms']['count']} requests one at a time, first page, default limit; "
         f"the approver may decide all {a['started']:,}"),
        (f"GET /v1/runs?status=running p50 / p99 ms ({running['page_items']} runs)",
         _pp(running["latency_ms"]), "the same for the run list"),
        (f"decide all: seconds ({decide['approvers']} approvers)",
         f"{decide['decisions_seconds']}",
         "first decision sent → last 200, one lane per approver"),
        ("decisions/s", f"{decide['decisions_per_s']}", "decisions ÷ that time"),
        (f"decisions/s per {results['params']['slice']:,}", _slices(decide["slices"]),
         "the same per consecutive slice of decisions: a falling series means they slow with N"),
        ("decision p50 / p99 ms", _pp(decide["ack_latency_ms"]),
         "POST …/steps/approve/decisions, sent to 200 (retries of a 503 included)"),
        ("all completed after s (runs/s)",
         f"{decide['all_completed_seconds']} ({decide['completions_per_s']})",
         "first decision sent → last run.completed event written"),
        ("CPU ms per start: api / worker / pg / temporal", _cpu(start),
         "CPU of each process during the start batch ÷ runs"),
        ("CPU ms per decided run: api / worker / pg / temporal", _cpu(decide),
         "CPU during decide-until-completed ÷ runs"),
        ("non-2xx answers", f"{errors}",
         "every request of the benchmark that was not 2xx (or a start not running)"),
        ("Temporal slow calls / failed workflow updates", f"{slow:,} / {failed:,}",
         "server log lines over the whole benchmark: its SQLite store under load"),
    ]  # fmt: skip


def rows_audit(results: dict[str, Any]) -> list[Row]:
    audit = results["audit"]
    sla, export = audit["sla"], audit["export_median"]
    return [
        ("audit events in the org", f"{audit['events']:,} ({audit['real_events']:,} real)",
         "scenario A's own events, topped up with synthetic runs cloned from a real one"),
        (f"GET /v1/reports/sla first page p50 / p99 ms ({sla['step_rows']:,} steps)",
         _pp(sla["latency_ms"]),
         f"{sla['requests']} reports one at a time, no filter; first page of 1,000 rows"),
        ("GET /v1/reports/sla, all pages p50 / p99 ms",
         _pp(sla["walk_ms"]),
         f"the same reports walked by next_cursor: {sla['pages']} pages, {sla['response_mb']} MB"),
        ("audit export MB / s", f"{export['mb']} / {export['seconds']}",
         "GET /v1/audit/export?format=jsonl, streamed to the end (median of 3)"),
        ("audit export MB/s, events/s", f"{export['mb_per_s']}, {export['events_per_s']:,}",
         "the same as rates"),
    ]  # fmt: skip


def rows_b(results: dict[str, Any]) -> list[Row]:
    b = results.get("scenario_b")
    if not b:
        return []
    first = b["first_org"]

    def spread(s: dict[str, float]) -> str:
        return f"{s['min']} / {s['median']} / {s['max']}"

    return [
        ("B: runs started", f"{b['started']:,} in {b['orgs']} orgs",
         "interleaved across the organizations, same in-flight total"),
        ("B: start runs/s (all orgs)", f"{b['start']['runs_per_s']}", "all starts ÷ wall time"),
        ("B: start runs/s per org min / median / max", spread(b["per_org_start_runs_per_s"]),
         "an org's starts ÷ its first-to-last start"),
        ("B: RSS MB all parked", _rss(b["rss_mb_all_parked"]), "api / worker / temporal"),
        ("B: inbox p50 / p99 ms (first org)", _pp(first["inbox"]["latency_ms"]),
         f"{first['inbox']['latency_ms']['count']} requests, "
         f"{b['runs_per_org']:,} eligible steps"),
        ("B: inbox p50 ms per org min / median / max", spread(b["per_org_inbox_p50_ms"]),
         "each org's approver"),
        ("B: runs?status=running p50 / p99 ms (first org)",
         _pp(first["runs_running"]["latency_ms"]), "the same for the run list"),
    ]  # fmt: skip


def render(results: dict[str, Any]) -> None:
    params = results["params"]
    table = Table(
        title=f"Blocks at scale, as deployed: {params['runs']:,} runs in one organization, "
        f"{params['orgs']} orgs of {params['runs_per_org']:,}, {params['concurrency']} in flight"
    )
    for column in ("figure", "value", "meaning"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for figure, value, meaning in rows_a(results) + rows_audit(results) + rows_b(results):
        table.add_row(figure, value, meaning)
    console.print(table)
    errors = results["errors"]
    if errors["non_2xx"]:
        console.print(f"[red]non-2xx: {errors['non_2xx']}[/]\n" + "\n".join(errors["first_bodies"]))


def markdown(results: dict[str, Any]) -> str:
    lines = ["| figure | value | what it means |", "|---|---:|---|"]
    for figure, value, meaning in rows_a(results) + rows_audit(results) + rows_b(results):
        lines.append(f"| {figure} | {value} | {meaning} |")
    return "\n".join(lines) + "\n"
