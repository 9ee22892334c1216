"""The SLA report's rows as CSV (pure): one line per step, cells a spreadsheet would run as a
formula defused with a leading apostrophe (OWASP CSV injection)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import datetime

from blocks.core.approvals.sla import StepRow, Vote
from blocks.core.spreadsheet import defuse_formula

CSV_COLUMNS: tuple[str, ...] = (
    "run_id",
    "workflow",
    "step_id",
    "title",
    "opened_at",
    "deadline",
    "closed_at",
    "decided_at",
    "state",
    "outcome",
    "time_to_decision_seconds",
    "reminders",
    "escalated",
    "escalated_at",
    "breached_at",
    "deciders",
)


# OWASP CSV injection: a spreadsheet runs cells starting with these as formulas.
def csv_cell(value: object) -> str | int | float:
    """A cell as written: numbers as they are, text with a leading ' if it could be a formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value)
    return defuse_formula(text)


def format_deciders(votes: Iterable[Vote]) -> str:
    """`user_id:decision` per vote, in the order they were cast, separated by "; "."""
    return "; ".join(f"{vote.user_id}:{vote.decision}" for vote in votes)


def _csv_values(row: StepRow) -> list[object]:
    return [
        row.run_id,
        row.workflow,
        row.step_id,
        row.title,
        row.opened_at,
        row.deadline,
        row.closed_at,
        row.decided_at,
        row.state,
        row.outcome.value,
        row.time_to_decision_seconds,
        row.reminders,
        row.escalated,
        row.escalated_at,
        row.breached_at,
        format_deciders(row.deciders),
    ]


def csv_text(rows: Iterable[Iterable[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerows([csv_cell(value) for value in row] for row in rows)
    return buffer.getvalue()


def csv_header() -> str:
    return csv_text([CSV_COLUMNS])


def csv_rows(rows: Iterable[StepRow]) -> str:
    return csv_text(_csv_values(row) for row in rows)
