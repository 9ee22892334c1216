"""Route for the SLA compliance report: one row per approval step, as JSON (with summaries) or CSV.

Computed from the audit log only (`models.sla_reports`, `core.sla`), so an auditor can check
after the fact whether each step was decided within its SLA, who decided it, and what reminders
and escalations it took. The CSV columns are `core.approvals.sla_csv.CSV_COLUMNS`; its cells that
a spreadsheet would run as a formula start with an apostrophe.

JSON comes a page of rows at a time (`limit`, `cursor`: `api.approvals.sla.pages`), each page with
the summaries of the whole filtered window; the CSV streams every row. Each row is built once
(`core.sla.StepRow`) and written once: a page's body is written by pydantic straight from those
rows (`_PAGE`), the models below describing that body for the OpenAPI document.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, TypeAdapter

from blocks.api.approvals.sla import pages as sla_pages
from blocks.api.deps import CanReadAudit, DbSession
from blocks.api.errors import invalid_field
from blocks.api.params import time_window
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.core.approvals.sla import ReportFilters, StepRow, Summary
from blocks.core.approvals.sla_csv import csv_header, csv_rows
from blocks.models.approvals.sla_reports import SlaReport, sla_report

router = APIRouter(prefix="/v1", tags=["approvals"])

_CSV_CHUNK = 500  # rows per streamed chunk: bounded memory per write, few writes
DEFAULT_LIMIT = 1_000
MAX_LIMIT = 10_000
_CURSOR_MAX = 100


_VOTE = {"user_id": ex.APPROVER_ID, "decision": "approve", "at": ex.DECIDED}
_ROW = {
    "run_id": ex.RUN_ID,
    "workflow": "expense_approval",
    "step_id": "approve",
    "title": "Expense of 120.50 EUR: Team lunch",
    "opened_at": ex.STARTED,
    "deadline": ex.DEADLINE,
    "sla_seconds": 86400.0,
    "business_hours": False,
    "closed_at": ex.DECIDED,
    "decided_at": ex.DECIDED,
    "state": "approved",
    "outcome": "met",
    "time_to_decision_seconds": 2861.0,
    "reminders": 0,
    "escalated": False,
    "escalated_at": None,
    "breached_at": None,
    "deciders": [_VOTE],
    "opened_seq": 38,
}
_SUMMARY = {
    "workflow": "expense_approval",
    "steps": 1,
    "met": 1,
    "breached": 0,
    "open": 0,
    "overdue": 0,
    "no_sla": 0,
    "cancelled": 0,
    "expired": 0,
    "compliance_percent": 100.0,
    "p50_time_to_decision_seconds": 2861.0,
    "p90_time_to_decision_seconds": 2861.0,
}
_FILTERS = {"workflow": "expense_approval", "from": "2025-03-01T00:00:00Z", "to": None}


class VoteOut(BaseModel):
    model_config = example(**_VOTE)

    user_id: str
    decision: str
    at: datetime | None


class StepRowOut(BaseModel):
    model_config = example(**_ROW)

    run_id: str
    workflow: str | None
    step_id: str
    title: str | None
    opened_at: datetime
    deadline: datetime | None
    sla_seconds: float | None
    business_hours: bool
    closed_at: datetime | None = Field(description="When the step closed, by decision or SLA")
    decided_at: datetime | None = Field(description="When the deciding vote closed the step")
    state: str = Field(description="pending, approved, rejected, expired or cancelled")
    outcome: str = Field(
        description="met, breached, open, overdue, no_sla, cancelled (the run was cancelled"
        " before the deadline) or expired (closed undecided before the deadline, e.g. nobody"
        " left who could decide it); only met and breached count towards compliance"
    )
    time_to_decision_seconds: float | None
    reminders: int
    escalated: bool
    escalated_at: datetime | None
    breached_at: datetime | None
    deciders: list[VoteOut] = Field(description="Every vote on the step, in the order cast")
    opened_seq: int = Field(description="seq of the step.opened audit event")


class SummaryOut(BaseModel):
    model_config = example(**_SUMMARY)

    workflow: str | None
    steps: int
    met: int
    breached: int
    open: int
    overdue: int
    no_sla: int
    cancelled: int = Field(description="Steps whose run was cancelled before their deadline")
    expired: int = Field(description="Steps closed undecided before their deadline")
    compliance_percent: float | None = Field(description="met / (met + breached) * 100")
    p50_time_to_decision_seconds: float | None
    p90_time_to_decision_seconds: float | None


class FiltersOut(BaseModel):
    model_config = example(**_FILTERS)

    workflow: str | None
    from_: datetime | None = Field(serialization_alias="from")
    to: datetime | None


class SlaReportOut(BaseModel):
    model_config = example(
        org_id=ex.ORG_ID,
        generated_at="2025-03-04T11:00:00Z",
        through_seq=42,
        filters=_FILTERS,
        summary=[_SUMMARY],
        overall=_SUMMARY | {"workflow": None},
        steps=[_ROW],
        next_cursor="AQAAAAAAAAAqAAYM2RdHr_sAAAAAAAAAJo9Ju7Lh0mSF",
    )

    org_id: str
    generated_at: datetime
    through_seq: int = Field(description="The report covers the audit log up to this seq")
    filters: FiltersOut
    summary: list[SummaryOut] = Field(
        description="One entry per workflow, over every step of the filtered window (all pages)"
    )
    overall: SummaryOut
    steps: list[StepRowOut] = Field(description="This page's steps, in opening order")
    next_cursor: str | None = Field(
        default=None,
        description="Pass as `cursor` (with the same filters) for the next page of the same"
        " report; None on the last page",
    )


@dataclass(frozen=True)
class _PageBody:
    """A page as written: `SlaReportOut`'s fields, the rows as the report computed them."""

    org_id: str
    generated_at: datetime
    through_seq: int
    filters: FiltersOut
    summary: list[SummaryOut]
    overall: SummaryOut
    steps: Sequence[StepRow]
    next_cursor: str | None


# StepRow's fields are StepRowOut's, named and ordered alike (tests compare the two writings).
_PAGE = TypeAdapter(_PageBody)


def _summary_out(summary: Summary) -> SummaryOut:
    return SummaryOut(
        workflow=summary.workflow,
        steps=summary.steps,
        met=summary.met,
        breached=summary.breached,
        open=summary.open,
        overdue=summary.overdue,
        no_sla=summary.no_sla,
        cancelled=summary.cancelled,
        expired=summary.expired,
        compliance_percent=summary.compliance_percent,
        p50_time_to_decision_seconds=summary.p50_seconds,
        p90_time_to_decision_seconds=summary.p90_seconds,
    )


def _page(report: SlaReport, after: int, limit: int, made_for: bytes) -> Response:
    """The rows opened after seq `after`, `limit` of them, and the whole report's summaries."""
    first = bisect_right(report.rows, after, key=lambda row: row.opened_seq)
    rows = report.rows[first : first + limit]
    more = first + limit < len(report.rows)
    if more:
        sla_pages.keep(report, made_for)
    else:
        sla_pages.let_go(report, made_for)
    body = _PageBody(
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
        steps=rows,
        next_cursor=sla_pages.write_cursor(report, rows[-1].opened_seq, made_for) if more else None,
    )
    return Response(_PAGE.dump_json(body, by_alias=True), media_type="application/json")


async def _csv_chunks(rows: Sequence[StepRow]) -> AsyncIterator[str]:
    yield csv_header()
    for start in range(0, len(rows), _CSV_CHUNK):
        yield csv_rows(rows[start : start + _CSV_CHUNK])


@router.get(
    "/reports/sla",
    response_model=SlaReportOut,
    response_model_by_alias=True,
    responses={200: {"content": {"text/csv": {}}}},
    summary="Report SLA compliance of approval steps",
)
async def sla_compliance_report(
    ctx: CanReadAudit,
    session: DbSession,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
    workflow: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    opened_from: Annotated[datetime | None, Query(alias="from")] = None,
    opened_to: Annotated[datetime | None, Query(alias="to")] = None,
    limit: Annotated[
        int | None,
        Query(
            ge=1, le=MAX_LIMIT, description=f"Steps per page (JSON), {DEFAULT_LIMIT} if not given"
        ),
    ] = None,
    cursor: Annotated[
        str | None,
        Query(min_length=1, max_length=_CURSOR_MAX, description="`next_cursor` of the last page"),
    ] = None,
) -> Response:
    """SLA compliance per approval step, from the audit log: opening, deadline, decision time,
    met / breached / open / overdue / no_sla / cancelled / expired, reminders, escalation and who
    decided. `workflow` filters by the run's workflow name; `from` (inclusive) and `to`
    (exclusive) by the step's opening time. JSON comes `limit` steps a page, each page with the
    summaries per workflow and overall of every step in the window, and `next_cursor` for the
    next page of the same report; CSV holds every step."""
    start, end = time_window(opened_from, opened_to)
    filters = ReportFilters(workflow, start, end)
    if format == "json":
        made_for = sla_pages.fingerprint(ctx.org_id, filters)
        if cursor is None:
            report = await sla_report(ctx, session, filters)
            return _page(report, 0, limit or DEFAULT_LIMIT, made_for)
        at = sla_pages.read_cursor(cursor, made_for)
        found = sla_pages.kept_report(at, made_for)
        if found is None:
            found = await sla_report(
                ctx, session, filters, now=at.generated_at, through_seq=at.through_seq
            )
            if found.through_seq != at.through_seq:  # beyond the head: not a cursor we made
                raise invalid_field("cursor", "not a cursor of this report")
        return _page(found, at.after, limit or DEFAULT_LIMIT, made_for)
    for name, given in (("limit", limit), ("cursor", cursor)):
        if given is not None:
            raise invalid_field(name, "pages are for format=json; the CSV holds every step")
    report = await sla_report(ctx, session, filters)
    stamp = report.generated_at.strftime("%Y%m%dT%H%M%SZ")
    headers = {
        "Content-Disposition": f'attachment; filename="sla-{ctx.org_id}-{stamp}.csv"',
        # The CSV has no room for it, so the point of the log it covers travels as a header.
        "X-Blocks-Through-Seq": str(report.through_seq),
    }
    # The rows are computed before the response starts, so the stream needs no database session.
    return StreamingResponse(
        _csv_chunks(report.rows), media_type="text/csv; charset=utf-8", headers=headers
    )
