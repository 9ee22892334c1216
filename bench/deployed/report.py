"""The results as tables: on the console (rich) and as Markdown for bench/README.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.deployed.engines import BARE, BLOCKS, DBOS, LABELS
from bench.deployed.probes import DRIVER
from bench.deployed.servers import (
    BARE_WORKER,
    BLOCKS_API,
    BLOCKS_WORKER,
    DBOS_APP,
    POSTGRES,
    TEMPORAL,
)
from bench.deployed.summary import Spread, fmt_number, fmt_ratio, fmt_spread

ENGINES = (BLOCKS, BARE, DBOS)
LOADED_FIGURES = {
    "starts_per_s": "starts/s",
    "start_p50_ms": "start p50 ms",
    "start_p99_ms": "start p99 ms",
    "completions_per_s": "completions/s (decide phase)",
    "approve_to_result_p50_ms": "approve → result p50 ms",
    "approve_to_result_p95_ms": "approve → result p95 ms",
    "approve_to_result_p99_ms": "approve → result p99 ms",
    "approve_ack_p50_ms": "approve acknowledged p50 ms",
    "retries": "requests sent again after a 5xx",
}
SERIAL_FIGURES = {
    "start_p50_ms": "start p50 ms",
    "starts_per_s": "starts/s",
    "approve_to_result_p50_ms": "approve → result p50 ms",
    "approve_ack_p50_ms": "approve acknowledged p50 ms",
}
PROCESS_LABELS = {
    BLOCKS_API: "Blocks API",
    BLOCKS_WORKER: "Blocks worker",
    BARE_WORKER: "bare worker",
    DBOS_APP: "DBOS app",
    POSTGRES: "PostgreSQL (all backends)",
    TEMPORAL: "Temporal server",
    DRIVER: "bench driver",
}
PASS, MISS = "pass", "miss"
PHASES = ("start", "park", "decide")


@dataclass
class Sheet:
    """One table: a title, its columns and rows of text cells."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)


def _target_cell(entry: dict[str, Any]) -> str:
    if entry.get("target") is None:
        return ""
    return f"{entry['target']}: {PASS if entry['met'] else MISS}"


def _figures_sheet(
    title: str, section: dict[str, Any], labels: dict[str, str], rounds: int
) -> Sheet:
    sheet = Sheet(
        title,
        ["", *(LABELS[e] for e in ENGINES), "Blocks / bare", "Blocks / DBOS", "target"],
    )
    engines = section["engines"]
    for key, label in labels.items():
        cells = [fmt_spread(Spread.from_dict(engines[e]["figures"][key]), rounds) for e in ENGINES]
        entry = section["ratios"][key]
        sheet.rows.append(
            [
                label,
                *cells,
                fmt_ratio(entry["vs_bare"]),
                fmt_ratio(entry["vs_dbos"]),
                _target_cell(entry),
            ]
        )
    return sheet


def _cpu_sheet(results: dict[str, Any]) -> Sheet:
    engines = results["loaded"]["engines"]
    owners: dict[str, list[str]] = results["processes"]
    columns = [""] + [f"{LABELS[e]} {phase}" for e in ENGINES for phase in PHASES]
    sheet = Sheet(
        "CPU ms per run, under load (median over rounds; park includes the bench's polling)",
        columns,
    )
    totals = dict.fromkeys(columns[1:], 0.0)
    for name, label in PROCESS_LABELS.items():
        row = [label]
        for e in ENGINES:
            for phase in PHASES:
                if owners.get(name) and e not in owners[name]:
                    row.append("—")
                    continue
                value = engines[e]["cpu_ms_per_run"][phase].get(name, 0.0)
                totals[f"{LABELS[e]} {phase}"] += value
                row.append(fmt_number(value))
        sheet.rows.append(row)
    sheet.rows.append(["total", *(fmt_number(totals[c]) for c in columns[1:])])
    return sheet


def _memory_sheet(results: dict[str, Any]) -> Sheet:
    sheet = Sheet(
        "Memory, MB (RSS; PostgreSQL: PSS of all its processes)", ["", "idle", "peak", "target"]
    )
    for name, label in PROCESS_LABELS.items():
        memory = results["memory_mb"][name]
        target = ""
        if memory["target_max"] is not None:
            target = f"peak <= {memory['target_max']:.0f}: {PASS if memory['met'] else MISS}"
        sheet.rows.append([label, f"{memory['idle']:.0f}", f"{memory['peak']:.0f}", target])
    return sheet


def sheets(results: dict[str, Any]) -> list[Sheet]:
    params = results["params"]
    out = [
        _figures_sheet(
            f"Under load: {params['runs']} runs per round, {params['concurrency']} in flight, "
            f"{params['rounds']} round(s); median (min-max)",
            results["loaded"],
            LOADED_FIGURES,
            params["rounds"],
        )
    ]
    if results.get("serial"):
        out.append(
            _figures_sheet(
                f"One at a time: {params['serial_runs']} runs, 1 in flight",
                results["serial"],
                SERIAL_FIGURES,
                1,
            )
        )
    out += [_cpu_sheet(results), _memory_sheet(results)]
    return out


def _styled(cell: str) -> str:
    if cell.endswith(f": {PASS}"):
        return f"{cell[: -len(PASS)]}[green]{PASS}[/]"
    if cell.endswith(f": {MISS}"):
        return f"{cell[: -len(MISS)]}[red]{MISS}[/]"
    return cell


def render(results: dict[str, Any], console: Console) -> None:
    for sheet in sheets(results):
        table = Table(title=sheet.title)
        for index, column in enumerate(sheet.columns):
            table.add_column(column, justify="left" if index == 0 else "right")
        for row in sheet.rows:
            table.add_row(*(_styled(c) for c in row))
        console.print(table)


def markdown(results: dict[str, Any]) -> str:
    """The same tables in Markdown (bold pass/miss), ready for bench/README.md."""
    parts: list[str] = []
    for sheet in sheets(results):
        parts.append(f"**{sheet.title}**\n")
        parts.append("| " + " | ".join(sheet.columns) + " |")
        parts.append("|" + "|".join(["---"] + ["---:"] * (len(sheet.columns) - 1)) + "|")
        for row in sheet.rows:
            cells = [c.replace(f": {MISS}", f": **{MISS}**") for c in row]
            parts.append("| " + " | ".join(cells) + " |")
        parts.append("")
    return "\n".join(parts)
