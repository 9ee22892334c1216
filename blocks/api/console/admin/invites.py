"""Console pages for invites: invite an address with roles, see the pending invites, send one
again or revoke it, through the API's own invite routes (their rules, their audit events)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from blocks.api.console.admin.common import ADMIN, ROLE_NAMES, back_to, form_list, notice, refused
from blocks.api.console.forms import FormErrors, from_validation, read_form
from blocks.api.console.pages import render
from blocks.api.console.time_text import when
from blocks.api.deps import CanManageMembers, DbSession
from blocks.api.errors import Problem
from blocks.api.identity.invites import InviteIn, invite, invites, resend, revoke
from blocks.core.context import OrgContext

router = APIRouter()

PAGE = f"{ADMIN}/invites"
NOTICES = {
    "invited": "Invite sent.",
    "resent": "Invite sent again; the earlier link no longer works.",
    "revoked": "Invite revoked.",
}


async def _page(
    request: Request,
    ctx: OrgContext,
    session: DbSession,
    *,
    errors: FormErrors | None = None,
    entered: dict[str, object] | None = None,
    status: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "admin_invites.html",
        ctx=ctx,
        status=status,
        notice=notice(request, NOTICES),
        invites=await invites(ctx=ctx, session=session),
        role_names=ROLE_NAMES,
        errors=errors,
        entered=entered or {"email": "", "roles": []},
        when=when,
    )


@router.get(PAGE)
async def invites_page(request: Request, ctx: CanManageMembers, session: DbSession) -> HTMLResponse:
    return await _page(request, ctx, session)


@router.post(PAGE, response_model=None)
async def invite_page(
    request: Request, ctx: CanManageMembers, session: DbSession, background: BackgroundTasks
) -> HTMLResponse | RedirectResponse:
    fields = await read_form(request)
    entered: dict[str, object] = {
        "email": fields.get("email", ""),
        "roles": await form_list(request, "roles"),
    }
    try:
        body = InviteIn.model_validate(entered)
        await invite(body=body, request=request, ctx=ctx, session=session, background=background)
    except ValidationError as invalid:
        errors = from_validation(invalid)
        return await _page(request, ctx, session, errors=errors, entered=entered, status=422)
    except Problem as problem:
        errors = await refused(session, problem)
        return await _page(
            request, ctx, session, errors=errors, entered=entered, status=problem.status
        )
    # FastAPI hands `background` (the email) to whatever response this route returns.
    return back_to(PAGE, "invited")


@router.post(f"{PAGE}/{{invite_id}}/resend", response_model=None)
async def resend_page(
    invite_id: uuid.UUID,
    request: Request,
    ctx: CanManageMembers,
    session: DbSession,
    background: BackgroundTasks,
) -> HTMLResponse | RedirectResponse:
    try:
        await resend(
            invite_id=invite_id, request=request, ctx=ctx, session=session, background=background
        )
    except Problem as problem:
        errors = await refused(session, problem)
        return await _page(request, ctx, session, errors=errors, status=problem.status)
    return back_to(PAGE, "resent")


@router.post(f"{PAGE}/{{invite_id}}/revoke", response_model=None)
async def revoke_page(
    invite_id: uuid.UUID, request: Request, ctx: CanManageMembers, session: DbSession
) -> HTMLResponse | RedirectResponse:
    try:
        await revoke(invite_id=invite_id, request=request, ctx=ctx, session=session)
    except Problem as problem:
        errors = await refused(session, problem)
        return await _page(request, ctx, session, errors=errors, status=problem.status)
    return back_to(PAGE, "revoked")
