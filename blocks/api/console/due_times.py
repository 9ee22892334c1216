"""How the approver's pages show a moment and an SLA deadline: UTC text, and the time left
("in 3 h", "overdue by 2 h") with the class that colours it (.overdue red, .due-soon amber)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# A deadline this close is shown as due soon.
DUE_SOON = timedelta(hours=4)


@dataclass(frozen=True)
class Due:
    at: str  # "2026-12-02 14:05 UTC"
    left: str  # "in 3 h 5 min", "overdue by 2 h"
    css: str  # "overdue", "due-soon" or ""


def utc_text(moment: datetime | None) -> str:
    """ "2026-12-02 14:05 UTC" (a naive moment is taken as UTC, as the database stores them)."""
    if moment is None:
        return ""
    return _utc(moment)


def _utc(moment: datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def span_text(span: timedelta) -> str:
    """A duration to the minute, in its two largest units: "2 d 3 h", "3 h 5 min", "4 min"."""
    minutes = max(int(span.total_seconds() // 60), 0)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min" if minutes else "less than a minute"


def due(deadline: datetime | None, now: datetime) -> Due | None:
    """The deadline as shown beside a step; None for a step without one."""
    if deadline is None:
        return None
    left = deadline - now
    if left <= timedelta(0):
        return Due(_utc(deadline), f"overdue by {span_text(-left)}", "overdue")
    return Due(_utc(deadline), f"in {span_text(left)}", "due-soon" if left <= DUE_SOON else "")
