"""Console pages for auditors: events with filters, a run's chain of custody, verification, export, the SLA report."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from blocks.api.audit.events import list_audit_events
from blocks.api.audit.export import run_custody, verify_audit
from blocks.api.console.audit import sla as sla_page
from blocks.api.console.forms import FormErrors, from_problem, moment_field, text_field
from blocks.api.console.pages import redirect, render
from blocks.api.console.time_text import utc, when
from blocks.api.deps import CanReadAudit, DbSession
from blocks.api.errors import Problem, invalid_field
from blocks.api.params import BIGINT_MAX
from blocks.api.schemas import AuditEventListOut

router = APIRouter()
router.include_router(sla_page.router)

AUDIT = "/console/audit"
EXPORT_API = "/v1/audit/export"
PAGE_SIZE = 100
# The export's filters, as the API names them (`from` and `to` are its query aliases).
EXPORT_FILTERS = ("from", "to", "action", "actor_id", "run_id")


def export_url(format: str = "jsonl", **filters: str | None) -> str:
    """The API's export route with these filters: the browser downloads it with its session."""
    pairs = [("format", format), *((k, v) for k, v in filters.items() if v)]
    return f"{EXPORT_API}?{urlencode(pairs)}"


def _run_id(text: str) -> uuid.UUID | None:
    if not text:
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        raise invalid_field("run_id", "not a run id") from None


def _actor(actor_type: str, actor_id: str | None, email: str | None) -> str:
    if email:
        return email
    return f"{actor_type} {actor_id}" if actor_id else actor_type


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(
    request: Request,
    ctx: CanReadAudit,
    session: DbSession,
    run_id: Annotated[str | None, Query(max_length=100)] = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
    actor_id: Annotated[str | None, Query(max_length=100)] = None,
    occurred_from: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    occurred_to: Annotated[str | None, Query(alias="to", max_length=40)] = None,
    after_seq: Annotated[int, Query(ge=0, le=BIGINT_MAX)] = 0,
) -> HTMLResponse:
    """The organization's audit events in chain order, `GET /v1/audit-events` a page at a time,
    with its filters (run, action, actor, time window); and the export of the same selection,
    as links to the API's own export route."""
    filters = {
        "run_id": text_field(run_id),
        "action": text_field(action),
        "actor_id": text_field(actor_id),
        "from": text_field(occurred_from),
        "to": text_field(occurred_to),
    }
    listing: AuditEventListOut | None = None
    errors: FormErrors | None = None
    code = 200
    try:
        listing = await list_audit_events(
            ctx=ctx,
            session=session,
            run_id=_run_id(filters["run_id"]),
            action=filters["action"] or None,
            actor_id=filters["actor_id"] or None,
            occurred_from=moment_field("from", filters["from"]),
            occurred_to=moment_field("to", filters["to"]),
            after_seq=after_seq,
            limit=PAGE_SIZE,
        )
    except Problem as problem:
        if problem.status not in (404, 422):
            raise
        errors, code = from_problem(problem), problem.status
    rows = [
        {
            "event": event,
            "at": utc(event.occurred_at),
            "actor": _actor(event.actor_type, event.actor_id, event.actor_email),
            "target": " ".join(t for t in (event.target_type, event.target_id) if t),
            "custody_url": f"/console/runs/{event.run_id}/custody" if event.run_id else None,
        }
        for event in (listing.events if listing else [])
    ]
    here = {name: value for name, value in filters.items() if value}
    next_url = (
        f"{AUDIT}?{urlencode({**here, 'after_seq': listing.next_after_seq})}"
        if listing and listing.next_after_seq is not None
        else None
    )
    exported = {} if errors else here
    return render(
        request,
        "audit.html",
        ctx=ctx,
        status=code,
        filters=filters,
        filtered=bool(here),
        run_id=filters["run_id"],
        rows=rows,
        errors=errors,
        next_url=next_url,
        first_url=f"{AUDIT}?{urlencode(here)}" if after_seq else None,
        jsonl_url=export_url("jsonl", **exported),
        csv_url=export_url("csv", **exported),
    )


@router.get("/audit/export", response_class=RedirectResponse)
async def export_redirect(
    request: Request,
    ctx: CanReadAudit,
    format: Annotated[str, Query(max_length=10)] = "jsonl",
) -> RedirectResponse:
    """The export form's answer: the API's export URL with the filters that were filled in (an
    empty field is no filter). The API's own route checks them and streams the file."""
    given = {name: request.query_params.get(name, "").strip() for name in EXPORT_FILTERS}
    return redirect(export_url(format, **given))


@router.get("/audit/verify", response_class=HTMLResponse)
async def verify_page(
    request: Request,
    ctx: CanReadAudit,
    run_id: Annotated[uuid.UUID | None, Query()] = None,
) -> HTMLResponse:
    """`GET /v1/audit/verify`: the whole chain and its checkpoints verified now."""
    report = await verify_audit(request=request, ctx=ctx)
    return render(
        request,
        "audit_verify.html",
        ctx=ctx,
        report=report,
        verified_at=utc(report.verified_at),
        run_id=str(run_id) if run_id else "",
        back_url=f"/console/runs/{run_id}/custody" if run_id else AUDIT,
    )


@router.get("/runs/{run_id}/custody", response_class=HTMLResponse)
async def custody_page(
    run_id: uuid.UUID, request: Request, ctx: CanReadAudit, session: DbSession
) -> HTMLResponse:
    """`GET /v1/runs/{id}/custody`: each of the run's events with its own hash checked and the
    checkpoint that certifies it, and the verification of the chain they belong to."""
    custody = await run_custody(run_id=run_id, request=request, ctx=ctx, session=session)
    now = datetime.now(UTC)
    rows = [
        {
            "event": event,
            "at": utc(datetime.fromisoformat(event.occurred_at)),
            # Custody shows events as hashed: personal fields stay sealed there (the events
            # page shows them revealed), so the actor is named by type and id.
            "actor": _actor(event.actor_type, event.actor_id, None),
            "certified": (
                f"checkpoint {event.certified_by.seq}, signed {utc(event.certified_by.signed_at)}"
                if event.certified_by
                else None
            ),
        }
        for event in custody.events
    ]
    return render(
        request,
        "custody.html",
        ctx=ctx,
        custody=custody,
        rows=rows,
        verified_at=when(custody.verification.verified_at, now),
        run_url=f"/console/runs/{run_id}",
        verify_url=f"{AUDIT}/verify?{urlencode({'run_id': str(run_id)})}",
        jsonl_url=export_url("jsonl", run_id=str(run_id)),
        csv_url=export_url("csv", run_id=str(run_id)),
    )
