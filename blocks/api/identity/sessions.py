"""Cookie sessions: the `__Host-` cookie, resolving it to a person or an OrgContext, the origin check.

A state-changing request authenticated by the cookie must come from an allowed origin (Origin,
else Referer); a cross-origin one is refused and audited. API keys travel in a header a browser
never adds by itself, so they need no such check.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn
from urllib.parse import urlsplit

from fastapi import Request, Response
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.api import rate_limit
from blocks.api.errors import Problem
from blocks.api.security_audit import record_security_event
from blocks.core.audit.records import Outcome
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import parse_roles
from blocks.infra.settings import Settings
from blocks.models.identity.orgs import Organization, User, get_membership
from blocks.models.identity.sessions import UserSession, find_live_session

# `__Host-`: the browser keeps it only if Secure, Path=/ and without Domain, so no subdomain
# and no plain-http page can plant or overwrite it.
SESSION_COOKIE = "__Host-blocks_session"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The codec endpoint's routes (api.approvals.codec): the Temporal UI calls them from its own
# origin, so they alone also accept the origins of BLOCKS_CODEC_CORS_ORIGINS.
CODEC_DECODE_PATH = "/v1/codec/decode"
CODEC_ENCODE_PATH = "/v1/codec/encode"
CODEC_PATHS = frozenset({CODEC_DECODE_PATH, CODEC_ENCODE_PATH})


@dataclass(frozen=True)
class SignedIn:
    session: UserSession
    user: User


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _unauthorized(detail: str, code: str) -> Problem:
    return Problem(401, "Unauthorized", detail, code=code)


def set_session_cookie(response: Response, token: str, settings: Settings) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.session_absolute_hours * 3600,
        path="/",
        secure=True,
        httponly=True,
        samesite="lax",
    )


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="lax")


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def allowed_origins(settings: Settings) -> frozenset[str]:
    configured = settings.allowed_origins or [settings.public_url]
    return frozenset(o for o in (_origin_of(url) for url in configured) if o)


def codec_origins(settings: Settings) -> frozenset[str]:
    configured = (settings.codec_cors_origins or "").split(",")
    return frozenset(o for o in (_origin_of(url.strip()) for url in configured) if o)


def request_origin(request: Request) -> str | None:
    """Where the request says it comes from: Origin, else the origin of Referer."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        return _origin_of(origin)
    referer = request.headers.get("referer")
    return _origin_of(referer) if referer else None


async def check_origin(
    request: Request, row: UserSession | None, user: User | None, *, absent_ok: bool = False
) -> None:
    """Refuse (403, audited) a state-changing cookie request from any origin but ours.

    `absent_ok` is for requests that carry no session yet (sign-in, sign-up): a browser always
    names the origin of a cross-site POST, so one naming another site is refused (login CSRF),
    while a script or CLI that names none may sign in.
    """
    if request.method in _SAFE_METHODS:
        return
    origin = request_origin(request)
    if origin is None and absent_ok:
        return
    if origin is not None and origin in allowed_origins(_settings(request)):
        return
    if request.url.path in CODEC_PATHS and origin in codec_origins(_settings(request)):
        return
    reason = "cross-origin request refused" if origin else "request without Origin or Referer"
    await record_security_event(
        request,
        action="access.denied",
        outcome=Outcome.DENIED,
        reason=f"csrf: {reason}",
        user_id=user.id if user else None,
        email=user.email if user else None,
        target_type="route",
        target_id=f"{request.method} {request.url.path}",
        data={"origin": origin},
        org_ids=[row.org_id] if row is not None and row.org_id else (),
    )
    raise Problem(
        403,
        "Forbidden",
        f"{reason}: state-changing requests signed in by cookie must come from this site",
        code="csrf",
    )


async def signed_in(
    request: Request, db: AsyncSession, *, allow_mfa_pending: bool = False
) -> SignedIn:
    """The person behind the session cookie, whose session is live (not idle, revoked, expired)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise _unauthorized("sign in first", "unauthorized")
    settings = _settings(request)
    row = await find_live_session(db, token, idle=timedelta(minutes=settings.session_idle_minutes))
    if row is None:
        await rate_limit.enforce_per_address(request, "invalid_ip")
        raise _unauthorized("your session has ended; sign in again", "session_ended")
    user = await db.get(User, row.user_id)
    if user is None or user.deactivated_at is not None:
        raise _unauthorized("your session has ended; sign in again", "session_ended")
    if row.mfa_pending and not allow_mfa_pending:
        raise _unauthorized("finish signing in with your two-factor code", "mfa_required")
    await check_origin(request, row, user)
    request.state.session = row
    return SignedIn(session=row, user=user)


@dataclass(frozen=True)
class EntryRule:
    """A rule of an organization a person's session must meet to act in it."""

    reason: str  # audited
    detail: str  # answered
    code: str


TWO_FACTOR_RULE = EntryRule(
    "organization requires two-factor sign-in",
    "this organization requires two-factor sign-in: set it up at /v1/me/2fa first",
    "two_factor_required",
)
SSO_RULE = EntryRule(
    "organization enforces single sign-on",
    "this organization enforces single sign-on: sign in through its identity provider "
    "(GET /v1/sso/{organization})",
    "sso_required",
)


async def refuse_entry(
    request: Request,
    rule: EntryRule,
    user: User,
    org_id: uuid.UUID,
    target_type: str,
    target_id: str,
) -> NoReturn:
    """403 (audited in the organization) for a session that does not meet `rule`."""
    await record_security_event(
        request,
        action="access.denied",
        outcome=Outcome.DENIED,
        reason=rule.reason,
        user_id=user.id,
        email=user.email,
        target_type=target_type,
        target_id=target_id,
        org_ids=[org_id],
    )
    raise Problem(403, "Forbidden", rule.detail, code=rule.code)


def break_glass_allowed(org: Organization, signed: SignedIn) -> bool:
    """A named break-glass admin of `org`, in a session that passed Blocks' own second factor."""
    row, user = signed.session, signed.user
    return (
        user.id in (org.sso_break_glass or [])
        and user.totp_enabled_at is not None
        and not row.mfa_pending
    )


def sso_admits(org: Organization, signed: SignedIn) -> bool:
    """Whether an organization's single sign-on rule lets this session in: it does not enforce
    it, or the session signed in through its provider, or a break-glass admin's."""
    if not org.sso_enforced or signed.session.sso_org_id == org.id:
        return True
    return break_glass_allowed(org, signed)


async def session_org_context(request: Request, db: AsyncSession, signed: SignedIn) -> OrgContext:
    """The OrgContext of a session scoped to an organization, as the membership stands now."""
    row, user = signed.session, signed.user
    if row.org_id is None:
        await record_security_event(
            request,
            action="access.denied",
            outcome=Outcome.DENIED,
            reason="no organization selected",
            user_id=user.id,
            email=user.email,
            target_type="route",
            target_id=f"{request.method} {request.url.path}",
        )
        raise Problem(
            403,
            "Forbidden",
            "pick an organization first (GET /v1/auth/orgs, then POST /v1/auth/org)",
            code="organization_not_selected",
        )
    probe = OrgContext(org_id=OrgId(row.org_id), user_id=None, roles=(), auth=AuthMethod.SESSION)
    membership = await get_membership(probe, db, user.id)
    org = await db.get(Organization, row.org_id)
    if (
        membership is None
        or membership.deactivated_at is not None
        or org is None
        or org.closed_at is not None
    ):
        raise _unauthorized(
            "you are no longer a member of this organization; sign in again", "session_ended"
        )
    ctx = OrgContext(
        org_id=OrgId(row.org_id),
        user_id=user.id,
        roles=parse_roles(membership.roles),
        auth=AuthMethod.SESSION,
        actor_email=user.email,
        credential_id=row.id,
    )
    route = f"{request.method} {request.url.path}"
    if not sso_admits(org, signed):
        await refuse_entry(request, SSO_RULE, user, row.org_id, "route", route)
    # A provider's asserted MFA, for a session through that organization's own provider,
    # stands for Blocks' second factor.
    idp_mfa = row.sso_mfa and row.sso_org_id == org.id
    if org.require_2fa and user.totp_enabled_at is None and not idp_mfa:
        await refuse_entry(request, TWO_FACTOR_RULE, user, row.org_id, "route", route)
    return ctx
