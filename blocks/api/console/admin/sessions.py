"""Console pages for the signed-in person's own sessions: where they are signed in, and signing
out the others, through the API's own routes (/v1/me/sessions)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from blocks.api.console.admin.common import ADMIN, back_to, notice, refused
from blocks.api.console.forms import FormErrors
from blocks.api.console.pages import render
from blocks.api.console.time_text import when
from blocks.api.deps import DbSession, OrgCtx, Person
from blocks.api.errors import Problem
from blocks.api.identity.me import my_sessions, revoke_my_session
from blocks.api.identity.sessions import SignedIn
from blocks.core.context import OrgContext

router = APIRouter()

PAGE = f"{ADMIN}/sessions"
NOTICES = {
    "revoked": "That session was signed out.",
    "others": "Every other session was signed out.",
}


async def _page(
    request: Request,
    ctx: OrgContext,
    signed: SignedIn,
    session: DbSession,
    *,
    errors: FormErrors | None = None,
    status: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "admin_sessions.html",
        ctx=ctx,
        status=status,
        notice=notice(request, NOTICES),
        sessions=await my_sessions(signed=signed, request=request, db=session),
        errors=errors,
        when=when,
    )


@router.get(PAGE)
async def sessions_page(
    request: Request, ctx: OrgCtx, signed: Person, session: DbSession
) -> HTMLResponse:
    return await _page(request, ctx, signed, session)


@router.post(f"{PAGE}/others/revoke", response_model=None)
async def revoke_others_page(
    request: Request, ctx: OrgCtx, signed: Person, session: DbSession
) -> RedirectResponse:
    """Each other live session ended by the API's own route, one audit event each."""
    for other in await my_sessions(signed=signed, request=request, db=session):
        if not other.current:
            await revoke_my_session(signed=signed, session_id=other.id, request=request, db=session)
    return back_to(PAGE, "others")


# After the route above: "others" is not a session id.
@router.post(f"{PAGE}/{{session_id}}/revoke", response_model=None)
async def revoke_session_page(
    session_id: uuid.UUID, request: Request, ctx: OrgCtx, signed: Person, session: DbSession
) -> HTMLResponse | RedirectResponse:
    try:
        await revoke_my_session(signed=signed, session_id=session_id, request=request, db=session)
    except Problem as problem:
        errors = await refused(session, problem)
        return await _page(request, ctx, signed, session, errors=errors, status=problem.status)
    return back_to(PAGE, "revoked")
