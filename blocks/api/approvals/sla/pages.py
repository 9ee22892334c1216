"""Pages of the SLA report: the cursor that names a page, and the reports a walk is reading.

A page is a slice of one report, the report through one seq of the log computed at one moment
(`generated_at`, which tells open steps from overdue), its rows in opening order. The cursor names
that report, the filters and organization it was made for, and the last row the previous page
held: every page of a walk is cut from the same report, each row comes exactly once, and every
page's summaries cover the whole filtered window. A cursor is refused (422, naming `cursor`) for
another organization or other filters, and for a point the log has not reached.

Computing a report reads the whole filtered log, so a walk's pages share it: a report with pages
still to read is kept here for a while (a few reports, of bounded size, in this process only) and
let go when its last page is read. A page whose report is not here (another API process, or
later) computes it again, with the same result.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from blocks.api.errors import invalid_field
from blocks.core.approvals.sla import ReportFilters
from blocks.models.approvals.sla_reports import SlaReport

KEEP_SECONDS = 120.0  # since the report's last page read
KEEP_REPORTS = 4
KEEP_ROWS = 20_000  # rows of all kept reports together, about 1 KB each: 20 MB of the API at most

_VERSION = 1
_FINGERPRINT = 8  # bytes of SHA-256
# version, through_seq, generated_at (µs since 1970), after (an opened_seq), fingerprint
_CURSOR = struct.Struct(f">BQqQ{_FINGERPRINT}s")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NOT_OURS = "not a cursor of this report"
_CLOCK_SKEW = timedelta(minutes=1)  # between API processes: a page may come from another


@dataclass(frozen=True)
class Position:
    """Where a page starts: after the row opened at seq `after` of the report through
    `through_seq` generated at `generated_at`."""

    through_seq: int
    generated_at: datetime
    after: int


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def fingerprint(org_id: uuid.UUID, filters: ReportFilters) -> bytes:
    """What a cursor must have been made for: the organization and the filters."""
    bounds = (filters.opened_from, filters.opened_to)
    text = "\n".join(
        [
            str(org_id),
            filters.workflow or "",
            *("" if bound is None else str(_micros(bound)) for bound in bounds),
        ]
    )
    return hashlib.sha256(text.encode()).digest()[:_FINGERPRINT]


def write_cursor(report: SlaReport, after: int, made_for: bytes) -> str:
    raw = _CURSOR.pack(_VERSION, report.through_seq, _micros(report.generated_at), after, made_for)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_cursor(cursor: str, made_for: bytes) -> Position:
    """The page a cursor names; a 422 naming `cursor` if this request may not read it."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, through_seq, micros, after, found_for = _CURSOR.unpack(raw)
    except (binascii.Error, ValueError, struct.error):
        raise invalid_field("cursor", _NOT_OURS) from None
    if version != _VERSION or not 0 <= micros <= _micros(datetime.now(UTC) + _CLOCK_SKEW):
        raise invalid_field("cursor", _NOT_OURS)
    if found_for != made_for:
        raise invalid_field("cursor", "made with other filters, or not a cursor of this report")
    return Position(through_seq, _EPOCH + timedelta(microseconds=micros), after)


_Key = tuple[bytes, int, datetime]
_kept: OrderedDict[_Key, tuple[float, SlaReport]] = OrderedDict()


def _key(report: SlaReport, made_for: bytes) -> _Key:
    return made_for, report.through_seq, report.generated_at


def kept_report(position: Position, made_for: bytes) -> SlaReport | None:
    """The report a cursor names, if this process still holds it."""
    key = (made_for, position.through_seq, position.generated_at)
    found = _kept.get(key)
    if found is None:
        return None
    if found[0] < time.monotonic():
        del _kept[key]
        return None
    return found[1]


def keep(report: SlaReport, made_for: bytes) -> None:
    """Hold a report whose next page is still to be read (oldest let go past the bounds)."""
    if len(report.rows) > KEEP_ROWS:
        return  # too big to hold: each of its pages computes it again
    _kept[_key(report, made_for)] = (time.monotonic() + KEEP_SECONDS, report)
    _kept.move_to_end(_key(report, made_for))
    now = time.monotonic()
    for key, (until, _) in list(_kept.items()):
        if until < now:
            del _kept[key]
    while len(_kept) > KEEP_REPORTS or sum(len(r.rows) for _, r in _kept.values()) > KEEP_ROWS:
        _kept.popitem(last=False)


def let_go(report: SlaReport, made_for: bytes) -> None:
    """Its last page was read."""
    _kept.pop(_key(report, made_for), None)


def forget_all() -> None:
    """Drop every kept report (tests use it to make the next page compute its report again)."""
    _kept.clear()
