"""Console pages for an organization's members: who they are, their roles and status; changing
roles, deactivating, reactivating and ending a member's sessions, through the API's own routes."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from blocks.api.console.admin.common import ADMIN, ROLE_NAMES, back_to, form_list, notice, refused
from blocks.api.console.forms import FormErrors, from_validation
from blocks.api.console.pages import render
from blocks.api.deps import CanManageMembers, CanManageSecurity, DbSession
from blocks.api.errors import Problem
from blocks.api.identity.members import (
    RolesIn,
    change_roles,
    deactivate,
    members,
    reactivate,
    revoke_sessions_of_member,
)
from blocks.core.context import OrgContext

router = APIRouter()

PAGE = f"{ADMIN}/members"
NOTICES = {
    "roles": "Roles changed.",
    "unchanged": "Those were already the member's roles; nothing changed.",
    "deactivated": "Member deactivated: their API keys and sessions were revoked.",
    "reactivated": "Member reactivated.",
    "sessions": "The member's sessions were ended.",
}


async def _page(
    request: Request,
    ctx: OrgContext,
    session: DbSession,
    *,
    errors: FormErrors | None = None,
    target: uuid.UUID | None = None,
    status: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "admin_members.html",
        ctx=ctx,
        status=status,
        notice=notice(request, NOTICES),
        members=await members(ctx=ctx, session=session),
        role_names=ROLE_NAMES,
        errors=errors,
        target=target,
    )


@router.get(f"{PAGE}")
async def members_page(request: Request, ctx: CanManageMembers, session: DbSession) -> HTMLResponse:
    return await _page(request, ctx, session)


@router.post(f"{PAGE}/{{user_id}}/roles", response_model=None)
async def change_roles_page(
    user_id: uuid.UUID, request: Request, ctx: CanManageMembers, session: DbSession
) -> HTMLResponse | RedirectResponse:
    try:
        body = RolesIn.model_validate({"roles": await form_list(request, "roles")})
    except ValidationError as invalid:
        return await _page(
            request, ctx, session, errors=from_validation(invalid), target=user_id, status=422
        )
    before = next((m.roles for m in await members(ctx=ctx, session=session) if m.id == user_id), [])
    try:
        after = await change_roles(
            user_id=user_id, body=body, request=request, ctx=ctx, session=session
        )
    except Problem as problem:
        errors = await refused(session, problem)
        return await _page(
            request, ctx, session, errors=errors, target=user_id, status=problem.status
        )
    done = "unchanged" if sorted(before) == sorted(after.roles) else "roles"
    return back_to(PAGE, done)


async def _act_on(
    request: Request,
    ctx: OrgContext,
    session: DbSession,
    user_id: uuid.UUID,
    action: Callable[[], Awaitable[object]],
    done: str,
) -> HTMLResponse | RedirectResponse:
    """One button on a member's row: the API route's call, then the list with its notice, or
    the list again with the API's refusal (the change undone)."""
    try:
        await action()
    except Problem as problem:
        errors = await refused(session, problem)
        return await _page(
            request, ctx, session, errors=errors, target=user_id, status=problem.status
        )
    return back_to(PAGE, done)


@router.post(f"{PAGE}/{{user_id}}/deactivate", response_model=None)
async def deactivate_page(
    user_id: uuid.UUID, request: Request, ctx: CanManageMembers, session: DbSession
) -> HTMLResponse | RedirectResponse:
    return await _act_on(
        request,
        ctx,
        session,
        user_id,
        lambda: deactivate(user_id=user_id, request=request, ctx=ctx, session=session),
        "deactivated",
    )


@router.post(f"{PAGE}/{{user_id}}/reactivate", response_model=None)
async def reactivate_page(
    user_id: uuid.UUID, request: Request, ctx: CanManageMembers, session: DbSession
) -> HTMLResponse | RedirectResponse:
    return await _act_on(
        request,
        ctx,
        session,
        user_id,
        lambda: reactivate(user_id=user_id, request=request, ctx=ctx, session=session),
        "reactivated",
    )


@router.post(f"{PAGE}/{{user_id}}/sessions/revoke", response_model=None)
async def revoke_sessions_page(
    user_id: uuid.UUID, request: Request, ctx: CanManageSecurity, session: DbSession
) -> HTMLResponse | RedirectResponse:
    return await _act_on(
        request,
        ctx,
        session,
        user_id,
        lambda: revoke_sessions_of_member(
            user_id=user_id, request=request, ctx=ctx, session=session
        ),
        "sessions",
    )
