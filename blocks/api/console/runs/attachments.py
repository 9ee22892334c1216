"""The run page's upload form: attach a file to a run through the API's `upload_attachment`.

Who may upload is the API's call (run:read, and run:start or step:decide; else a 403 it audits);
its refusals (a file whose bytes are not what its name says, one too large, a kind the
organization does not accept) show the run page again with the API's message and status.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from blocks.api.console.forms import from_problem
from blocks.api.console.pages import redirect
from blocks.api.console.runs.pages import run_url, show_run
from blocks.api.console.runs.request import chosen_file, upload
from blocks.api.deps import CanReadRuns, DbSession, TemporalClient
from blocks.api.errors import Problem, invalid_field

router = APIRouter()


@router.post("/runs/{run_id}/attachments", response_model=None)
async def upload_page(
    run_id: uuid.UUID,
    request: Request,
    ctx: CanReadRuns,
    session: DbSession,
    client: TemporalClient,
) -> HTMLResponse | RedirectResponse:
    """Upload the chosen file, then back to the run page, which lists it; a refusal shows the
    run page again with the API's message, having stored nothing."""
    chosen = await chosen_file(request)
    try:
        if chosen is None:
            raise invalid_field("file", "choose a file to attach")
        await upload(request, ctx, session, run_id, chosen)
    except Problem as problem:
        if problem.status == 404:
            raise  # no such run: the API's page, as for the run page itself
        await session.rollback()
        return await show_run(
            request,
            ctx,
            session,
            client,
            run_id,
            upload_errors=from_problem(problem),
            status=problem.status,
        )
    return redirect(f"{run_url(run_id)}?done=attached")
