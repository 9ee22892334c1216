"""What the single sign-on routes share: finding the provider, binding a sign-in to the browser
that started it, refusing (audited, never a 500), and opening the session of a proven person.

A sign-in starts at `/v1/sso/{org}/{provider}/start` and ends at the protocol's callback; the
browser keeps a random value in the `__Host-blocks_sso` cookie and the request row its hash, so a
callback carried to another browser (login CSRF, a stolen callback URL) finds no match.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn

from fastapi import Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.api.errors import Problem
from blocks.api.identity.sessions import set_session_cookie
from blocks.api.security_audit import (
    client_ip,
    record_security_event,
    request_origin_fields,
    user_agent,
)
from blocks.core.audit.records import ActorType, AuditRecord, Outcome
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.identity.redirects import safe_next
from blocks.infra.identity.provider_config import AccountPolicy, oidc_config, saml_config
from blocks.infra.settings import Settings
from blocks.models.audit.events import append_events
from blocks.models.base import utcnow
from blocks.models.identity.orgs import Organization, User
from blocks.models.identity.sessions import start_session
from blocks.models.identity.sso.accounts import (
    AccountRefused,
    ExternalProfile,
    ResolvedAccount,
    resolve_account,
)
from blocks.models.identity.sso.providers import IdentityProvider, Protocol, get_provider
from blocks.models.identity.sso.requests import SsoRequest

logger = logging.getLogger(__name__)

SSO_BINDING_COOKIE = "__Host-blocks_sso"
SSO_REQUEST_LIFETIME = timedelta(minutes=10)


@dataclass(frozen=True)
class SsoTarget:
    """The organization and the provider a sign-in goes through."""

    ctx: OrgContext
    org: Organization
    provider: IdentityProvider


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _not_found() -> Problem:
    return Problem(404, "Not Found", "no such sign-in provider", code="not_found")


async def find_org(db: AsyncSession, org_slug: str) -> Organization:
    """An open organization by slug (organizations are not tenant rows); 404 otherwise."""
    org = (await db.exec(select(Organization).where(Organization.slug == org_slug))).first()
    if org is None or org.closed_at is not None:
        raise _not_found()
    return org


def org_probe(org: Organization) -> OrgContext:
    """The organization's context before anyone is known: what sign-in reads its rows with."""
    return OrgContext(org_id=OrgId(org.id), user_id=None, roles=(), auth=AuthMethod.SYSTEM)


async def load_target(
    db: AsyncSession, org_slug: str, provider_id: uuid.UUID, protocol: Protocol | None = None
) -> SsoTarget:
    """The organization and its enabled provider a URL names; 404 for anything else (unknown,
    disabled, deleted, another protocol, a closed organization)."""
    org = await find_org(db, org_slug)
    ctx = org_probe(org)
    provider = await get_provider(ctx, db, provider_id)
    if provider is None or not provider.enabled:
        raise _not_found()
    if protocol is not None and provider.protocol != protocol.value:
        raise _not_found()
    return SsoTarget(ctx=ctx, org=org, provider=provider)


def account_policy(provider: IdentityProvider) -> AccountPolicy:
    """The provider's rules on who comes in (allowed domains, JIT, MFA), whatever its protocol."""
    if provider.protocol == Protocol.OIDC.value:
        return oidc_config(provider.config)
    return saml_config(provider.config)


def _hash(binding: str) -> str:
    return hashlib.sha256(binding.encode()).hexdigest()


def bind_browser(response: Response) -> tuple[str, str]:
    """A new browser binding in the cookie; (binding, its hash for the request row). SameSite
    None: a SAML response arrives as a cross-site POST from the provider."""
    binding = secrets.token_urlsafe(32)
    response.set_cookie(
        SSO_BINDING_COOKIE,
        binding,
        max_age=int(SSO_REQUEST_LIFETIME.total_seconds()),
        path="/",
        secure=True,
        httponly=True,
        samesite="none",
    )
    return binding, _hash(binding)


def browser_binding(request: Request) -> str | None:
    return request.cookies.get(SSO_BINDING_COOKIE) or None


def binding_matches(request: Request, row: SsoRequest) -> bool:
    """Whether this browser started the sign-in `row` records (constant-time)."""
    binding = browser_binding(request)
    presented = _hash(binding) if binding else "0" * 64
    return hmac.compare_digest(presented, row.binding_hash) and binding is not None


async def refuse_sso(
    request: Request,
    target: SsoTarget,
    reason: str,
    *,
    detail: str | None = None,
    status: int = 400,
    email: str | None = None,
    data: dict[str, Any] | None = None,
) -> NoReturn:
    """Refuse a sign-in: `auth.sso_failed` audited with the reason (in the organization's chain
    and the platform's), and a problem+json answer."""
    await record_security_event(
        request,
        action="auth.sso_failed",
        outcome=Outcome.DENIED if status == 403 else Outcome.FAILURE,
        reason=reason[:500],
        email=email,
        target_type="identity_provider",
        target_id=str(target.provider.id),
        data={"protocol": target.provider.protocol, **(data or {})},
        org_ids=[target.org.id],
    )
    title = "Service Unavailable" if status == 503 else "Sign-in Failed"
    raise Problem(status, title, detail or reason, code="sso_failed")


async def _org_event(
    request: Request,
    db: AsyncSession,
    target: SsoTarget,
    user: User,
    action: str,
    data: dict[str, Any],
    reason: str | None = None,
) -> None:
    """An event of the sign-in in the organization's chain, in the sign-in's own transaction:
    it commits with what it records (a person made just now included), or not at all."""
    record = AuditRecord(
        action=action,
        actor_type=ActorType.USER,
        actor_id=str(user.id),
        actor_email=user.email,
        target_type="user",
        target_id=str(user.id),
        reason=reason,
        data={"provider_id": str(target.provider.id), "protocol": target.provider.protocol, **data},
        **request_origin_fields(request),
    )
    await append_events(target.ctx, db, [record])


async def _audit_account(
    request: Request, db: AsyncSession, target: SsoTarget, account: ResolvedAccount
) -> None:
    """The events of what resolving the account did."""
    user = account.member.user

    async def event(action: str, data: dict[str, Any]) -> None:
        await _org_event(request, db, target, user, action, data)

    if account.created_account or account.created_membership:
        await event(
            "sso.member_provisioned",
            {"new_account": account.created_account, "roles": account.member.membership.roles},
        )
    if account.linked:
        await event("sso.account_linked", {"subject": account.identity.subject})
    if account.email_changed_from is not None:
        await event("sso.email_changed", {"from": account.email_changed_from, "to": user.email})
    change = account.groups
    if change is not None and change.changed:
        await event(change.action, change.audit_data())


async def finish_sso_sign_in(
    request: Request,
    db: AsyncSession,
    target: SsoTarget,
    profile: ExternalProfile,
    next_path: str | None,
) -> Response:
    """Open the session of the person the provider proved: the account resolved (just in time,
    linked on proof, refreshed), the session scoped to the organization, every step audited;
    a 303 to the safe `next` with the session cookie."""
    try:
        account = await resolve_account(
            target.ctx, db, target.provider, account_policy(target.provider), profile
        )
    except IntegrityError:
        # Another sign-in of the same new person (a second tab) made the account first.
        await refuse_sso(
            request,
            target,
            "a concurrent sign-in of the same person created the account first",
            detail="another sign-in of yours finished first; sign in again",
            status=409,
            email=profile.email,
        )
    except AccountRefused as refused:
        await refuse_sso(
            request,
            target,
            refused.reason,
            detail=refused.detail,
            status=403,
            email=profile.email,
            data={"subject": profile.subject[:255]},
        )
    await _audit_account(request, db, target, account)
    user = account.member.user
    settings = _settings(request)
    # The provider's MFA stands for Blocks' own second factor; without it, a person who set up
    # Blocks' 2FA still gives their code.
    mfa_pending = user.totp_enabled_at is not None and not profile.mfa
    row, token = await start_session(
        db,
        user_id=user.id,
        mfa_pending=mfa_pending,
        lifetime=timedelta(hours=settings.session_absolute_hours),
        ip=client_ip(request),
        user_agent=user_agent(request),
    )
    row.org_id = target.org.id
    row.sso_provider_id = target.provider.id
    row.sso_org_id = target.org.id
    row.sso_mfa = profile.mfa
    db.add(row)
    user.email_verified_at = user.email_verified_at or (
        utcnow() if profile.email_verified else None
    )
    db.add(user)
    await db.flush()
    await _org_event(
        request,
        db,
        target,
        user,
        "auth.signin",
        {
            "method": "sso",
            "session_id": str(row.id),
            "idp_mfa": profile.mfa,
            "mfa_pending": mfa_pending,
            "groups": list(profile.groups)[:50],
        },
        reason="second factor required" if mfa_pending else None,
    )
    response = RedirectResponse(safe_next(next_path), status_code=303)
    set_session_cookie(response, token, settings)
    response.delete_cookie(
        SSO_BINDING_COOKIE, path="/", secure=True, httponly=True, samesite="none"
    )
    return response
