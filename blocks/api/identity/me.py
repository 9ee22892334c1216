"""The signed-in person's own account: profile, password, email address and sessions."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from fastapi import APIRouter, BackgroundTasks, Request, Response
from pydantic import BaseModel, Field

from blocks.api import rate_limit
from blocks.api.deps import DbSession, Person
from blocks.api.errors import Problem, invalid_field, not_found
from blocks.api.identity.auth.support import Accepted
from blocks.api.identity.email_field import EmailAddress
from blocks.api.identity.sessions import SignedIn
from blocks.api.integrations.outbound_mail import public_link, queue_email, require_mail
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.api.security_audit import record_security_event
from blocks.core.audit.records import Outcome
from blocks.infra.crypto.passwords import (
    MAX_PASSWORD_LENGTH,
    hash_password,
    password_problem,
    verify_password,
)
from blocks.infra.settings import Settings
from blocks.models.base import utcnow
from blocks.models.identity.auth_tokens import (
    TokenProblem,
    TokenPurpose,
    issue_auth_token,
    redeem_auth_token,
)
from blocks.models.identity.orgs import active_org_ids, find_user_by_email
from blocks.models.identity.sessions import live_sessions, revoke_sessions

router = APIRouter(prefix="/v1/me", tags=["identity"])


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def require_recent_proof(
    request: Request, db: DbSession, signed: SignedIn, password: str | None, action: str
) -> None:
    """Sensitive changes ask again who is at the keyboard: the password, or (for a person who
    has none) a sign-in no older than `reauth_minutes`. Refusals are audited."""
    user, row = signed.user, signed.session
    if user.password_hash is not None:
        # The same failure budget as sign-in: a stolen session cannot guess the password.
        account = f"account:{user.email}"
        await rate_limit.refuse_if_over(request, "signin_account", account)
        ok, _ = verify_password(password or "", user.password_hash)
        if ok:
            return
        await rate_limit.count(request, "signin_account", account)
        reason = "wrong password" if password else "password required"
    else:
        fresh_since = utcnow() - timedelta(minutes=_settings(request).reauth_minutes)
        if row.authenticated_at >= fresh_since:
            return
        reason = "sign-in too old; sign in again"
    await record_security_event(
        request,
        action=action,
        outcome=Outcome.DENIED,
        reason=reason,
        user_id=user.id,
        email=user.email,
        org_ids=await active_org_ids(db, user.id),
    )
    raise Problem(
        403,
        "Forbidden",
        f"{reason}: this change needs your password (or a fresh sign-in)",
        code="reauthentication_required",
    )


class MeOut(BaseModel):
    model_config = example(
        id=ex.APPROVER_ID,
        email=ex.APPROVER_EMAIL,
        display_name="Alan Turing",
        email_verified=True,
        has_password=True,
        two_factor=True,
        org_id=ex.ORG_ID,
        session_id=ex.SESSION_ID,
    )

    id: uuid.UUID
    email: str
    display_name: str
    email_verified: bool
    has_password: bool
    two_factor: bool
    org_id: uuid.UUID | None
    session_id: uuid.UUID


@router.get("", response_model=MeOut, summary="Read your own account", operation_id="read_me")
async def me(signed: Person, request: Request, db: DbSession) -> MeOut:
    user = signed.user
    return MeOut(
        id=user.id,
        email=user.email,
        display_name=user.display_name,
        email_verified=user.email_verified_at is not None,
        has_password=user.password_hash is not None,
        two_factor=user.totp_enabled_at is not None,
        org_id=signed.session.org_id,
        session_id=signed.session.id,
    )


# --- password ------------------------------------------------------------------------------


class PasswordIn(StrictModel):
    model_config = example(new_password=ex.NEW_PASSWORD, current_password=ex.PASSWORD)

    new_password: str = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)
    current_password: str | None = Field(default=None, max_length=MAX_PASSWORD_LENGTH)


@router.put("/password", status_code=204, summary="Set or change your password")
async def set_password(
    signed: Person, body: PasswordIn, request: Request, db: DbSession
) -> Response:
    """Set or change the password; every other session of the person ends."""
    user = signed.user
    await require_recent_proof(request, db, signed, body.current_password, "user.password_changed")
    problem = password_problem(body.new_password, user_inputs=(user.email, user.display_name))
    if problem is not None:
        raise invalid_field("new_password", problem)
    first = user.password_hash is None
    user.password_hash = hash_password(body.new_password)
    user.password_changed_at = utcnow()
    db.add(user)
    revoked = await revoke_sessions(
        db, user_id=user.id, reason="password changed", keep=signed.session.id
    )
    await record_security_event(
        request,
        action="user.password_set" if first else "user.password_changed",
        user_id=user.id,
        email=user.email,
        data={"other_sessions_revoked": len(revoked)},
        org_ids=await active_org_ids(db, user.id),
    )
    return Response(status_code=204)


# --- email address -------------------------------------------------------------------------


class EmailChangeIn(StrictModel):
    model_config = example(new_email="alan.turing@acme.example", password=ex.PASSWORD)

    new_email: EmailAddress
    password: str | None = Field(default=None, max_length=MAX_PASSWORD_LENGTH)


@router.post(
    "/email", status_code=202, response_model=Accepted, summary="Change your email address"
)
async def request_email_change(
    signed: Person,
    body: EmailChangeIn,
    request: Request,
    db: DbSession,
    background: BackgroundTasks,
) -> Accepted:
    """Send a confirmation link to the new address; nothing changes until it is used."""
    user = signed.user
    await rate_limit.enforce_per_address(request, "token_ip")
    mailer = require_mail(request)
    await require_recent_proof(request, db, signed, body.password, "user.email_change_requested")
    if body.new_email == user.email:
        raise invalid_field("new_email", "is already your address")
    settings = _settings(request)
    token = await issue_auth_token(
        db,
        purpose=TokenPurpose.EMAIL_CHANGE,
        email=body.new_email,
        user_id=user.id,
        lifetime=timedelta(minutes=settings.signin_link_minutes),
    )
    queue_email(
        background,
        mailer,
        to=body.new_email,
        subject="Confirm your new Blocks email address",
        text="Confirm this address for your Blocks account:\n"
        f"{public_link(request, '/auth/email')}?token={token}\n",
    )
    queue_email(
        background,
        mailer,
        to=user.email,
        subject="Your Blocks email address is being changed",
        text="Someone signed in to your account asked to change its email address. If this "
        "was not you, reset your password now.\n",
    )
    await record_security_event(
        request,
        action="user.email_change_requested",
        user_id=user.id,
        email=user.email,
        org_ids=await active_org_ids(db, user.id),
    )
    return Accepted(detail="check the new address for a confirmation link")


class EmailTokenIn(StrictModel):
    model_config = example(token=ex.EMAIL_TOKEN)

    token: str = Field(min_length=1, max_length=200)


@router.post(
    "/email/confirm", status_code=204, summary="Confirm the new address with the emailed link"
)
async def confirm_email_change(
    signed: Person, body: EmailTokenIn, request: Request, db: DbSession
) -> Response:
    user = signed.user
    try:
        token = await redeem_auth_token(db, body.token, TokenPurpose.EMAIL_CHANGE)
    except TokenProblem as problem:
        raise Problem(400, "Link Not Usable", str(problem), code="token_invalid") from None
    if token.user_id != user.id:
        raise Problem(400, "Link Not Usable", "this link is not valid", code="token_invalid")
    if await find_user_by_email(db, token.email) is not None:
        raise Problem(409, "Conflict", "another account uses this address", code="exists")
    before = user.email
    user.email = token.email
    user.email_verified_at = utcnow()
    db.add(user)
    revoked = await revoke_sessions(
        db, user_id=user.id, reason="email changed", keep=signed.session.id
    )
    await record_security_event(
        request,
        action="user.email_changed",
        user_id=user.id,
        email=user.email,
        data={"previous_email": before, "other_sessions_revoked": len(revoked)},
        org_ids=await active_org_ids(db, user.id),
    )
    return Response(status_code=204)


# --- sessions ------------------------------------------------------------------------------


class MySessionOut(BaseModel):
    model_config = example(
        id=ex.SESSION_ID,
        current=True,
        org_id=ex.ORG_ID,
        created_at=ex.STARTED,
        last_seen_at=ex.DECIDED,
        expires_at=ex.DEADLINE,
        ip="203.0.113.7",
        user_agent=ex.USER_AGENT,
    )

    id: uuid.UUID
    current: bool
    org_id: uuid.UUID | None
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    ip: str | None
    user_agent: str | None


@router.get(
    "/sessions",
    response_model=list[MySessionOut],
    summary="List your live sessions",
    operation_id="list_my_sessions",
)
async def my_sessions(signed: Person, request: Request, db: DbSession) -> list[MySessionOut]:
    idle = timedelta(minutes=_settings(request).session_idle_minutes)
    now = utcnow()
    return [
        MySessionOut(
            id=row.id,
            current=row.id == signed.session.id,
            org_id=row.org_id,
            created_at=row.created_at,
            last_seen_at=row.last_seen_at,
            expires_at=min(row.expires_at, row.last_seen_at + idle),
            ip=row.ip,
            user_agent=row.user_agent,
        )
        for row in await live_sessions(db, signed.user.id)
        if row.last_seen_at + idle > now
    ]


@router.delete("/sessions/{session_id}", status_code=204, summary="End one of your sessions")
async def revoke_my_session(
    signed: Person, session_id: uuid.UUID, request: Request, db: DbSession
) -> Response:
    revoked = await revoke_sessions(
        db, user_id=signed.user.id, session_id=session_id, reason="revoked by its owner"
    )
    if not revoked:
        # Someone else's session, or one already ended: the same answer.
        raise not_found("session")
    await record_security_event(
        request,
        action="session.revoked",
        user_id=signed.user.id,
        email=signed.user.email,
        target_type="session",
        target_id=str(session_id),
        org_ids=await active_org_ids(db, signed.user.id),
    )
    return Response(status_code=204)
