"""The console page that starts a run: a workflow picked from the catalogue, then a form generated
from its published input schema, sent through `POST /v1/runs` (refusals shown on the form)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from blocks.api.approvals.catalogue import WorkflowOut, list_workflows
from blocks.api.approvals.runs.starts import start_run
from blocks.api.console.forms import FormErrors, from_problem, from_validation, read_form
from blocks.api.console.pages import redirect, render
from blocks.api.console.runs.schema_forms import form_fields, parse_form
from blocks.api.deps import CanReadRuns, CanStartRuns, DbSession, TemporalClient
from blocks.api.errors import Problem
from blocks.api.schemas import StartRunIn
from blocks.core.context import OrgContext

router = APIRouter()

NEW_RUN = "/console/runs/new"


def _idempotency_key(posted: str | None) -> str:
    """The form's key for `Idempotency-Key`: sending the form twice starts one run. A key that
    is not one this page made (a UUID) is replaced rather than passed on."""
    try:
        return str(uuid.UUID(posted or ""))
    except ValueError:
        return str(uuid.uuid4())


async def _page(
    request: Request,
    ctx: OrgContext,
    reader: OrgContext,
    session: DbSession,
    *,
    chosen_name: str | None,
    posted: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
    key: str | None = None,
) -> HTMLResponse:
    catalogue = await list_workflows(ctx=reader, session=session)
    startable = [w for w in catalogue.workflows if w.allowed]
    chosen: WorkflowOut | None = next((w for w in startable if w.name == chosen_name), None)
    if chosen_name and chosen is None and errors is None:
        errors = FormErrors("choose a workflow from the catalogue", {})
        status = 404
    fields = (
        form_fields(chosen.input_schema, posted, errors.fields if errors else None)
        if chosen
        else []
    )
    return render(
        request,
        "start_run.html",
        ctx=ctx,
        status=status,
        workflows=startable,
        chosen=chosen,
        fields=fields,
        errors=errors,
        idempotency_key=_idempotency_key(key),
        action=NEW_RUN,
    )


@router.get("/runs/new", response_class=HTMLResponse)
async def start_page(
    request: Request,
    ctx: CanStartRuns,
    reader: CanReadRuns,
    session: DbSession,
    workflow: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    """The catalogue's workflows this organization may start; with `workflow`, its input form."""
    return await _page(request, ctx, reader, session, chosen_name=(workflow or "").strip())


@router.post("/runs/new", response_model=None)
async def start_submit(
    request: Request,
    ctx: CanStartRuns,
    reader: CanReadRuns,
    session: DbSession,
    client: TemporalClient,
) -> HTMLResponse | RedirectResponse:
    """Start the run through the API's own route; invalid input (the API's field errors), an
    unknown or disallowed workflow show the form again with those errors, and start nothing."""
    form = await read_form(request)
    name = form.get("workflow", "").strip()
    catalogue = await list_workflows(ctx=reader, session=session)
    schema = next((w.input_schema for w in catalogue.workflows if w.name == name), None)
    try:
        body = StartRunIn.model_validate({"workflow": name, "input": parse_form(schema, form)})
    except ValidationError as err:
        return await _page(
            request,
            ctx,
            reader,
            session,
            chosen_name=name,
            posted=form,
            errors=from_validation(err),
            status=422,
        )
    try:
        run = await start_run(
            body=body,
            request=request,
            response=Response(),
            ctx=ctx,
            session=session,
            client=client,
            idempotency_key=_idempotency_key(form.get("idempotency_key")),
        )
    except Problem as problem:
        await session.rollback()
        # Sent again after a 503, the same key resumes that start; after any other refusal
        # nothing started under it, and the corrected input goes with a new one.
        return await _page(
            request,
            ctx,
            reader,
            session,
            chosen_name=name,
            posted=form,
            errors=from_problem(problem),
            status=problem.status,
            key=form.get("idempotency_key") if problem.status == 503 else None,
        )
    return redirect(f"/console/runs/{run.id}?done=started")
