"""Parameter rules routes share: integers within what PostgreSQL holds, and a time window given
as `from` and `to`.

Every integer a request carries is bounded: one past PostgreSQL's bigint reached a query and
failed there as a 500. tests/unit/test_openapi_errors.py checks the OpenAPI document for any
integer parameter or body field without both bounds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Query

from blocks.api.errors import invalid_field

BIGINT_MAX = 2**63 - 1  # PostgreSQL bigint (audit seq)
INT_MAX = 2**31 - 1  # PostgreSQL integer

# An audit event's seq to read after: 0 (or nothing) reads from the start.
AfterSeq = Annotated[
    int, Query(ge=0, le=BIGINT_MAX, description="Return events with a larger seq than this")
]


def time_window(
    start: datetime | None, end: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """A time without a zone is taken as UTC; `to` must be later than `from`."""
    start = start.replace(tzinfo=UTC) if start is not None and start.tzinfo is None else start
    end = end.replace(tzinfo=UTC) if end is not None and end.tzinfo is None else end
    if start is not None and end is not None and end <= start:
        raise invalid_field("to", "must be later than from")
    return start, end
