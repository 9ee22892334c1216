"""Console sign-in: password, emailed link, second factor, the organization picker and SSO buttons.

Each form calls the JSON API's own route function (blocks.api.identity.auth.sign_in and
.support), so every limit, refusal and audit event is the API's; a refusal is shown in the
API's words with its status. The forms posted before a session exists check their origin here
(a cross-site sign-in form is refused 403 and audited); the others pass it through `Person`.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, BackgroundTasks, Query, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from blocks.api.console.forms import FormErrors, from_problem, from_validation, read_form
from blocks.api.console.pages import redirect, render
from blocks.api.console.sign_in import sessions as session_pages
from blocks.api.console.sign_in.flow import (
    after_identity,
    console_next,
    with_next,
    with_problem_headers,
)
from blocks.api.deps import DbSession
from blocks.api.errors import Problem
from blocks.api.identity.auth import sign_in
from blocks.api.identity.auth.support import EmailIn, TokenIn, auth_settings, email_link
from blocks.api.identity.sessions import check_origin
from blocks.api.identity.sso import start as sso_start

router = APIRouter()
router.include_router(session_pages.router)

# The emailed link of a sign-in asked for in the console lands on the console's page for it:
# the same purpose, email and audit action as the API's (the token works for either page).
CONSOLE_SIGN_IN_LINK = dataclasses.replace(sign_in.SIGN_IN_LINK, page="/console/sign-in/link")

# Notices after a redirect: fixed text per key, never the query's own words.
_DONE = {
    "signed-out": "You are signed out.",
}

Next = Annotated[str | None, Query(max_length=2000)]


def _sign_in_page(
    request: Request,
    next_path: str,
    *,
    email: str = "",
    organization: str = "",
    errors: FormErrors | None = None,
    sso_errors: FormErrors | None = None,
    providers: list[sso_start.ProviderChoice] | None = None,
    notice: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "sign_in.html",
        status=status,
        notice=notice,
        next_path=next_path,
        email=email,
        organization=organization,
        errors=errors,
        sso_errors=sso_errors,
        providers=providers or [],
        link_page=with_next("/console/sign-in/link", next_path),
    )


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_form(
    request: Request, next: Next = None, done: str | None = Query(None, max_length=40)
) -> HTMLResponse:
    return _sign_in_page(request, console_next(next), notice=_DONE.get(done or ""))


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in_submit(request: Request, db: DbSession) -> Response:
    # No session yet, so no `Person` to check the origin: a sign-in form posted from another
    # site (login CSRF) is refused here, 403 and audited, before anything else happens.
    await check_origin(request, None, None)
    values = await read_form(request)
    next_path = console_next(values.get("next"))
    email = values.get("email", "")
    try:
        body = sign_in.SignInIn.model_validate(
            {"email": email, "password": values.get("password", ""), "next": next_path}
        )
    except ValidationError as err:
        return _sign_in_page(
            request, next_path, email=email, errors=from_validation(err), status=422
        )
    scratch = Response()
    try:
        out = await sign_in.sign_in(body, request, scratch, db)
    except Problem as problem:
        await db.rollback()
        page = _sign_in_page(
            request, next_path, email=email, errors=from_problem(problem), status=problem.status
        )
        return with_problem_headers(problem, page)
    return await after_identity(request, db, out, scratch, next_path)


# --- single sign-on: from an organization's name to its identity provider -------------------


@router.get("/sign-in/sso", response_class=HTMLResponse)
async def sso_choice(
    request: Request,
    db: DbSession,
    organization: str = Query("", max_length=200),
    next: Next = None,
) -> Response:
    """The organization's providers (`GET /v1/sso/{organization}`): one is opened at once,
    several are offered as buttons, none (or no such organization) is said on the page."""
    next_path = console_next(next)
    slug = organization.strip().lower()
    if not slug:
        missing = FormErrors("name the organization", {"organization": "required"})
        return _sign_in_page(request, next_path, sso_errors=missing, status=422)
    try:
        options = await sso_start.sign_in_options(slug, request, db)
    except Problem as problem:
        page = _sign_in_page(
            request,
            next_path,
            organization=slug,
            sso_errors=from_problem(problem),
            status=problem.status,
        )
        return with_problem_headers(problem, page)
    providers = [
        p.model_copy(update={"start_url": f"{p.start_url}?next={quote(next_path, safe='/')}"})
        for p in options.providers
    ]
    if len(providers) == 1:
        return redirect(providers[0].start_url)
    if not providers:
        none = FormErrors("this organization has no single sign-on provider; sign in below")
        return _sign_in_page(request, next_path, organization=slug, sso_errors=none, status=404)
    return _sign_in_page(request, next_path, organization=slug, providers=providers)


# --- emailed sign-in link -------------------------------------------------------------------


@router.get("/sign-in/link", response_class=HTMLResponse)
async def sign_in_link_page(
    request: Request, token: str | None = Query(None, max_length=200), next: Next = None
) -> HTMLResponse:
    """Without a token: ask for the address to email a link to. With one (the emailed link):
    a button that signs in; nothing happens on GET, since mail scanners open links."""
    return render(
        request,
        "sign_in_link.html",
        token=token,
        next_path=console_next(next),
        email="",
        errors=None,
        sent=None,
    )


@router.post("/sign-in/link", response_class=HTMLResponse)
async def sign_in_link_submit(request: Request, db: DbSession) -> Response:
    await check_origin(request, None, None)
    values = await read_form(request)
    next_path = console_next(values.get("next"))
    token = values.get("token") or None
    email = values.get("email", "")

    def again(errors: FormErrors, status: int, sent: str | None = None) -> HTMLResponse:
        return render(
            request,
            "sign_in_link.html",
            status=status,
            token=token,
            next_path=next_path,
            email=email,
            errors=errors,
            sent=sent,
        )

    try:
        if token is not None:
            body = TokenIn.model_validate({"token": token, "next": next_path})
            scratch = Response()
            out = await sign_in.sign_in_with_link(body, request, scratch, db)
            return await after_identity(request, db, out, scratch, next_path)
        background = BackgroundTasks()
        minutes = auth_settings(request).signin_link_minutes
        accepted = await email_link(
            CONSOLE_SIGN_IN_LINK,
            minutes,
            EmailIn.model_validate({"email": email}),
            request,
            db,
            background,
        )
    except ValidationError as err:
        return again(from_validation(err), 422)
    except Problem as problem:
        await db.rollback()
        return with_problem_headers(problem, again(from_problem(problem), problem.status))
    page = again(FormErrors(), 200, sent=accepted.detail)
    page.background = background  # the email leaves after the answer, as from the API
    return page
