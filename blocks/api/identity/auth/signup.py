"""Sign-up: an emailed link proves the address before an account (and any password) exists."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, BackgroundTasks, Request, Response
from pydantic import Field

from blocks.api import rate_limit
from blocks.api.deps import DbSession
from blocks.api.errors import Problem
from blocks.api.identity.auth.support import (
    Accepted,
    SignInOut,
    TokenIn,
    auth_settings,
    open_session,
    token_problem,
)
from blocks.api.identity.email_field import EmailAddress
from blocks.api.identity.sessions import (
    check_origin,
)
from blocks.api.integrations.outbound_mail import public_link, queue_email, require_mail
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.api.security_audit import record_security_event
from blocks.core.audit.records import Outcome
from blocks.models.base import utcnow
from blocks.models.identity.auth_tokens import (
    TokenProblem,
    TokenPurpose,
    issue_auth_token,
    redeem_auth_token,
)
from blocks.models.identity.invites import has_pending_invite
from blocks.models.identity.orgs import User, find_user_by_email

router = APIRouter(prefix="/v1/auth", tags=["identity"])


# --- sign-up -------------------------------------------------------------------------------


class SignUpIn(StrictModel):
    model_config = example(email="ada@acme.example", display_name="Ada Lovelace")

    email: EmailAddress
    display_name: str = Field(min_length=1, max_length=200)


@router.post("/signup", status_code=202, response_model=Accepted, summary="Sign up")
async def sign_up(
    body: SignUpIn, request: Request, db: DbSession, background: BackgroundTasks
) -> Accepted:
    """Start an account: a link to verify the address comes by email (nothing before that)."""
    await check_origin(request, None, None, absent_ok=True)
    await rate_limit.enforce_per_address(request, "token_ip")
    mailer = require_mail(request)
    settings = auth_settings(request)
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
    elif not settings.open_signup and not await has_pending_invite(db, body.email):
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


@router.post(
    "/signup/verify",
    status_code=201,
    response_model=SignInOut,
    summary="Finish sign-up with the emailed link",
)
async def verify_sign_up(
    body: TokenIn, request: Request, response: Response, db: DbSession
) -> SignInOut:
    """The emailed link proves the address: the account is created and signed in."""
    await rate_limit.enforce_per_address(request, "token_ip")
    await check_origin(request, None, None, absent_ok=True)
    try:
        token = await redeem_auth_token(db, body.token, TokenPurpose.SIGNUP)
    except TokenProblem as problem:
        await record_security_event(
            request, action="auth.signup", outcome=Outcome.FAILURE, reason=str(problem)
        )
        raise token_problem(problem) from None
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
    # A brand-new account belongs to no organization yet.
    out = await open_session(request, response, db, user, next_path=body.next, choices=[])
    await record_security_event(
        request, action="auth.signup", user_id=user.id, email=user.email, db=db
    )
    return out
