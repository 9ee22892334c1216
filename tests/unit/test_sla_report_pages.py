"""The SLA report's JSON page: written by pydantic straight from the core rows, it is what the
documented models (`SlaReportOut`) write for the same report, field for field and string for
string; and its cursor names the page, refusing what it was not made for."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import jsonschema
import pytest

from blocks.api.approvals.sla import pages as sla_pages
from blocks.api.approvals.sla.reports import (
    FiltersOut,
    SlaReportOut,
    StepRowOut,
    SummaryOut,
    _page,
)
from blocks.api.errors import Problem
from blocks.core.approvals.sla import (
    ReportFilters,
    SlaOutcome,
    StepRow,
    Summary,
    Vote,
    summarize,
    summarize_by_workflow,
)
from blocks.models.approvals.sla_reports import SlaReport

ORG = uuid.UUID(int=0x5A)
T0 = datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=UTC)


def _row(i: int) -> StepRow:
    decided = i % 3 == 0
    return StepRow(
        run_id=str(uuid.UUID(int=i)),
        workflow=["expense_approval", "purchase_approval", None][i % 3],
        step_id="approve" if i % 2 else "Prüfung 😀",
        title=None if i % 5 == 0 else f'Expense "{i}" — 120,50 €',
        opened_at=T0 + timedelta(minutes=i),
        deadline=None if i % 4 == 0 else T0 + timedelta(hours=24, minutes=i),
        sla_seconds=None if i % 4 == 0 else 86400.0 + i / 3,
        business_hours=i % 2 == 0,
        closed_at=T0 + timedelta(hours=1, minutes=i) if decided else None,
        decided_at=(T0 + timedelta(hours=1)).astimezone(timezone(timedelta(hours=2)))
        if decided
        else None,
        state="approved" if decided else "pending",
        outcome=list(SlaOutcome)[i % len(SlaOutcome)],
        time_to_decision_seconds=3600.5 - i if decided else None,
        reminders=i % 3,
        escalated=i % 7 == 0,
        escalated_at=T0 + timedelta(hours=20) if i % 7 == 0 else None,
        breached_at=None,
        deciders=tuple(Vote(f"user-{j}", "approve", T0 if j else None) for j in range(i % 3)),
        opened_seq=10 * i + 3,
    )


def _report(count: int, filters: ReportFilters | None = None) -> SlaReport:
    rows = [_row(i) for i in range(1, count + 1)]
    return SlaReport(
        org_id=str(ORG),
        generated_at=T0 + timedelta(days=2),
        through_seq=10 * count + 50,
        filters=filters or ReportFilters(),
        rows=rows,
        by_workflow=summarize_by_workflow(rows),
        overall=summarize(rows),
    )


def _summary_out(summary: Summary) -> SummaryOut:
    return SummaryOut(
        **{k: v for k, v in vars_of(summary).items() if not k.startswith("p")},
        p50_time_to_decision_seconds=summary.p50_seconds,
        p90_time_to_decision_seconds=summary.p90_seconds,
    )


def vars_of(value: Any) -> dict[str, Any]:
    return {name: getattr(value, name) for name in value.__slots__}


def _documented(report: SlaReport, rows: list[StepRow], next_cursor: str | None) -> Any:
    """What FastAPI wrote from the response models before (pydantic's JSON mode, by alias)."""
    out = SlaReportOut(
        org_id=report.org_id,
        generated_at=report.generated_at,
        through_seq=report.through_seq,
        filters=FiltersOut(
            workflow=report.filters.workflow,
            from_=report.filters.opened_from,
            to=report.filters.opened_to,
        ),
        summary=[_summary_out(s) for s in report.by_workflow],
        overall=_summary_out(report.overall),
        steps=[StepRowOut.model_validate(row, from_attributes=True) for row in rows],
        next_cursor=next_cursor,
    )
    return json.loads(json.dumps(out.model_dump(mode="json", by_alias=True)))


def _body(response: Any) -> Any:
    assert response.media_type == "application/json"
    return json.loads(response.body)


def test_a_page_is_what_the_documented_models_write() -> None:
    filters = ReportFilters("expense_approval", T0 - timedelta(days=1), T0 + timedelta(days=9))
    report = _report(7, filters)
    made_for = sla_pages.fingerprint(ORG, filters)
    first = _body(_page(report, 0, 3, made_for))
    assert first == _documented(report, report.rows[:3], first["next_cursor"])
    assert first["filters"]["from"] is not None  # by alias
    jsonschema.validate(first, SlaReportOut.model_json_schema(mode="serialization"))
    last = _body(_page(report, report.rows[5].opened_seq, 3, made_for))
    assert last == _documented(report, report.rows[6:], None)


def test_pages_walk_every_row_once_with_the_whole_reports_summaries() -> None:
    report = _report(11)
    made_for = sla_pages.fingerprint(ORG, report.filters)
    seen: list[Any] = []
    after = 0
    while True:
        page = _body(_page(report, after, 4, made_for))
        assert (page["summary"], page["overall"]) == (
            _documented(report, [], None)["summary"],
            _documented(report, [], None)["overall"],
        )
        seen += page["steps"]
        if page["next_cursor"] is None:
            break
        at = sla_pages.read_cursor(page["next_cursor"], made_for)
        assert (at.through_seq, at.generated_at) == (report.through_seq, report.generated_at)
        assert sla_pages.kept_report(at, made_for) is report
        after = at.after
    assert seen == _documented(report, report.rows, None)["steps"]
    assert len(seen) == 11
    assert sla_pages.kept_report(at, made_for) is None  # let go after its last page


def _refused(cursor: str, made_for: bytes) -> str:
    with pytest.raises(Problem) as caught:
        sla_pages.read_cursor(cursor, made_for)
    assert caught.value.status == 422
    [error] = caught.value.errors or []
    assert error["field"] == "cursor"
    return str(error["reason"])


def test_a_cursor_is_refused_for_other_filters_another_org_or_when_it_is_not_ours() -> None:
    report = _report(5)
    made_for = sla_pages.fingerprint(ORG, report.filters)
    cursor = sla_pages.write_cursor(report, 13, made_for)
    assert sla_pages.read_cursor(cursor, made_for).after == 13
    for other in (
        sla_pages.fingerprint(uuid.UUID(int=0x5B), report.filters),
        sla_pages.fingerprint(ORG, ReportFilters(workflow="expense_approval")),
        sla_pages.fingerprint(ORG, ReportFilters(opened_to=T0)),
    ):
        assert "other filters" in _refused(cursor, other)
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=="))
    future = bytearray(raw)
    future[9:17] = (2**62).to_bytes(8, "big")  # generated far in the future
    unknown = bytearray(raw)
    unknown[0] = 9  # a version we never wrote
    for bad in ("!!!", "AAAA", cursor[:-4], cursor + "AAAA", _b64(future), _b64(unknown)):
        assert _refused(bad, made_for) == "not a cursor of this report"


def test_the_same_filters_in_another_zone_make_the_same_fingerprint() -> None:
    utc = ReportFilters(opened_from=datetime(2026, 3, 1, 23, 0, tzinfo=UTC))
    paris = ReportFilters(
        opened_from=datetime(2026, 3, 2, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    )
    assert sla_pages.fingerprint(ORG, utc) == sla_pages.fingerprint(ORG, paris)


def test_kept_reports_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    sla_pages.forget_all()
    monkeypatch.setattr(sla_pages, "KEEP_ROWS", 10)
    small, big = _report(4), _report(11)
    made_for = sla_pages.fingerprint(ORG, small.filters)
    sla_pages.keep(big, made_for)  # more rows than may be kept: each page computes it again
    sla_pages.keep(small, made_for)
    at = sla_pages.Position(small.through_seq, small.generated_at, 0)
    assert sla_pages.kept_report(at, made_for) is small
    assert (
        sla_pages.kept_report(sla_pages.Position(big.through_seq, big.generated_at, 0), made_for)
        is None
    )
    monkeypatch.setattr(sla_pages, "KEEP_SECONDS", -1.0)
    sla_pages.keep(small, made_for)
    assert sla_pages.kept_report(at, made_for) is None  # past its time
    sla_pages.forget_all()


def _b64(raw: bytes | bytearray) -> str:
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
