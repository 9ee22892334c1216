"""The console's SLA report page: `GET /v1/reports/sla` as a table per workflow and a
server-rendered chart of steps met and breached per workflow and week."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import TypeAdapter, ValidationError

from blocks.api.approvals.sla.reports import (
    MAX_LIMIT,
    SlaReportOut,
    StepRowOut,
    sla_compliance_report,
)
from blocks.api.console.audit.sla_chart import charts, week_of, weekly_counts
from blocks.api.console.forms import FormErrors, from_problem
from blocks.api.console.pages import render
from blocks.api.console.time_text import utc
from blocks.api.deps import CanReadAudit, DbSession
from blocks.api.errors import Problem, invalid_field

router = APIRouter()

# Without a `from`, the page shows the last eight weeks (this one included); an empty `from`
# (the field cleared) shows everything.
DEFAULT_WEEKS = 8
# Pages of the one report read for the chart; beyond them the chart says it is partial.
MAX_PAGES = 5
_MOMENT: TypeAdapter[datetime] = TypeAdapter(datetime)


def _moment(name: str, text: str) -> datetime | None:
    if not text:
        return None
    try:
        return _MOMENT.validate_python(text)
    except ValidationError:
        raise invalid_field(name, "not a date and time (YYYY-MM-DDTHH:MM)") from None


def _default_from(now: datetime) -> str:
    monday = week_of(now) - timedelta(weeks=DEFAULT_WEEKS - 1)
    return datetime.combine(monday, time(), UTC).strftime("%Y-%m-%dT%H:%M")


def _parsed(body: bytes) -> SlaReportOut:
    """A page as the route wrote it; `filters.from` is written under its alias only."""
    data = json.loads(body)
    data["filters"]["from_"] = data["filters"].pop("from", None)
    return SlaReportOut.model_validate(data)


async def _report(
    ctx: CanReadAudit,
    session: DbSession,
    workflow: str | None,
    start: datetime | None,
    end: datetime | None,
) -> tuple[SlaReportOut, list[StepRowOut], bool]:
    """The report's first page (its summaries cover the whole window) and the rows of up to
    MAX_PAGES pages of that same report; True if there were more."""
    rows: list[StepRowOut] = []
    cursor: str | None = None
    first: SlaReportOut | None = None
    for _ in range(MAX_PAGES):
        answer = await sla_compliance_report(
            ctx=ctx,
            session=session,
            format="json",
            workflow=workflow,
            opened_from=start,
            opened_to=end,
            limit=MAX_LIMIT,
            cursor=cursor,
        )
        page = _parsed(bytes(answer.body))
        first = first or page
        rows += page.steps
        cursor = page.next_cursor
        if cursor is None:
            break
    assert first is not None
    return first, rows, cursor is not None


@router.get("/audit/sla", response_class=HTMLResponse)
async def sla_page(
    request: Request,
    ctx: CanReadAudit,
    session: DbSession,
    workflow: Annotated[str | None, Query(max_length=200)] = None,
    opened_from: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    opened_to: Annotated[str | None, Query(alias="to", max_length=40)] = None,
) -> HTMLResponse:
    """Compliance per workflow (met, breached, open, overdue...) and the weekly chart; a bad
    filter is shown beside the form with the API's reason."""
    now = datetime.now(UTC)
    filters = {
        "workflow": (workflow or "").strip(),
        "from": _default_from(now) if opened_from is None else opened_from.strip(),
        "to": (opened_to or "").strip(),
    }
    report: SlaReportOut | None = None
    rows: list[StepRowOut] = []
    partial = False
    errors: FormErrors | None = None
    code = 200
    try:
        report, rows, partial = await _report(
            ctx,
            session,
            filters["workflow"] or None,
            _moment("from", filters["from"]),
            _moment("to", filters["to"]),
        )
    except Problem as problem:
        if problem.status != 422:
            raise
        errors, code = from_problem(problem), problem.status
    drawn = charts(weekly_counts((r.workflow, r.opened_at, r.outcome) for r in rows))
    csv_query = urlencode([("format", "csv"), *((k, v) for k, v in filters.items() if v)])
    return render(
        request,
        "sla.html",
        ctx=ctx,
        status=code,
        filters=filters,
        report=report,
        generated_at=utc(report.generated_at) if report else "",
        charts=drawn,
        partial=partial,
        errors=errors,
        csv_url=f"/v1/reports/sla?{csv_query}",
    )
