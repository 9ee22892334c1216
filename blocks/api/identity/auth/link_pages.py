"""The pages behind the links in sign-up, sign-in, reset, email-change and invite emails.

GET only shows a form (mail scanners open links; nothing happens on GET); the form POSTs back
here and the page calls the same route function the JSON API uses, so every check, limit and
audit event is the API's own. Without a token, the sign-up, sign-in and reset pages ask for an
address and send the email.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, BackgroundTasks, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ValidationError

from blocks.api.deps import DbSession
from blocks.api.errors import Problem
from blocks.api.html_pages import field, form, hidden, page, paragraph
from blocks.api.identity import invite_acceptance, me
from blocks.api.identity.auth import password_reset, sign_in, signup, support
from blocks.api.identity.sessions import signed_in

router = APIRouter(prefix="/auth", include_in_schema=False)

Handler = Callable[[dict[str, str], Response, BackgroundTasks], Awaitable[HTMLResponse]]


async def _form(request: Request) -> dict[str, str]:
    parsed = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=8)
    return {name: values[0] for name, values in parsed.items()}


def _body(model: type[BaseModel], values: dict[str, Any]) -> Any:
    return model.model_validate(values)


async def _answer(request: Request, handler: Handler) -> HTMLResponse:
    """Run `handler` on the posted form; problems become pages; cookies and email carry over."""
    scratch, background = Response(), BackgroundTasks()
    try:
        result = await handler(await _form(request), scratch, background)
    except Problem as problem:
        return page(problem.title, paragraph(problem.detail), problem.status)
    except ValidationError as err:
        reasons = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'form'}: {e['msg']}" for e in err.errors()
        )
        return page("Please check the form", paragraph(reasons), 422)
    for name, value in scratch.raw_headers:
        if name == b"set-cookie":
            result.raw_headers.append((name, value))
    result.background = background
    return result


def _token_page(
    title: str, intro: str, token: str | None, fields: str = "", button: str = "Continue"
) -> HTMLResponse:
    if not token:
        return page(
            "Link not usable",
            paragraph("This link has no token; open the link from the email."),
            400,
        )
    return page(title, paragraph(intro) + form(hidden("token", token) + fields, button))


def _signed_in_page(out: support.SignInOut) -> HTMLResponse:
    if out.mfa_required:
        return page(
            "Two-factor code",
            paragraph("Enter the code from your authenticator app, or a backup code.")
            + form(
                field("Code", "code", autocomplete="one-time-code"), "Sign in", action="/auth/2fa"
            ),
        )
    names = ", ".join(o.name for o in out.organizations) or "none yet"
    return page(
        "You are signed in", paragraph(f"Signed in as {out.email}. Organizations: {names}.")
    )


# --- sign-up -------------------------------------------------------------------------------


@router.get("/signup", response_class=HTMLResponse)
async def sign_up_page(token: str | None = None) -> HTMLResponse:
    if token:
        return _token_page(
            "Create your account", "Confirm your email address.", token, button="Create my account"
        )
    return page(
        "Sign up",
        form(
            field("Email", "email", kind="email", autocomplete="email")
            + field("Your name", "display_name", autocomplete="name"),
            "Email me a link",
        ),
    )


@router.post("/signup", response_class=HTMLResponse)
async def sign_up_form(request: Request, db: DbSession) -> HTMLResponse:
    async def handle(
        values: dict[str, str], response: Response, background: BackgroundTasks
    ) -> HTMLResponse:
        if "token" in values:
            body = _body(support.TokenIn, {"token": values["token"]})
            return _signed_in_page(await signup.verify_sign_up(body, request, response, db))
        body = _body(signup.SignUpIn, values)
        accepted = await signup.sign_up(body, request, db, background)
        return page("Check your email", paragraph(accepted.detail))

    return await _answer(request, handle)


# --- sign-in by link, and the second factor ------------------------------------------------


@router.get("/signin", response_class=HTMLResponse)
async def sign_in_page(token: str | None = None) -> HTMLResponse:
    if token:
        return _token_page("Sign in", "Sign in to Blocks with this link.", token, button="Sign in")
    return page(
        "Sign in by email",
        form(field("Email", "email", kind="email", autocomplete="email"), "Email me a link"),
    )


@router.post("/signin", response_class=HTMLResponse)
async def sign_in_form(request: Request, db: DbSession) -> HTMLResponse:
    async def handle(
        values: dict[str, str], response: Response, background: BackgroundTasks
    ) -> HTMLResponse:
        if "token" in values:
            body = _body(support.TokenIn, {"token": values["token"]})
            return _signed_in_page(await sign_in.sign_in_with_link(body, request, response, db))
        accepted = await sign_in.request_sign_in_link(
            _body(support.EmailIn, values), request, db, background
        )
        return page("Check your email", paragraph(accepted.detail))

    return await _answer(request, handle)


@router.post("/2fa", response_class=HTMLResponse)
async def second_factor_form(request: Request, db: DbSession) -> HTMLResponse:
    async def handle(
        values: dict[str, str], response: Response, _: BackgroundTasks
    ) -> HTMLResponse:
        signed = await signed_in(request, db, allow_mfa_pending=True)
        body = _body(sign_in.SecondFactorIn, values)
        return _signed_in_page(await sign_in.second_factor(signed, body, request, response, db))

    return await _answer(request, handle)


# --- password reset ------------------------------------------------------------------------


@router.get("/reset", response_class=HTMLResponse)
async def reset_page(token: str | None = None) -> HTMLResponse:
    if token:
        fields = field("New password", "password", kind="password", autocomplete="new-password") + (
            "<label>Two-factor code (if you use two-factor sign-in) "
            "<input name='code' autocomplete='one-time-code'></label>"
        )
        return _token_page(
            "Choose a new password",
            "Resetting signs you out everywhere.",
            token,
            fields,
            "Set password",
        )
    return page(
        "Reset your password",
        form(field("Email", "email", kind="email", autocomplete="email"), "Email me a link"),
    )


@router.post("/reset", response_class=HTMLResponse)
async def reset_form(request: Request, db: DbSession) -> HTMLResponse:
    async def handle(
        values: dict[str, str], response: Response, background: BackgroundTasks
    ) -> HTMLResponse:
        if "token" in values:
            values = {k: v for k, v in values.items() if k != "code" or v}
            await password_reset.reset_password(_body(password_reset.ResetIn, values), request, db)
            return page("Password changed", paragraph("Sign in with your new password."))
        accepted = await password_reset.request_password_reset(
            _body(support.EmailIn, values), request, db, background
        )
        return page("Check your email", paragraph(accepted.detail))

    return await _answer(request, handle)


# --- email change and invites: for a signed-in person --------------------------------------


@router.get("/email", response_class=HTMLResponse)
async def email_page(token: str | None = None) -> HTMLResponse:
    return _token_page(
        "Confirm your new address", "Sign in first if you are not.", token, button="Confirm"
    )


@router.post("/email", response_class=HTMLResponse)
async def email_form(request: Request, db: DbSession) -> HTMLResponse:
    async def handle(
        values: dict[str, str], response: Response, _: BackgroundTasks
    ) -> HTMLResponse:
        signed = await signed_in(request, db)
        await me.confirm_email_change(signed, _body(me.EmailTokenIn, values), request, db)
        return page("Address changed", paragraph("Your new address is confirmed."))

    return await _answer(request, handle)


@router.get("/invite", response_class=HTMLResponse)
async def invite_page(token: str | None = None) -> HTMLResponse:
    return _token_page(
        "Join an organization",
        "Sign in (or sign up) with the invited address first, then accept here.",
        token,
        button="Accept the invitation",
    )


@router.post("/invite", response_class=HTMLResponse)
async def invite_form(request: Request, db: DbSession) -> HTMLResponse:
    async def handle(
        values: dict[str, str], response: Response, _: BackgroundTasks
    ) -> HTMLResponse:
        signed = await signed_in(request, db)
        accepted = await invite_acceptance.accept(
            signed, _body(invite_acceptance.AcceptIn, values), request, db
        )
        return page(
            "Welcome", paragraph(f"You joined {accepted.org_name} as {', '.join(accepted.roles)}.")
        )

    return await _answer(request, handle)
