"""What the console's sign-in pages share: where a person may be sent afterwards (a console path
only), the cookies a route function set carried over to the page's answer, and the step after a
proven identity (the second factor, or the organization: entered at once when there is one)."""

from __future__ import annotations

from datetime import timedelta
from http.cookies import SimpleCookie
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import RedirectResponse
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.api.console.errors import CONSOLE_PREFIX
from blocks.api.console.pages import redirect
from blocks.api.errors import Problem
from blocks.api.identity.auth import sign_in
from blocks.api.identity.auth.support import SignInOut, auth_settings
from blocks.api.identity.sessions import SESSION_COOKIE, SignedIn
from blocks.core.identity.redirects import safe_next
from blocks.models.identity.orgs import User
from blocks.models.identity.sessions import find_live_session

HOME = f"{CONSOLE_PREFIX}/inbox"


def console_next(candidate: str | None) -> str:
    """`candidate` when it is a path of this console (never another site, nor another part of
    this one: no open redirect), else the inbox."""
    path = safe_next(candidate)
    inside = path == CONSOLE_PREFIX or path.startswith(f"{CONSOLE_PREFIX}/")
    if not inside or "/../" in f"{path}/" or path.startswith(f"{CONSOLE_PREFIX}/static/"):
        return HOME
    return path


def with_next(page: str, next_path: str) -> str:
    """`page` (a console path) carrying `next_path` on, unless it is the default anyway."""
    if next_path == HOME:
        return page
    return f"{page}?next={quote(next_path, safe='/')}"


def carry_cookies(source: Response, target: Response) -> Response:
    """The Set-Cookie headers a route function wrote on `source` (a new or rotated session
    token, a cleared cookie), in order, on the answer the browser gets."""
    for name, value in source.raw_headers:
        if name == b"set-cookie":
            target.raw_headers.append((name, value))
    return target


def with_problem_headers(problem: Problem, target: Response) -> Response:
    """A refusal's own headers (Retry-After of a rate limit) on the page showing it."""
    for name, value in (problem.headers or {}).items():
        if name.lower() != "www-authenticate":
            target.headers[name] = value
    return target


async def _session_set_on(
    request: Request, db: AsyncSession, response: Response
) -> SignedIn | None:
    """The session whose token a route function just set on `response` (not yet a cookie of
    the request), as the dependency `Person` would resolve it on the next request."""
    token = None
    for name, value in response.raw_headers:
        if name == b"set-cookie":
            cookie: SimpleCookie = SimpleCookie(value.decode("latin-1"))
            if SESSION_COOKIE in cookie and cookie[SESSION_COOKIE].value:
                token = cookie[SESSION_COOKIE].value
    if token is None:
        return None
    idle = timedelta(minutes=auth_settings(request).session_idle_minutes)
    row = await find_live_session(db, token, idle=idle)
    user = await db.get(User, row.user_id) if row is not None else None
    if row is None or user is None:
        return None
    return SignedIn(session=row, user=user)


async def after_identity(
    request: Request,
    db: AsyncSession,
    out: SignInOut,
    scratch: Response,
    next_path: str,
    signed: SignedIn | None = None,
) -> RedirectResponse:
    """Where a person goes once sign-in (or its second factor) succeeded: to the second factor
    if owed; into their one organization, straight on to `next_path`; else to the picker.

    Entering the organization is the API's own `pick_organization`: a refusal there (it
    requires two-factor, or single sign-on) leaves the person at the picker, which shows it.
    """
    if out.mfa_required:
        return carry_cookies(
            scratch, redirect(with_next(f"{CONSOLE_PREFIX}/two-factor", next_path))
        )
    picker = carry_cookies(scratch, redirect(with_next(f"{CONSOLE_PREFIX}/orgs", next_path)))
    if len(out.organizations) != 1:
        return picker
    signed = signed or await _session_set_on(request, db, scratch)
    if signed is None:
        return picker
    entered = Response()
    try:
        await sign_in.pick_organization(
            signed, sign_in.PickOrgIn(org_id=out.organizations[0].id), request, entered, db
        )
    except Problem:
        return picker  # audited by the API; the picker says why when they choose it
    return carry_cookies(entered, carry_cookies(scratch, redirect(next_path)))
