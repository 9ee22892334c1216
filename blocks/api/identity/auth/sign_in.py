"""Sign-in (password, emailed link, second factor), the organization picker, sign-out.

Every answer about an address is the same whether an account exists or not, and takes the same
time: passwords are checked against a dummy hash for unknown addresses, and email is sent after
the response. Every attempt is audited (platform chain, and the person's organizations).
"""

from __future__ import annotations

import logging
import uuid

from fastapi import APIRouter, BackgroundTasks, Request, Response
from pydantic import BaseModel, Field

from blocks.api import rate_limit
from blocks.api.deps import DbSession, Person, PersonMidSignIn
from blocks.api.errors import Problem
from blocks.api.identity.auth.support import (
    Accepted,
    EmailedLink,
    EmailIn,
    OrgChoice,
    Password,
    SignInOut,
    TokenIn,
    auth_settings,
    complete_sign_in,
    email_link,
    org_choices,
    token_problem,
)
from blocks.api.identity.email_field import EmailAddress
from blocks.api.identity.sessions import (
    SSO_RULE,
    TWO_FACTOR_RULE,
    SignedIn,
    check_origin,
    clear_session_cookie,
    refuse_entry,
    set_session_cookie,
    sso_admits,
)
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.api.security_audit import record_security_event
from blocks.core.audit.records import Outcome
from blocks.core.identity.redirects import safe_next
from blocks.infra.crypto.passwords import (
    MAX_PASSWORD_LENGTH,
    verify_password,
)
from blocks.models.base import utcnow
from blocks.models.identity.auth_tokens import (
    TokenProblem,
    TokenPurpose,
    redeem_auth_token,
)
from blocks.models.identity.orgs import Organization, User, active_org_ids, find_user_by_email
from blocks.models.identity.sessions import UserSession, revoke_sessions, rotate_token
from blocks.models.identity.two_factor import verify_second_factor

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/auth", tags=["identity"])


SIGN_IN_LINK = EmailedLink(
    purpose=TokenPurpose.SIGNIN,
    page="/auth/signin",
    subject="Your Blocks sign-in link",
    lead="Sign in to Blocks with this link:",
    warning="If you did not ask for it, ignore this email.",
    action="auth.signin_link_requested",
    answer="if this address has an account, a sign-in link is on its way",
)


# --- password sign-in ----------------------------------------------------------------------


class SignInIn(StrictModel):
    model_config = example(email=ex.APPROVER_EMAIL, password=ex.PASSWORD, next="/")

    email: EmailAddress
    password: Password = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)
    next: str | None = Field(default=None, max_length=2000)


_WRONG = "the email or the password is wrong"


@router.post("/signin", response_model=SignInOut, summary="Sign in with a password")
async def sign_in(body: SignInIn, request: Request, response: Response, db: DbSession) -> SignInOut:
    await check_origin(request, None, None, absent_ok=True)
    await rate_limit.enforce_per_address(request, "signin_ip")
    # Per account, only wrong passwords count: its owner signing in again and again never
    # meets the limit; someone guessing does, from whatever addresses.
    account = f"account:{body.email}"
    await rate_limit.refuse_if_over(request, "signin_account", account)
    user = await find_user_by_email(db, body.email)
    # Always one argon2 verification, so an unknown address takes as long as a known one.
    matches, rehash = verify_password(body.password, user.password_hash if user else None)
    if user is None or not matches or user.deactivated_at is not None:
        await rate_limit.count(request, "signin_account", account)
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
            org_ids=await active_org_ids(db, user.id) if user else (),
        )
        raise Problem(401, "Sign-in Failed", _WRONG, code="signin_failed")
    if rehash is not None:
        user.password_hash = rehash
        db.add(user)
    return await complete_sign_in(
        request, response, db, user, method="password", next_path=body.next
    )


# --- emailed sign-in link ------------------------------------------------------------------


@router.post(
    "/signin-link", status_code=202, response_model=Accepted, summary="Email a sign-in link"
)
async def request_sign_in_link(
    body: EmailIn, request: Request, db: DbSession, background: BackgroundTasks
) -> Accepted:
    minutes = auth_settings(request).signin_link_minutes
    return await email_link(SIGN_IN_LINK, minutes, body, request, db, background)


@router.post(
    "/signin-link/verify", response_model=SignInOut, summary="Sign in with an emailed link"
)
async def sign_in_with_link(
    body: TokenIn, request: Request, response: Response, db: DbSession
) -> SignInOut:
    await rate_limit.enforce_per_address(request, "token_ip")
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
        raise token_problem(problem) from None
    user = await db.get(User, token.user_id)
    if user is None or user.deactivated_at is not None or user.email != token.email:
        raise token_problem(TokenProblem("this link is not valid"))
    if user.email_verified_at is None:
        user.email_verified_at = utcnow()
        db.add(user)
    return await complete_sign_in(request, response, db, user, method="link", next_path=body.next)


# --- second factor -------------------------------------------------------------------------


class SecondFactorIn(StrictModel):
    model_config = example(code="492039")

    code: str = Field(min_length=1, max_length=40, description="A TOTP code or a backup code")


@router.post(
    "/signin/2fa",
    response_model=SignInOut,
    summary="Give the second factor",
    operation_id="sign_in_second_factor",
)
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
    org_ids = await active_org_ids(db, user.id)
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
    set_session_cookie(response, await rotate_token(db, row), auth_settings(request))
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
        organizations=await org_choices(db, user.id),
        next=safe_next(None),
    )


# --- organization picker and sign-out ------------------------------------------------------


@router.get(
    "/orgs",
    response_model=list[OrgChoice],
    summary="List the organizations you can enter",
    operation_id="list_my_organizations",
)
async def organizations(signed: Person, request: Request, db: DbSession) -> list[OrgChoice]:
    return await org_choices(db, signed.user.id)


class PickOrgIn(StrictModel):
    model_config = example(org_id=ex.ORG_ID)

    org_id: uuid.UUID


class SessionScopeOut(BaseModel):
    """The organization a session acts in, if any, and the roles it has there."""

    model_config = example(user_id=ex.APPROVER_ID, org_id=ex.ORG_ID, roles=["approver"])

    user_id: uuid.UUID
    org_id: uuid.UUID | None
    roles: list[str]


@router.post("/org", response_model=SessionScopeOut, summary="Enter an organization")
async def pick_organization(
    signed: Person, body: PickOrgIn, request: Request, response: Response, db: DbSession
) -> SessionScopeOut:
    """Scope the session to one organization; everything it does from now on is that org's."""
    user, row = signed.user, signed.session
    choice = next((c for c in await org_choices(db, user.id) if c.id == body.org_id), None)
    if choice is None:
        # Not a member, or another organization's id: the same answer as a missing one.
        raise Problem(404, "Not Found", "organization not found", code="not_found")
    org = await db.get(Organization, choice.id)
    if org is None or not sso_admits(org, signed):
        await refuse_entry(request, SSO_RULE, user, choice.id, "organization", str(choice.id))
    idp_mfa = row.sso_mfa and row.sso_org_id == org.id
    if choice.require_2fa and user.totp_enabled_at is None and not idp_mfa:
        await refuse_entry(
            request, TWO_FACTOR_RULE, user, choice.id, "organization", str(choice.id)
        )
    if org.sso_enforced and row.sso_org_id != org.id:
        await _record_break_glass(request, signed, org)
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
    return SessionScopeOut(user_id=user.id, org_id=choice.id, roles=choice.roles)


async def _record_break_glass(request: Request, signed: SignedIn, org: Organization) -> None:
    """A break-glass admin entered an organization that enforces single sign-on, past its
    identity provider: audited as its own action (and logged) so it is never missed."""
    logger.warning(
        "break-glass sign-in: %s entered organization %s past its single sign-on",
        signed.user.id,
        org.id,
    )
    await record_security_event(
        request,
        action="auth.break_glass_used",
        reason="break-glass admin entered an organization that enforces single sign-on",
        user_id=signed.user.id,
        email=signed.user.email,
        target_type="organization",
        target_id=str(org.id),
        data={"session_id": str(signed.session.id), "severity": "high"},
        org_ids=[org.id],
    )


async def _switch(
    request: Request, response: Response, db: DbSession, signed: SignedIn, org_id: uuid.UUID | None
) -> None:
    row: UserSession = signed.session
    row.org_id = org_id
    set_session_cookie(response, await rotate_token(db, row), auth_settings(request))


@router.post(
    "/switch-org", response_model=SessionScopeOut, summary="Leave the organization entered"
)
async def leave_organization(
    signed: Person, request: Request, response: Response, db: DbSession
) -> SessionScopeOut:
    """Back to the organization picker: the session acts in no organization until one is picked."""
    await _switch(request, response, db, signed, None)
    return SessionScopeOut(user_id=signed.user.id, org_id=None, roles=[])


@router.post("/signout", status_code=204, summary="Sign out")
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
