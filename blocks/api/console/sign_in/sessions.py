"""Console pages of a session once the password (or link) is given: the second factor, the
organization picker and sign-out, each calling the API's own route function."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from blocks.api.console.forms import FormErrors, from_problem, from_validation, read_form
from blocks.api.console.pages import redirect, render
from blocks.api.console.sign_in.flow import (
    after_identity,
    carry_cookies,
    console_next,
    with_problem_headers,
)
from blocks.api.deps import DbSession, Person, PersonMidSignIn
from blocks.api.errors import Problem
from blocks.api.identity.auth import sign_in
from blocks.api.identity.sessions import SignedIn

router = APIRouter()

Next = Annotated[str | None, Query(max_length=2000)]


# --- second factor --------------------------------------------------------------------------


def _two_factor_page(
    request: Request, next_path: str, errors: FormErrors | None = None, status: int = 200
) -> HTMLResponse:
    return render(request, "two_factor.html", status=status, next_path=next_path, errors=errors)


@router.get("/two-factor", response_class=HTMLResponse)
async def two_factor_form(signed: PersonMidSignIn, request: Request, next: Next = None) -> Response:
    next_path = console_next(next)
    if not signed.session.mfa_pending:
        return redirect(next_path)
    return _two_factor_page(request, next_path)


@router.post("/two-factor", response_class=HTMLResponse)
async def two_factor_submit(signed: PersonMidSignIn, request: Request, db: DbSession) -> Response:
    # `PersonMidSignIn` checked the origin: the session cookie signs this form.
    values = await read_form(request)
    next_path = console_next(values.get("next"))
    try:
        body = sign_in.SecondFactorIn.model_validate({"code": values.get("code", "").strip()})
    except ValidationError as err:
        return _two_factor_page(request, next_path, from_validation(err), 422)
    scratch = Response()
    try:
        out = await sign_in.second_factor(signed, body, request, scratch, db)
    except Problem as problem:
        await db.rollback()
        page = _two_factor_page(request, next_path, from_problem(problem), problem.status)
        return with_problem_headers(problem, page)
    return await after_identity(request, db, out, scratch, next_path, signed=signed)


# --- organization picker --------------------------------------------------------------------


async def _orgs_page(
    request: Request,
    signed: SignedIn,
    db: DbSession,
    next_path: str,
    errors: FormErrors | None = None,
    status: int = 200,
) -> HTMLResponse:
    choices = await sign_in.organizations(signed, request, db)
    return render(
        request,
        "orgs.html",
        status=status,
        choices=choices,
        current=signed.session.org_id,
        email=signed.user.email,
        next_path=next_path,
        errors=errors,
    )


@router.get("/orgs", response_class=HTMLResponse)
async def organization_picker(
    signed: Person, request: Request, db: DbSession, next: Next = None
) -> HTMLResponse:
    # Entering an organization changes the session, so even a single choice is a button here
    # (a GET changes nothing); sign-in itself enters a person's only organization directly.
    return await _orgs_page(request, signed, db, console_next(next))


@router.post("/orgs", response_class=HTMLResponse)
async def organization_enter(signed: Person, request: Request, db: DbSession) -> Response:
    values = await read_form(request)
    next_path = console_next(values.get("next"))
    try:
        body = sign_in.PickOrgIn.model_validate({"org_id": values.get("org_id", "")})
    except ValidationError as err:
        return await _orgs_page(request, signed, db, next_path, from_validation(err), 422)
    entered = Response()
    try:
        await sign_in.pick_organization(signed, body, request, entered, db)
    except Problem as problem:
        await db.rollback()
        # The rollback expired the session's rows; read them again to show the picker.
        await db.refresh(signed.session)
        await db.refresh(signed.user)
        page = await _orgs_page(
            request, signed, db, next_path, from_problem(problem), problem.status
        )
        return with_problem_headers(problem, page)
    return carry_cookies(entered, redirect(next_path))


# --- sign-out -------------------------------------------------------------------------------


@router.post("/sign-out")
async def sign_out_submit(signed: PersonMidSignIn, request: Request, db: DbSession) -> Response:
    cleared = await sign_in.sign_out(signed, request, db)
    return carry_cookies(cleared, redirect("/console/sign-in?done=signed-out"))
