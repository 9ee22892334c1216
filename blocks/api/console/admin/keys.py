"""Console pages for API keys: one's own (every member), or every member's (admins); creating
one shows its secret once, on the answer to the form; revoking. All through the API's routes."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from blocks.api.console.admin.common import ADMIN, back_to, form_list, notice, refused
from blocks.api.console.forms import FormErrors, from_validation, read_form
from blocks.api.console.pages import render
from blocks.api.console.time_text import when
from blocks.api.deps import CanManageOwnKeys, DbSession
from blocks.api.errors import Problem
from blocks.api.identity.api_keys import ApiKeyIn, create, keys, revoke
from blocks.api.identity.members import members
from blocks.core.context import OrgContext
from blocks.core.roles import Permission

router = APIRouter()

PAGE = f"{ADMIN}/api-keys"
NOTICES = {"revoked": "API key revoked: it no longer works."}


def _expiry(value: str) -> str | None:
    # A datetime-local field names no zone; the form says UTC, so the value is read as UTC.
    value = value.strip()
    return f"{value}Z" if value and "T" in value and value[-1:].isdigit() else value or None


async def _page(
    request: Request,
    ctx: OrgContext,
    session: DbSession,
    *,
    every: bool,
    errors: FormErrors | None = None,
    entered: dict[str, object] | None = None,
    status: int = 200,
) -> HTMLResponse:
    listed = await keys(request=request, ctx=ctx, session=session, all_keys=every)
    owners = {m.id: m.email for m in await members(ctx=ctx, session=session)} if every else {}
    return render(
        request,
        "admin_keys.html",
        ctx=ctx,
        status=status,
        notice=notice(request, NOTICES),
        keys=listed,
        every=every,
        owners=owners,
        may_see_all=ctx.can(Permission.API_KEY_MANAGE),
        held=[role.value for role in ctx.roles],
        errors=errors,
        entered=entered or {"name": "", "roles": [], "expires_at": ""},
        when=when,
    )


@router.get(PAGE)
async def keys_page(
    request: Request,
    ctx: CanManageOwnKeys,
    session: DbSession,
    every: bool = Query(default=False, alias="all"),
) -> HTMLResponse:
    """`?all=true` asks the API for every member's keys: it refuses (403, audited) whoever
    may not see them."""
    return await _page(request, ctx, session, every=every)


@router.post(PAGE, response_model=None)
async def create_key_page(
    request: Request, ctx: CanManageOwnKeys, session: DbSession
) -> HTMLResponse:
    fields = await read_form(request)
    entered: dict[str, object] = {
        "name": fields.get("name", ""),
        "roles": await form_list(request, "roles"),
        "expires_at": fields.get("expires_at", ""),
    }
    try:
        body = ApiKeyIn.model_validate(
            entered | {"expires_at": _expiry(fields.get("expires_at", ""))}
        )
        created = await create(body=body, request=request, ctx=ctx, session=session)
    except ValidationError as invalid:
        errors = from_validation(invalid)
        return await _page(
            request, ctx, session, every=False, errors=errors, entered=entered, status=422
        )
    except Problem as problem:
        errors = await refused(session, problem)
        return await _page(
            request,
            ctx,
            session,
            every=False,
            errors=errors,
            entered=entered,
            status=problem.status,
        )
    # The secret is on this answer only (no redirect could carry it without storing it); the
    # page is no-store like every console answer, and its script turns the history entry into
    # the list, so reloading neither shows the key again nor sends the form a second time.
    return render(request, "admin_key_created.html", ctx=ctx, status=201, key=created, when=when)


@router.post(f"{PAGE}/{{key_id}}/revoke", response_model=None)
async def revoke_key_page(
    key_id: uuid.UUID, request: Request, ctx: CanManageOwnKeys, session: DbSession
) -> HTMLResponse | RedirectResponse:
    every = (await read_form(request)).get("all") == "true"
    try:
        await revoke(key_id=key_id, request=request, ctx=ctx, session=session)
    except Problem as problem:
        errors = await refused(session, problem)
        return await _page(request, ctx, session, every=False, errors=errors, status=problem.status)
    return back_to(PAGE, "revoked", **({"all": "true"} if every else {}))
