"""What the sign-in routes share: the answers they give, opening a session, emailing a link."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from fastapi import BackgroundTasks, Request, Response
from pydantic import BaseModel, Field

from blocks.api import rate_limit
from blocks.api.deps import DbSession
from blocks.api.errors import Problem
from blocks.api.identity.email_field import EmailAddress
from blocks.api.identity.sessions import (
    check_origin,
    set_session_cookie,
)
from blocks.api.integrations.outbound_mail import public_link, queue_email, require_mail
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.api.security_audit import client_ip, record_security_event, user_agent
from blocks.core.audit.records import Outcome
from blocks.core.identity.redirects import safe_next
from blocks.infra.settings import Settings
from blocks.models.identity.auth_tokens import (
    TokenProblem,
    TokenPurpose,
    issue_auth_token,
)
from blocks.models.identity.orgs import User, find_user_by_email, orgs_of_user
from blocks.models.identity.sessions import start_session

Password = str  # never stripped, truncated or normalized: what was typed is what is hashed


def auth_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def token_problem(problem: TokenProblem) -> Problem:
    return Problem(400, "Link Not Usable", str(problem), code="token_invalid")


class Accepted(BaseModel):
    model_config = example(detail="check your email for a link to continue")

    detail: str


_ORG_CHOICE = {
    "id": ex.ORG_ID,
    "slug": ex.ORG_SLUG,
    "name": ex.ORG_NAME,
    "roles": ["approver"],
    "require_2fa": False,
    "sso_enforced": False,
}


class OrgChoice(BaseModel):
    model_config = example(**_ORG_CHOICE)

    id: uuid.UUID
    slug: str
    name: str
    roles: list[str]
    require_2fa: bool
    sso_enforced: bool = Field(
        description="Only a sign-in through the organization's identity provider (or a "
        "break-glass admin's) may enter it"
    )


class SignInOut(BaseModel):
    model_config = example(
        user_id=ex.APPROVER_ID,
        email=ex.APPROVER_EMAIL,
        mfa_required=False,
        organizations=[_ORG_CHOICE],
        next="/",
    )

    user_id: uuid.UUID
    email: str
    mfa_required: bool
    organizations: list[OrgChoice] = Field(
        default_factory=list, description="Empty until the second factor is given"
    )
    next: str = Field(description="Where to go now: always a path on this site")


async def org_choices(db: DbSession, user_id: uuid.UUID) -> list[OrgChoice]:
    return [
        OrgChoice(
            id=org.id,
            slug=org.slug,
            name=org.name,
            roles=list(membership.roles),
            require_2fa=org.require_2fa,
            sso_enforced=org.sso_enforced,
        )
        for org, membership in await orgs_of_user(db, user_id)
    ]


async def open_session(
    request: Request,
    response: Response,
    db: DbSession,
    user: User,
    *,
    next_path: str | None,
    choices: list[OrgChoice],
) -> SignInOut:
    """A brand-new session (and token) for a person who just proved who they are; `choices`
    are their organizations, shown once the second factor (if any) is given."""
    settings = auth_settings(request)
    mfa = user.totp_enabled_at is not None
    _, token = await start_session(
        db,
        user_id=user.id,
        mfa_pending=mfa,
        lifetime=timedelta(hours=settings.session_absolute_hours),
        ip=client_ip(request),
        user_agent=user_agent(request),
    )
    set_session_cookie(response, token, settings)
    return SignInOut(
        user_id=user.id,
        email=user.email,
        mfa_required=mfa,
        organizations=[] if mfa else choices,
        next=safe_next(next_path),
    )


async def complete_sign_in(
    request: Request,
    response: Response,
    db: DbSession,
    user: User,
    *,
    method: str,
    next_path: str | None,
) -> SignInOut:
    """Open the session of a person who just proved who they are, and audit the sign-in."""
    # One read of the person's organizations: the picker's choices and where to audit.
    choices = await org_choices(db, user.id)
    out = await open_session(request, response, db, user, next_path=next_path, choices=choices)
    await record_security_event(
        request,
        action="auth.signin",
        reason="second factor required" if out.mfa_required else None,
        user_id=user.id,
        email=user.email,
        data={"method": method, "mfa_pending": out.mfa_required},
        org_ids=[choice.id for choice in choices],
    )
    return out


class TokenIn(StrictModel):
    model_config = example(token=ex.SIGN_IN_TOKEN, next="/")

    token: str = Field(min_length=1, max_length=200)
    next: str | None = Field(default=None, max_length=2000)


class EmailIn(StrictModel):
    model_config = example(email=ex.APPROVER_EMAIL)

    email: EmailAddress


@dataclass(frozen=True)
class EmailedLink:
    purpose: TokenPurpose
    page: str
    subject: str
    lead: str
    warning: str
    action: str
    answer: str


async def email_link(
    link: EmailedLink,
    minutes: int,
    body: EmailIn,
    request: Request,
    db: DbSession,
    background: BackgroundTasks,
) -> Accepted:
    """Email a single-use link to an account's address; the same answer for any address."""
    await check_origin(request, None, None, absent_ok=True)
    await rate_limit.enforce_per_address(request, "token_ip")
    # Per address too (its own counter, apart from wrong passwords): no mailbox gets flooded.
    await rate_limit.enforce(request, "signin_account", f"mailbox:{body.email}")
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
