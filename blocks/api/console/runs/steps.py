"""A step's console page: the request, prior votes, reminders and escalations, and the decision form.

The page reads the run through the API's `read_run` (so a step's context shows only to whom may
decide it now), its input and files through `read_run_input` and `list_attachments`, the decision
form's schema from the catalogue (`list_workflows`), and decides through the API's `decide_step`,
after uploading a chosen file through `upload_attachment`: every refusal is the API's, shown on the
page with its status.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client

from blocks.api.approvals.catalogue import list_workflows
from blocks.api.approvals.runs.detail import decide_step, read_run
from blocks.api.console.forms import FormErrors, from_problem, from_validation, read_form
from blocks.api.console.pages import redirect, render
from blocks.api.console.runs import attachments as attachment_pages
from blocks.api.console.runs.inbox import member_names, name_of
from blocks.api.console.runs.request import (
    ACCEPT,
    chosen_file,
    run_files,
    run_request,
    upload,
    upload_hint,
)
from blocks.api.console.runs.schema_forms import form_fields, parse_form
from blocks.api.console.time_text import deadline, utc
from blocks.api.deps import CanDecide, CanReadRuns, DbSession, TemporalClient
from blocks.api.errors import Problem, not_found
from blocks.api.schemas import DecisionIn, StepDetailOut, StepEventOut, StepOut
from blocks.core.context import OrgContext
from blocks.core.roles import Permission
from blocks.models.approvals.runs import get_run

router = APIRouter()
# The run page's upload form (POST /runs/{run_id}/attachments).
router.include_router(attachment_pages.router)

_EVENTS = {
    "opened": "Opened",
    "reminded": "Reminder sent",
    "escalated": "Escalated",
    "decided": "Vote",
    "sla_breached": "SLA breached",
    "closed": "Closed",
}


@dataclass(frozen=True)
class HistoryRow:
    at: str
    what: str
    who: str
    decision: str | None
    channel: str | None
    comment: str | None
    approvers: str


@dataclass(frozen=True)
class ContextItem:
    label: str
    text: str | None  # rich text, shown through |rich
    data: str | None  # anything else, as indented JSON


def _approvers(labels: list[str] | None, names: dict[str, str]) -> str:
    shown = []
    for label in labels or []:
        kind, _, value = label.partition(":")
        shown.append(name_of(names, value) if kind == "user" else f"{kind} {value}")
    return ", ".join(shown)


def _history(events: list[StepEventOut], names: dict[str, str]) -> list[HistoryRow]:
    rows = []
    for event in events:
        who = name_of(names, event.actor_id)
        if event.on_behalf_of:
            who = f"{who}, for {name_of(names, event.on_behalf_of)}"
        rows.append(
            HistoryRow(
                at=utc(event.at, ""),
                what=_EVENTS.get(event.event, event.event),
                who=who,
                decision=event.decision,
                channel=event.channel,
                comment=event.comment,
                approvers=_approvers(event.approvers, names),
            )
        )
    return rows


def _context(context: dict[str, Any] | None) -> list[ContextItem]:
    """What the workflow gave the step's approvers to decide on, key by key."""
    items = []
    for key, value in (context or {}).items():
        label = str(key).replace("_", " ").capitalize()
        if isinstance(value, str):
            items.append(ContextItem(label, value, None))
        else:
            items.append(ContextItem(label, None, json.dumps(value, indent=2, ensure_ascii=False)))
    return items


async def _form_schema(
    ctx: OrgContext, session: AsyncSession, workflow: str | None, step_id: str
) -> dict[str, Any] | None:
    """The JSON Schema the step's decisions carry, as the catalogue publishes it (None: none)."""
    if workflow is None or not ctx.can(Permission.RUN_READ):
        return None
    catalogue = await list_workflows(ctx, session)
    published = next((w for w in catalogue.workflows if w.name == workflow), None)
    return published.forms.get(step_id) if published else None


async def _step_page(
    request: Request,
    ctx: OrgContext,
    session: AsyncSession,
    client: Client,
    run_id: uuid.UUID,
    step_id: str,
    *,
    errors: FormErrors | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    run = await read_run(run_id, ctx, session, client)
    detail = next((s for s in run.steps if s.step_id == step_id), None)
    pending = next((s for s in run.pending_steps if s.step_id == step_id), None)
    # The live view of a waiting step (approvers and deadline now, its context), else its history.
    step: StepOut | StepDetailOut | None = pending or detail
    if step is None:
        raise not_found("step")
    names = await member_names(ctx, session)
    schema = await _form_schema(ctx, session, run.workflow, step_id)
    can_decide = pending is not None and ctx.can(Permission.STEP_DECIDE)
    history = _history(detail.history if detail else [], names)
    now = datetime.now(UTC)
    return render(
        request,
        "step.html",
        ctx=ctx,
        status=status,
        run=run,
        step_id=step_id,
        title=step.title,
        state=step.state,
        started=utc(run.created_at, ""),
        opened=utc(step.opened_at, ""),
        deadline_at=utc(step.deadline, ""),
        step_due=deadline(step.deadline, now) if step.state == "pending" else None,
        requester=name_of(names, run.requested_by, nobody="the system"),
        approvers=_approvers(step.approvers, names),
        context=_context(pending.context if pending else None),
        context_hidden=bool(pending and pending.context_hidden),
        request_input=await run_request(ctx, session, client, run_id),
        files=await run_files(ctx, session, run_id, names),
        upload_hint=await upload_hint(request, ctx, session) if can_decide else None,
        accept=ACCEPT,
        votes=[row for row in history if row.what == _EVENTS["decided"]],
        history=history,
        can_decide=can_decide,
        fields=form_fields(schema, values, errors.fields if errors else None) if can_decide else [],
        comment=(values or {}).get("comment", ""),
        errors=errors,
        action=f"/console/runs/{run_id}/steps/{step_id}",
    )


@router.get("/runs/{run_id}/steps/{step_id}", response_class=HTMLResponse)
async def step_page(
    run_id: uuid.UUID,
    step_id: str,
    request: Request,
    ctx: CanReadRuns,
    session: DbSession,
    client: TemporalClient,
) -> HTMLResponse:
    return await _step_page(request, ctx, session, client, run_id, step_id)


@router.post("/runs/{run_id}/steps/{step_id}", response_class=HTMLResponse)
async def step_decide(
    run_id: uuid.UUID,
    step_id: str,
    request: Request,
    ctx: CanDecide,
    session: DbSession,
    client: TemporalClient,
) -> Response:
    """Approve or reject through the API's `decide_step`; a chosen file is first uploaded through
    the API's `upload_attachment` and named by the decision. A refusal of either shows the page
    again with the API's message (and the form as filled), at the refusal's status; a refused
    upload decides nothing and stores nothing (the transaction is rolled back)."""
    values = await read_form(request)
    chosen = await chosen_file(request)
    run = await get_run(ctx, session, run_id)
    schema = await _form_schema(ctx, session, run.workflow_name if run else None, step_id)
    try:
        body = DecisionIn.model_validate(
            {
                "decision": values.get("decision", ""),
                "comment": values.get("comment", "").strip() or None,
                "form": parse_form(schema, values) if schema is not None else None,
            }
        )
        if chosen is not None:
            # Only once the decision itself reads well: a bad field uploads nothing.
            attached = await upload(request, ctx, session, run_id, chosen)
            body = body.model_copy(update={"attachment_ids": [attached.id]})
        out = await decide_step(run_id, step_id, body, request, ctx, session, client)
    except ValidationError as err:
        errors, status = from_validation(err), 422
    except Problem as problem:
        if not ctx.can(Permission.RUN_READ):
            raise  # the page cannot be shown again to who may not read the run: the API's page
        await session.rollback()
        errors, status = from_problem(problem), problem.status
    else:
        done = "approved" if out.decision == "approve" else "rejected"
        return redirect(f"/console/inbox?done={done}")
    return await _step_page(
        request, ctx, session, client, run_id, step_id, errors=errors, values=values, status=status
    )
