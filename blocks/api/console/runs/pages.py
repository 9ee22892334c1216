"""Console pages for operators: runs with filters, a run's step timeline, starting and cancelling runs."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from blocks.api.approvals.catalogue import list_workflows
from blocks.api.approvals.runs.cancel import cancel_run
from blocks.api.approvals.runs.detail import read_run
from blocks.api.approvals.runs.listing import RunStatusFilter, list_runs
from blocks.api.console.forms import (
    FormErrors,
    from_problem,
    from_validation,
    moment_field,
    read_form,
    text_field,
)
from blocks.api.console.pages import redirect, render
from blocks.api.console.runs import start as run_start_pages
from blocks.api.console.runs.inbox import member_names
from blocks.api.console.runs.request import ACCEPT, run_files, run_request, upload_hint
from blocks.api.console.time_text import Deadline, deadline, utc, when
from blocks.api.deps import CanCancelRuns, CanReadRuns, DbSession, TemporalClient
from blocks.api.errors import Problem, invalid_field
from blocks.api.schemas import RunCancelIn, RunListOut, RunOut, StepDetailOut, StepEventOut
from blocks.core.context import OrgContext
from blocks.core.roles import Permission

router = APIRouter()
# Before `/runs/{run_id}`: "new" is not a run id.
router.include_router(run_start_pages.router)

RUNS = "/console/runs"
PAGE_SIZE = 50
STATUSES: tuple[str, ...] = tuple(s.value for s in RunStatusFilter)
NOTICES = {
    "started": "The run was started.",
    "cancel_requested": (
        "Cancellation requested: the steps that wait close as cancelled, then the run reads"
        " canceled."
    ),
    "attached": "The file was attached to the run.",
}
# What each step event is called on the timeline (the API's names, without `step.`).
EVENT_NAMES = {
    "opened": "Opened",
    "reminded": "Reminder sent",
    "escalated": "Escalated",
    "decided": "Decided",
    "sla_breached": "SLA breached",
    "closed": "Closed",
}


def notice(request: Request) -> str | None:
    """The fixed message for `?done=<key>`: the key only selects, query text is never shown."""
    return NOTICES.get(request.query_params.get("done", ""))


def run_url(run_id: uuid.UUID | str) -> str:
    return f"{RUNS}/{run_id}"


def step_url(run_id: uuid.UUID | str, step_id: str) -> str:
    return f"{RUNS}/{run_id}/steps/{quote(step_id, safe='')}"


# ------------------------------------------------------------------------------------- the list


@dataclass(frozen=True)
class RunFilters:
    """The list's filters as typed into its form (shown again as typed)."""

    status: tuple[str, ...] = ()
    workflow: str = ""
    requested_by: str = ""
    pending_approver: str = ""
    sla_deadline_after: str = ""
    sla_deadline_before: str = ""

    def query(self, **extra: str) -> str:
        pairs: list[tuple[str, str]] = [("status", s) for s in self.status]
        for name in (
            "workflow",
            "requested_by",
            "pending_approver",
            "sla_deadline_after",
            "sla_deadline_before",
        ):
            if getattr(self, name):
                pairs.append((name, getattr(self, name)))
        pairs += [(k, v) for k, v in extra.items() if v]
        return urlencode(pairs)


def _member(name: str, text: str) -> uuid.UUID | None:
    if not text:
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        raise invalid_field(name, "not a member id") from None


def _statuses(values: tuple[str, ...]) -> list[RunStatusFilter]:
    try:
        return [RunStatusFilter(v) for v in values]
    except ValueError:
        raise invalid_field("status", f"one of {', '.join(STATUSES)}") from None


async def _listing(
    ctx: OrgContext, client: TemporalClient, filters: RunFilters, cursor: str | None
) -> RunListOut:
    return await list_runs(
        ctx=ctx,
        client=client,
        status=_statuses(filters.status),
        workflow=filters.workflow or None,
        requested_by=_member("requested_by", filters.requested_by),
        pending_approver=filters.pending_approver or None,
        sla_deadline_before=moment_field("sla_deadline_before", filters.sla_deadline_before),
        sla_deadline_after=moment_field("sla_deadline_after", filters.sla_deadline_after),
        limit=PAGE_SIZE,
        cursor=cursor or None,
    )


@router.get("/runs", response_class=HTMLResponse)
async def runs_page(
    request: Request,
    ctx: CanReadRuns,
    session: DbSession,
    client: TemporalClient,
    status: Annotated[list[str] | None, Query(max_length=len(STATUSES))] = None,
    workflow: Annotated[str | None, Query(max_length=200)] = None,
    requested_by: Annotated[str | None, Query(max_length=100)] = None,
    pending_approver: Annotated[str | None, Query(max_length=100)] = None,
    sla_deadline_after: Annotated[str | None, Query(max_length=40)] = None,
    sla_deadline_before: Annotated[str | None, Query(max_length=40)] = None,
    cursor: Annotated[str | None, Query(max_length=4096)] = None,
) -> HTMLResponse:
    """The organization's runs, newest first, as `GET /v1/runs` lists them; an empty field of
    the filter form is no filter, a bad one is shown beside the form with the API's reason."""
    filters = RunFilters(
        status=tuple(dict.fromkeys(s for s in status or [] if s)),
        workflow=text_field(workflow),
        requested_by=text_field(requested_by),
        pending_approver=text_field(pending_approver),
        sla_deadline_after=text_field(sla_deadline_after),
        sla_deadline_before=text_field(sla_deadline_before),
    )
    listing: RunListOut | None = None
    errors: FormErrors | None = None
    code = 200
    try:
        listing = await _listing(ctx, client, filters, text_field(cursor))
    except Problem as problem:
        if problem.status != 422:
            raise
        errors, code = from_problem(problem), problem.status
    catalogue = await list_workflows(ctx=ctx, session=session)
    now = datetime.now(UTC)
    rows = [
        {
            "run": run,
            "url": run_url(run.id),
            "started": when(run.started_at, now),
            "closed": utc(run.closed_at, ""),
            "deadline": deadline(run.sla_deadline, now, waiting=run.closed_at is None),
        }
        for run in (listing.runs if listing else [])
    ]
    next_url = (
        f"{RUNS}?{filters.query(cursor=listing.next_cursor)}"
        if listing and listing.next_cursor
        else None
    )
    return render(
        request,
        "runs.html",
        ctx=ctx,
        status=code,
        notice=notice(request),
        filters=filters,
        statuses=STATUSES,
        workflow_names=[w.name for w in catalogue.workflows],
        rows=rows,
        errors=errors,
        next_url=next_url,
        first_url=f"{RUNS}?{filters.query()}" if cursor else None,
        may_start=ctx.can(Permission.RUN_START),
    )


# ------------------------------------------------------------------------------ one run's page


@dataclass(frozen=True)
class EventView:
    name: str
    at: str
    deadline: str
    event: StepEventOut


@dataclass(frozen=True)
class StepView:
    step: StepDetailOut
    url: str | None  # the step's own page while it waits
    opened: str
    closed: str
    deadline: Deadline | None
    events: list[EventView]
    # What the step's approvers see to decide (the API shows it only to whom may decide now).
    context: list[tuple[str, str]]
    context_hidden: bool


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _step_views(run: RunOut, now: datetime) -> list[StepView]:
    waiting = {s.step_id: s for s in run.pending_steps}
    return [
        StepView(
            step=step,
            url=step_url(run.id, step.step_id) if step.state == "pending" else None,
            opened=utc(step.opened_at),
            closed=utc(step.closed_at, ""),
            deadline=deadline(step.deadline, now, waiting=step.state == "pending"),
            events=[
                EventView(
                    EVENT_NAMES.get(e.event, e.event.replace("_", " ")),
                    utc(e.at),
                    utc(e.deadline, ""),
                    e,
                )
                for e in step.history
            ],
            context=[
                (str(k), _shown(v))
                for k, v in (
                    (waiting[step.step_id].context or {}) if step.step_id in waiting else {}
                ).items()
            ],
            context_hidden=step.step_id in waiting and waiting[step.step_id].context_hidden,
        )
        for step in run.steps
    ]


def _facts(run: RunOut) -> list[tuple[str, Any]]:
    facts: list[tuple[str, Any]] = [
        ("Status", run.status),
        ("Stage", run.stage or "—"),
        ("Workflow", run.workflow),
        ("Version", run.workflow_version or "—"),
        ("Requested by", str(run.requested_by) if run.requested_by else "—"),
        ("Created", utc(run.created_at)),
    ]
    return facts


async def show_run(
    request: Request,
    ctx: OrgContext,
    session: DbSession,
    client: TemporalClient,
    run_id: uuid.UUID,
    *,
    errors: FormErrors | None = None,
    upload_errors: FormErrors | None = None,
    status: int = 200,
    reason: str = "",
) -> HTMLResponse:
    """The run page; `errors` are the cancel form's, `upload_errors` the upload form's."""
    run = await read_run(run_id=run_id, ctx=ctx, session=session, client=client)
    now = datetime.now(UTC)
    # Offered to the roles the API lets upload (run:start or step:decide); the API decides.
    may_upload = ctx.can(Permission.RUN_START) or ctx.can(Permission.STEP_DECIDE)
    return render(
        request,
        "run.html",
        ctx=ctx,
        status=status,
        notice=notice(request),
        run=run,
        facts=_facts(run),
        result=sorted((run.result or {}).items()),
        steps=_step_views(run, now),
        may_cancel=run.status == "running" and ctx.can(Permission.RUN_CANCEL),
        may_audit=ctx.can(Permission.AUDIT_READ),
        cancel_url=f"{run_url(run.id)}/cancel",
        custody_url=f"{run_url(run.id)}/custody",
        errors=errors,
        reason=reason,
        request_input=await run_request(ctx, session, client, run.id),
        files=await run_files(ctx, session, run.id, await member_names(ctx, session)),
        may_upload=may_upload,
        upload_hint=await upload_hint(request, ctx, session) if may_upload else None,
        upload_url=f"{run_url(run.id)}/attachments",
        accept=ACCEPT,
        upload_errors=upload_errors,
    )


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run_page(
    run_id: uuid.UUID,
    request: Request,
    ctx: CanReadRuns,
    session: DbSession,
    client: TemporalClient,
) -> HTMLResponse:
    """The run as `GET /v1/runs/{id}` reads it: status, workflow, result, and each step with
    its history (opened, reminders, escalations, votes with who and by which channel, breaches)."""
    return await show_run(request, ctx, session, client, run_id)


@router.post("/runs/{run_id}/cancel", response_model=None)
async def cancel_page(
    run_id: uuid.UUID,
    request: Request,
    ctx: CanCancelRuns,
    reader: CanReadRuns,
    session: DbSession,
    client: TemporalClient,
) -> HTMLResponse | RedirectResponse:
    """Cancel through `POST /v1/runs/{id}/cancel`; a refusal shows the run page again with the
    API's message (and the reason as typed), having changed nothing."""
    form = await read_form(request)
    reason = form.get("reason", "")
    try:
        body = RunCancelIn.model_validate({"reason": reason})
    except ValidationError as err:
        return await show_run(
            request,
            reader,
            session,
            client,
            run_id,
            errors=from_validation(err),
            status=422,
            reason=reason,
        )
    try:
        await cancel_run(
            run_id=run_id, body=body, request=request, ctx=ctx, session=session, client=client
        )
    except Problem as problem:
        await session.rollback()
        return await show_run(
            request,
            reader,
            session,
            client,
            run_id,
            errors=from_problem(problem),
            status=problem.status,
            reason=reason,
        )
    return redirect(f"{run_url(run_id)}?done=cancel_requested")
