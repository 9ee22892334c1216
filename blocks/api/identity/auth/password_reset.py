"""Password reset by emailed link: single use, the second factor still asked, every session ended."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Request, Response
from pydantic import Field

from blocks.api import rate_limit
from blocks.api.deps import DbSession
from blocks.api.errors import invalid_field
from blocks.api.identity.auth.support import (
    Accepted,
    EmailedLink,
    EmailIn,
    Password,
    auth_settings,
    email_link,
    token_problem,
)
from blocks.api.identity.sessions import (
    check_origin,
)
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.api.security_audit import record_security_event
from blocks.core.audit.records import Outcome
from blocks.infra.crypto.passwords import (
    MAX_PASSWORD_LENGTH,
    hash_password,
    password_problem,
)
from blocks.models.base import utcnow
from blocks.models.identity.auth_tokens import (
    TokenProblem,
    TokenPurpose,
    redeem_auth_token,
)
from blocks.models.identity.orgs import User, active_org_ids
from blocks.models.identity.sessions import revoke_sessions
from blocks.models.identity.two_factor import verify_second_factor

router = APIRouter(prefix="/v1/auth", tags=["identity"])


RESET_LINK = EmailedLink(
    purpose=TokenPurpose.PASSWORD_RESET,
    page="/auth/reset",
    subject="Reset your Blocks password",
    lead="Choose a new password with this link:",
    warning="Resetting signs you out everywhere. If you did not ask for it, ignore this email.",
    action="auth.password_reset_requested",
    answer="if this address has an account, a reset link is on its way",
)


# --- password reset ------------------------------------------------------------------------


@router.post(
    "/password-reset",
    status_code=202,
    response_model=Accepted,
    summary="Email a password reset link",
)
async def request_password_reset(
    body: EmailIn, request: Request, db: DbSession, background: BackgroundTasks
) -> Accepted:
    minutes = auth_settings(request).password_reset_minutes
    return await email_link(RESET_LINK, minutes, body, request, db, background)


class ResetIn(StrictModel):
    model_config = example(token=ex.RESET_TOKEN, password=ex.NEW_PASSWORD, code="492039")

    token: str = Field(min_length=1, max_length=200)
    password: Password = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)
    code: str | None = Field(
        default=None, max_length=40, description="Required if two-factor sign-in is on"
    )


@router.post(
    "/password-reset/confirm", status_code=204, summary="Set a new password with the emailed link"
)
async def reset_password(body: ResetIn, request: Request, db: DbSession) -> Response:
    """Set a new password from the emailed token; every session of the person ends."""
    await rate_limit.enforce_per_address(request, "token_ip")
    await check_origin(request, None, None, absent_ok=True)
    try:
        token = await redeem_auth_token(db, body.token, TokenPurpose.PASSWORD_RESET)
    except TokenProblem as problem:
        await record_security_event(
            request, action="auth.password_reset", outcome=Outcome.FAILURE, reason=str(problem)
        )
        raise token_problem(problem) from None
    user = await db.get(User, token.user_id)
    if user is None or user.deactivated_at is not None or user.email != token.email:
        raise token_problem(TokenProblem("this link is not valid"))
    problem_text = password_problem(body.password, user_inputs=(user.email, user.display_name))
    if problem_text is not None:
        # Raising rolls the redemption back: the link still works with a better password.
        raise invalid_field("password", problem_text)
    org_ids = await active_org_ids(db, user.id)
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
