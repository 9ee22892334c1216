"""Query-parameter rules routes share: a time window given as `from` and `to`."""

from __future__ import annotations

from datetime import UTC, datetime

from blocks.api.errors import invalid_field


def time_window(
    start: datetime | None, end: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """A time without a zone is taken as UTC; `to` must be later than `from`."""
    start = start.replace(tzinfo=UTC) if start is not None and start.tzinfo is None else start
    end = end.replace(tzinfo=UTC) if end is not None and end.tzinfo is None else end
    if start is not None and end is not None and end <= start:
        raise invalid_field("to", "must be later than from")
    return start, end
