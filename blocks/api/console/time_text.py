"""Times as every console page shows them: UTC text, with how long ago or ahead, and a deadline's
"in 3 h 5 min" / "overdue by 2 h" with the class that colours it (.overdue red, .due-soon amber)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# A deadline closer than this is "due soon" (amber); a passed one is overdue (red, and says so).
DUE_SOON = timedelta(hours=4)


@dataclass(frozen=True)
class Deadline:
    """How a deadline reads now: `text` says it in words, `css` is "", "due-soon" or "overdue"."""

    at: str
    text: str
    css: str


def span(seconds: float) -> str:
    """A duration to the minute, in its two largest units: "2 d 3 h", "3 h 5 min", "4 min"."""
    minutes = int(abs(seconds) // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min" if minutes else "less than a minute"


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def utc(moment: datetime | None, empty: str = "—") -> str:
    """`2026-12-02 14:05:09 UTC`."""
    return empty if moment is None else f"{_utc(moment):%Y-%m-%d %H:%M:%S} UTC"


def when(moment: datetime | None, now: datetime, empty: str = "—") -> str:
    """`2026-12-02 14:05:09 UTC (3 h ago)`, or `(in 5 d)` for a time ahead."""
    if moment is None:
        return empty
    delta = (_utc(moment) - now).total_seconds()
    relative = f"in {span(delta)}" if delta > 0 else f"{span(delta)} ago"
    return f"{utc(moment)} ({relative})"


def deadline(moment: datetime | None, now: datetime, *, waiting: bool = True) -> Deadline | None:
    """A waiting step's deadline: "in 3 h" or "overdue by 2 h"; a closed step's just its time."""
    if moment is None:
        return None
    if not waiting:
        return Deadline(utc(moment), "", "")
    left = _utc(moment) - now
    if left.total_seconds() <= 0:
        return Deadline(utc(moment), f"overdue by {span(left.total_seconds())}", "overdue")
    css = "due-soon" if left <= DUE_SOON else ""
    return Deadline(utc(moment), f"in {span(left.total_seconds())}", css)
