"""Sign-up, sign-in (password, emailed link, second factor), resets, the organization picker, sign-out.

Every answer about an address is the same whether an account exists or not, and takes the same
time: passwords are checked against a dummy hash for unknown addresses, and email is sent after
the response. Every attempt is audited (platform chain, and the person's organizations).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from fastapi import APIRouter, BackgroundTasks, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from blocks.api import rate_limit
from blocks.api.deps import DbSession, Person, PersonMidSignIn, client_ip
from blocks.api.email_field import EmailAddress
from blocks.api.errors import Problem, invalid_field
from blocks.api.outbound_mail import public_link, queue_email, require_mail
from blocks.api.schemas import StrictModel
from blocks.api.security_audit import record_security_event
from blocks.api.sessions_auth import (
    SignedIn,
    check_origin,
    clear_session_cookie,
    refuse_without_two_factor,
    set_session_cookie,
)
from blocks.core.audit import Outcome
from blocks.core.redirects import safe_next
from blocks.infra.passwords import (
    MAX_PASSWORD_LENGTH,
    hash_password,
    password_problem,
    verify_password,
)
from blocks.infra.settings import Settings
from blocks.models.auth_tokens import (
    TokenProblem,
    TokenPurpose,
    issue_auth_token,
    redeem_auth_token,
)
from blocks.models.base import utcnow
from blocks.models.invites import Invite
from blocks.models.orgs import User, find_user_by_email, orgs_of_user
from blocks.models.two_factor import verify_second_factor
from blocks.models.user_sessions import UserSession, revoke_sessions, rotate_token, start_session

router = APIRouter(prefix="/v1/auth", tags=["sign-in"])

Password = str  # never stripped, truncated or normalized: what was typed is what is hashed


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _ip(request: Request) -> str:
    return client_ip(request) or "unknown"


def _user_agent(request: Request) -> str | None:
    return (request.headers.get("user-agent") or "")[:500] or None


async def _org_ids(db: DbSession, user_id: uuid.UUID) -> list[uuid.UUID]:
    return [org.id for org, _ in await orgs_of_user(db, user_id)]


def _token_problem(problem: TokenProblem) -> Problem:
    return Problem(400, "Link Not Usable", str(problem), code="token_invalid")


class Accepted(BaseModel):
    detail: str


class OrgChoice(BaseModel):
    id: uuid.UUID
    slug: str
    name: str
    roles: list[str]
    require_2fa: bool


class SignInOut(BaseModel):
    user_id: uuid.UUID
    email: str
    mfa_required: bool
    organizations: list[OrgChoice] = Field(
        default_factory=list, description="Empty until the second factor is given"
    )
    next: str = Field(description="Where to go now: always a path on this site")


async def _choices(db: DbSession, user_id: uuid.UUID) -> list[OrgChoice]:
    return [
        OrgChoice(
            id=org.id,
            slug=org.slug,
            name=org.name,
            roles=list(membership.roles),
            require_2fa=org.require_2fa,
        )
        for org, membership in await orgs_of_user(db, user_id)
    ]


async def _open_session(
    request: Request, response: Response, db: DbSession, user: User, *, next_path: str | None
) -> SignInOut:
    """A brand-new session (and token) for a person who just proved who they are."""
    settings = _settings(request)
    mfa = user.totp_enabled_at is not None
    _, token = await start_session(
        db,
        user_id=user.id,
        mfa_pending=mfa,
        lifetime=timedelta(hours=settings.session_absolute_hours),
        ip=client_ip(request),
        user_agent=_user_agent(request),
    )
    set_session_cookie(response, token, settings)
    return SignInOut(
        user_id=user.id,
        email=user.email,
        mfa_required=mfa,
        organizations=[] if mfa else await _choices(db, user.id),
        next=safe_next(next_path),
    )


async def _signed_in(
    request: Request,
    response: Response,
    db: DbSession,
    user: User,
    *,
    method: str,
    next_path: str | None,
) -> SignInOut:
    """Open the session of a person who just proved who they are, and audit the sign-in."""
    out = await _open_session(request, response, db, user, next_path=next_path)
    await record_security_event(
        request,
        action="auth.signin",
        reason="second factor required" if out.mfa_required else None,
        user_id=user.id,
        email=user.email,
        data={"method": method, "mfa_pending": out.mfa_required},
        org_ids=await _org_ids(db, user.id),
    )
    return out


# --- sign-up -------------------------------------------------------------------------------


class SignUpIn(StrictModel):
    email: EmailAddress
    display_name: str = Field(min_length=1, max_length=200)


async def _invited(db: DbSession, email: str) -> bool:
    statement = select(Invite.id).where(
        Invite.email == email,
        Invite.accepted_at.is_(None),  # type: ignore[union-attr]
        Invite.revoked_at.is_(None),  # type: ignore[union-attr]
        Invite.expires_at > utcnow(),
    )
    return (await db.exec(statement)).first() is not None  # type: ignore[call-overload]


@router.post("/signup", status_code=202, response_model=Accepted)
async def sign_up(
    body: SignUpIn, request: Request, db: DbSession, background: BackgroundTasks
) -> Accepted:
    """Start an account: a link to verify the address comes by email (nothing before that)."""
    await check_origin(request, None, None, absent_ok=True)
    await rate_limit.enforce(request, "token_ip", f"ip:{_ip(request)}")
    mailer = require_mail(request)
    settings = _settings(request)
    existing = await find_user_by_email(db, body.email)
    if existing is not None:
        # Same answer as for a new address; the owner of the mailbox learns what happened.
        queue_email(
            background,
            mailer,
            to=body.email,
            subject="You already have a Blocks account",
            text="Someone asked to sign up with this address, which already has an account.\n"
            f"Sign in at {public_link(request, '/auth/signin')} or reset your password at {public_link(request, '/auth/reset')}.\n",
        )
        outcome, reason = Outcome.FAILURE, "address already has an account"
    elif not settings.open_signup and not await _invited(db, body.email):
        outcome, reason = Outcome.DENIED, "sign-up is by invitation on this deployment"
    else:
        token = await issue_auth_token(
            db,
            purpose=TokenPurpose.SIGNUP,
            email=body.email,
            user_id=None,
            lifetime=timedelta(minutes=settings.signin_link_minutes),
            data={"display_name": body.display_name},
        )
        queue_email(
            background,
            mailer,
            to=body.email,
            subject="Confirm your email for Blocks",
            text="Confirm this address to create your Blocks account:\n"
            f"{public_link(request, '/auth/signup')}?token={token}\n"
            f"The link works once, for {settings.signin_link_minutes} minutes.\n",
        )
        outcome, reason = Outcome.SUCCESS, None
    await record_security_event(
        request,
        action="auth.signup_requested",
        outcome=outcome,
        reason=reason,
        email=body.email,
    )
    return Accepted(detail="check your email for a link to continue")


class TokenIn(StrictModel):
    token: str = Field(min_length=1, max_length=200)
    next: str | None = Field(default=None, max_length=2000)


@router.post("/signup/verify", status_code=201, response_model=SignInOut)
async def verify_sign_up(
    body: TokenIn, request: Request, response: Response, db: DbSession
) -> SignInOut:
    """The emailed link proves the address: the account is created and signed in."""
    await rate_limit.enforce(request, "token_ip", f"ip:{_ip(request)}")
    await check_origin(request, None, None, absent_ok=True)
    try:
        token = await redeem_auth_token(db, body.token, TokenPurpose.SIGNUP)
    except TokenProblem as problem:
        await record_security_event(
            request, action="auth.signup", outcome=Outcome.FAILURE, reason=str(problem)
        )
        raise _token_problem(problem) from None
    if await find_user_by_email(db, token.email) is not None:
        raise Problem(
            409, "Conflict", "this address already has an account; sign in", code="exists"
        )
    now = utcnow()
    user = User(
        email=token.email,
        display_name=str(token.data.get("display_name") or token.email),
        email_verified_at=now,
    )
    db.add(user)
    await db.flush()
    out = await _open_session(request, response, db, user, next_path=body.next)
    await record_security_event(
        request, action="auth.signup", user_id=user.id, email=user.email, db=db
    )
    return out


# --- password sign-in ----------------------------------------------------------------------


class SignInIn(StrictModel):
    email: EmailAddress
    password: Password = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)
    next: str | None = Field(default=None, max_length=2000)


_WRONG = "the email or the password is wrong"


@router.post("/signin", response_model=SignInOut)
async def sign_in(body: SignInIn, request: Request, response: Response, db: DbSession) -> SignInOut:
    await check_origin(request, None, None, absent_ok=True)
    await rate_limit.enforce(request, "signin_ip", f"ip:{_ip(request)}")
    await rate_limit.enforce(request, "signin_account", f"account:{body.email}")
    user = await find_user_by_email(db, body.email)
    # Always one argon2 verification, so an unknown address takes as long as a known one.
    matches, rehash = verify_password(body.password, user.password_hash if user else None)
    if user is None or not matches or user.deactivated_at is not None:
        reason = (
            "unknown email"
            if user is None
            else "wrong password"
            if not matches
            else "account deactivated"
        )
        await record_security_event(
            request,
            action="auth.signin",
            outcome=Outcome.FAILURE,
            reason=reason,
            user_id=user.id if user else None,
            email=user.email if user else body.email,
            data={"method": "password"},
            org_ids=await _org_ids(db, user.id) if user else (),
        )
        raise Problem(401, "Sign-in Failed", _WRONG, code="signin_failed")
    if rehash is not None:
        user.password_hash = rehash
        db.add(user)
    return await _signed_in(request, response, db, user, method="password", next_path=body.next)


# --- emailed sign-in link ------------------------------------------------------------------


class EmailIn(StrictModel):
    email: EmailAddress


@dataclass(frozen=True)
class _EmailedLink:
    purpose: TokenPurpose
    page: str
    subject: str
    lead: str
    warning: str
    action: str
    answer: str


_SIGN_IN_LINK = _EmailedLink(
    purpose=TokenPurpose.SIGNIN,
    page="/auth/signin",
    subject="Your Blocks sign-in link",
    lead="Sign in to Blocks with this link:",
    warning="If you did not ask for it, ignore this email.",
    action="auth.signin_link_requested",
    answer="if this address has an account, a sign-in link is on its way",
)
_RESET_LINK = _EmailedLink(
    purpose=TokenPurpose.PASSWORD_RESET,
    page="/auth/reset",
    subject="Reset your Blocks password",
    lead="Choose a new password with this link:",
    warning="Resetting signs you out everywhere. If you did not ask for it, ignore this email.",
    action="auth.password_reset_requested",
    answer="if this address has an account, a reset link is on its way",
)


async def _email_link(
    link: _EmailedLink,
    minutes: int,
    body: EmailIn,
    request: Request,
    db: DbSession,
    background: BackgroundTasks,
) -> Accepted:
    """Email a single-use link to an account's address; the same answer for any address."""
    await check_origin(request, None, None, absent_ok=True)
    await rate_limit.enforce(request, "token_ip", f"ip:{_ip(request)}")
    await rate_limit.enforce(request, "signin_account", f"account:{body.email}")
    mailer = require_mail(request)
    user = await find_user_by_email(db, body.email)
    if user is not None and user.deactivated_at is None:
        token = await issue_auth_token(
            db,
            purpose=link.purpose,
            email=user.email,
            user_id=user.id,
            lifetime=timedelta(minutes=minutes),
        )
        queue_email(
            background,
            mailer,
            to=user.email,
            subject=link.subject,
            text=f"{link.lead}\n{public_link(request, link.page)}?token={token}\n"
            f"It works once, for {minutes} minutes. {link.warning}\n",
        )
    await record_security_event(
        request,
        action=link.action,
        outcome=Outcome.SUCCESS if user else Outcome.FAILURE,
        reason=None if user else "unknown email",
        user_id=user.id if user else None,
        email=user.email if user else body.email,
    )
    return Accepted(detail=link.answer)


@router.post("/signin-link", status_code=202, response_model=Accepted)
async def request_sign_in_link(
    body: EmailIn, request: Request, db: DbSession, background: BackgroundTasks
) -> Accepted:
    minutes = _settings(request).signin_link_minutes
    return await _email_link(_SIGN_IN_LINK, minutes, body, request, db, background)


@router.post("/signin-link/verify", response_model=SignInOut)
async def sign_in_with_link(
    body: TokenIn, request: Request, response: Response, db: DbSession
) -> SignInOut:
    await rate_limit.enforce(request, "token_ip", f"ip:{_ip(request)}")
    await check_origin(request, None, None, absent_ok=True)
    try:
        token = await redeem_auth_token(db, body.token, TokenPurpose.SIGNIN)
    except TokenProblem as problem:
        await record_security_event(
            request,
            action="auth.signin",
            outcome=Outcome.FAILURE,
            reason=str(problem),
            data={"method": "link"},
        )
        raise _token_problem(problem) from None
    user = await db.get(User, token.user_id)
    if user is None or user.deactivated_at is not None or user.email != token.email:
        raise _token_problem(TokenProblem("this link is not valid"))
    if user.email_verified_at is None:
        user.email_verified_at = utcnow()
        db.add(user)
    return await _signed_in(request, response, db, user, method="link", next_path=body.next)


# --- second factor -------------------------------------------------------------------------


class SecondFactorIn(StrictModel):
    code: str = Field(min_length=1, max_length=40, description="A TOTP code or a backup code")


@router.post("/signin/2fa", response_model=SignInOut)
async def second_factor(
    signed: PersonMidSignIn,
    body: SecondFactorIn,
    request: Request,
    response: Response,
    db: DbSession,
) -> SignInOut:
    user, row = signed.user, signed.session
    await rate_limit.enforce(request, "2fa_account", f"user:{user.id}")
    if not row.mfa_pending:
        raise Problem(409, "Conflict", "this session has no second factor pending", code="no_mfa")
    method = await verify_second_factor(db, user, body.code, utcnow())
    org_ids = await _org_ids(db, user.id)
    if method is None:
        await record_security_event(
            request,
            action="auth.signin_2fa",
            outcome=Outcome.FAILURE,
            reason="wrong, used or expired code",
            user_id=user.id,
            email=user.email,
            org_ids=org_ids,
        )
        raise Problem(
            401, "Sign-in Failed", "the code is wrong or was already used", code="mfa_failed"
        )
    row.mfa_pending = False
    row.authenticated_at = utcnow()
    # A new token once the session is worth more than before.
    set_session_cookie(response, await rotate_token(db, row), _settings(request))
    await record_security_event(
        request,
        action="auth.signin_2fa",
        user_id=user.id,
        email=user.email,
        data={"method": method},
        org_ids=org_ids,
    )
    return SignInOut(
        user_id=user.id,
        email=user.email,
        mfa_required=False,
        organizations=await _choices(db, user.id),
        next=safe_next(None),
    )


# --- password reset ------------------------------------------------------------------------


@router.post("/password-reset", status_code=202, response_model=Accepted)
async def request_password_reset(
    body: EmailIn, request: Request, db: DbSession, background: BackgroundTasks
) -> Accepted:
    minutes = _settings(request).password_reset_minutes
    return await _email_link(_RESET_LINK, minutes, body, request, db, background)


class ResetIn(StrictModel):
    token: str = Field(min_length=1, max_length=200)
    password: Password = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)
    code: str | None = Field(
        default=None, max_length=40, description="Required if two-factor sign-in is on"
    )


@router.post("/password-reset/confirm", status_code=204)
async def reset_password(body: ResetIn, request: Request, db: DbSession) -> Response:
    """Set a new password from the emailed token; every session of the person ends."""
    await rate_limit.enforce(request, "token_ip", f"ip:{_ip(request)}")
    await check_origin(request, None, None, absent_ok=True)
    try:
        token = await redeem_auth_token(db, body.token, TokenPurpose.PASSWORD_RESET)
    except TokenProblem as problem:
        await record_security_event(
            request, action="auth.password_reset", outcome=Outcome.FAILURE, reason=str(problem)
        )
        raise _token_problem(problem) from None
    user = await db.get(User, token.user_id)
    if user is None or user.deactivated_at is not None or user.email != token.email:
        raise _token_problem(TokenProblem("this link is not valid"))
    problem_text = password_problem(body.password, user_inputs=(user.email, user.display_name))
    if problem_text is not None:
        # Raising rolls the redemption back: the link still works with a better password.
        raise invalid_field("password", problem_text)
    org_ids = await _org_ids(db, user.id)
    if user.totp_enabled_at is not None:
        # A reset proves the mailbox, not the second factor: it never bypasses two-factor.
        await rate_limit.enforce(request, "2fa_account", f"user:{user.id}")
        method = await verify_second_factor(db, user, body.code or "", utcnow())
        if method is None:
            await record_security_event(
                request,
                action="auth.password_reset",
                outcome=Outcome.FAILURE,
                reason="two-factor code missing, wrong or used",
                user_id=user.id,
                email=user.email,
                org_ids=org_ids,
            )
            raise invalid_field("code", "a current two-factor code or a backup code is required")
    user.password_hash = hash_password(body.password)
    user.password_changed_at = utcnow()
    db.add(user)
    revoked = await revoke_sessions(db, user_id=user.id, reason="password reset")
    await record_security_event(
        request,
        action="auth.password_reset",
        user_id=user.id,
        email=user.email,
        data={"sessions_revoked": len(revoked)},
        org_ids=org_ids,
    )
    return Response(status_code=204)


# --- organization picker and sign-out ------------------------------------------------------


@router.get("/orgs", response_model=list[OrgChoice])
async def organizations(signed: Person, request: Request, db: DbSession) -> list[OrgChoice]:
    return await _choices(db, signed.user.id)


class PickOrgIn(StrictModel):
    org_id: uuid.UUID


class SessionOut(BaseModel):
    user_id: uuid.UUID
    org_id: uuid.UUID | None
    roles: list[str]


@router.post("/org", response_model=SessionOut)
async def pick_organization(
    signed: Person, body: PickOrgIn, request: Request, response: Response, db: DbSession
) -> SessionOut:
    """Scope the session to one organization; everything it does from now on is that org's."""
    user, row = signed.user, signed.session
    choice = next((c for c in await _choices(db, user.id) if c.id == body.org_id), None)
    if choice is None:
        # Not a member, or another organization's id: the same answer as a missing one.
        raise Problem(404, "Not Found", "organization not found", code="not_found")
    if choice.require_2fa and user.totp_enabled_at is None:
        await refuse_without_two_factor(request, user, choice.id, "organization", str(choice.id))
    await _switch(request, response, db, signed, choice.id)
    await record_security_event(
        request,
        action="session.org_selected",
        user_id=user.id,
        email=user.email,
        target_type="organization",
        target_id=str(choice.id),
        data={"session_id": str(row.id)},
        org_ids=[choice.id],
    )
    return SessionOut(user_id=user.id, org_id=choice.id, roles=choice.roles)


async def _switch(
    request: Request, response: Response, db: DbSession, signed: SignedIn, org_id: uuid.UUID | None
) -> None:
    row: UserSession = signed.session
    row.org_id = org_id
    set_session_cookie(response, await rotate_token(db, row), _settings(request))


@router.post("/switch-org", response_model=SessionOut)
async def leave_organization(
    signed: Person, request: Request, response: Response, db: DbSession
) -> SessionOut:
    """Back to the organization picker: the session acts in no organization until one is picked."""
    await _switch(request, response, db, signed, None)
    return SessionOut(user_id=signed.user.id, org_id=None, roles=[])


@router.post("/signout", status_code=204)
async def sign_out(signed: PersonMidSignIn, request: Request, db: DbSession) -> Response:
    await revoke_sessions(
        db, user_id=signed.user.id, session_id=signed.session.id, reason="signed out"
    )
    await record_security_event(
        request,
        action="auth.signout",
        user_id=signed.user.id,
        email=signed.user.email,
        data={"session_id": str(signed.session.id)},
    )
    response = Response(status_code=204)
    clear_session_cookie(response)
    return response
