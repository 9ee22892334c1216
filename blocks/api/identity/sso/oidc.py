"""OpenID Connect single sign-on: the redirect to the provider, and the callback that proves the
person (state, browser binding, RFC 9207 `iss`, code exchange with PKCE, id_token) before the
shared sign-in (flow.finish_sso_sign_in) opens their session.

The PKCE verifier is never stored: it is an HMAC of the state under the browser's binding (the
`__Host-blocks_sso` cookie), so only the browser that started a sign-in can finish it, and a
copy of the `sso_requests` table (state hash, nonce, binding hash) cannot.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import asdict
from typing import NoReturn

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.api import rate_limit
from blocks.api.deps import DbSession
from blocks.api.identity.sso.flow import (
    SSO_REQUEST_LIFETIME,
    SsoTarget,
    bind_browser,
    binding_matches,
    browser_binding,
    finish_sso_sign_in,
    load_target,
    refuse_sso,
)
from blocks.infra.identity.oidc import (
    ProviderMetadata,
    authorization_url,
    complete_sign_in,
    discover,
)
from blocks.infra.identity.oidc_http import OidcError, OidcUnreachable, oidc_http
from blocks.infra.identity.provider_config import OidcConfig, oidc_config
from blocks.infra.integrations.outbound_http import OutboundPolicy
from blocks.infra.settings import Settings
from blocks.models.identity.sso.accounts import ExternalProfile
from blocks.models.identity.sso.providers import (
    Protocol,
    ProviderSecretUnavailable,
    open_client_secret,
)
from blocks.models.identity.sso.requests import consume_request, start_request

router = APIRouter(tags=["identity"])

_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def redirect_uri(settings: Settings, org_slug: str, provider_id: uuid.UUID) -> str:
    """The callback the provider sends the browser back to (register it at the provider)."""
    return f"{settings.public_url.rstrip('/')}/v1/sso/{org_slug}/{provider_id}/oidc/callback"


def pkce_verifier(binding: str, state: str) -> str:
    """The sign-in's PKCE code verifier: HMAC-SHA256 of the state under the browser binding,
    base64url (43 characters, as RFC 7636 asks)."""
    digest = hmac.new(binding.encode(), f"blocks.oidc.pkce|{state}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def _said(value: str | None, limit: int = 200) -> str:
    """A value the provider (or whoever built the URL) sent, fit for a log line."""
    return _UNPRINTABLE.sub("?", value or "")[:limit]


async def _refuse(request: Request, target: SsoTarget, error: OidcError) -> NoReturn:
    await refuse_sso(
        request, target, error.reason, status=503 if isinstance(error, OidcUnreachable) else 400
    )


async def _metadata(request: Request, target: SsoTarget, config: OidcConfig) -> ProviderMetadata:
    try:
        async with oidc_http(OutboundPolicy.from_settings(_settings(request))) as http:
            return await discover(http, config.issuer)
    except OidcError as error:
        await _refuse(request, target, error)


async def start_oidc(
    request: Request, db: AsyncSession, target: SsoTarget, next_path: str | None
) -> Response:
    """A 303 to the provider's authorization endpoint, the sign-in recorded and bound to this
    browser (state, nonce; PKCE S256 from the binding)."""
    config = oidc_config(target.provider.config)
    metadata = await _metadata(request, target, config)
    state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    response = RedirectResponse("/", status_code=303)
    binding, binding_hash = bind_browser(response)
    response.headers["location"] = authorization_url(
        metadata,
        config,
        redirect_uri=redirect_uri(_settings(request), target.org.slug, target.provider.id),
        state=state,
        nonce=nonce,
        code_verifier=pkce_verifier(binding, state),
        login_hint=request.query_params.get("login_hint") or None,
    )
    await start_request(
        target.ctx,
        db,
        provider_id=target.provider.id,
        handle=state,
        binding_hash=binding_hash,
        nonce=nonce,
        next_path=next_path,
        lifetime=SSO_REQUEST_LIFETIME,
    )
    return response


@router.get(
    "/v1/sso/{org_slug}/{provider_id}/oidc/callback",
    status_code=303,
    response_class=Response,
    summary="Finish signing in through an OpenID Connect provider",
    operation_id="finish_oidc_sign_in",
    # Its errors (400: refused, 403: the person may not enter, 503: the provider did not
    # answer; each audited) are problem+json, listed in api.reference.openapi.ROUTE_ERRORS.
    responses={303: {"description": "Signed in: to the page the sign-in was started for"}},
)
async def oidc_callback(
    org_slug: str,
    provider_id: uuid.UUID,
    request: Request,
    db: DbSession,
    # No length limits here: whatever arrives is refused through refuse_sso (audited), not 422.
    state: str | None = None,
    code: str | None = None,
    error: str | None = None,
    error_description: str | None = None,
    iss: str | None = None,
) -> Response:
    """Where the provider sends the browser back: the code is exchanged and the person signed
    in, or the sign-in refused (400, audited with the reason)."""
    await rate_limit.enforce_per_address(request, "signin_ip")
    target = await load_target(db, org_slug, provider_id, Protocol.OIDC)
    config = oidc_config(target.provider.config)
    row = (
        await consume_request(target.ctx, db, provider_id=target.provider.id, handle=state)
        if state
        else None
    )
    # The state is spent whatever follows: a refusal below rolls the request back, and a
    # callback replayed after it must still find nothing.
    await db.commit()
    if error:
        said = f" ({_said(error_description)})" if error_description else ""
        await refuse_sso(request, target, f"the provider answered {_said(error, 100)}{said}")
    if state is None or row is None or row.nonce is None:
        await refuse_sso(
            request,
            target,
            "the callback's state is missing, unknown, already used or expired",
            detail="This sign-in link is no longer valid; start signing in again.",
        )
    binding = browser_binding(request)
    if binding is None or not binding_matches(request, row):
        await refuse_sso(
            request,
            target,
            "the callback came to another browser than the one that started the sign-in",
        )
    if not code:
        await refuse_sso(request, target, "the callback carries no code")
    metadata = await _metadata(request, target, config)
    # RFC 9207: the authorization response names its issuer, so a response from another
    # provider (a mix-up attack) is not taken for this one's. authlib does not check it.
    if iss is not None and iss != metadata.issuer:
        await refuse_sso(request, target, f"the callback's iss {_said(iss)!r} is not the issuer")
    if iss is None and metadata.iss_parameter_supported:
        await refuse_sso(request, target, "the callback has no iss although the provider sends it")
    try:
        secret = await open_client_secret(target.ctx, db, target.provider)
    except ProviderSecretUnavailable as unavailable:
        await refuse_sso(request, target, str(unavailable), status=503)
    settings = _settings(request)
    try:
        async with oidc_http(OutboundPolicy.from_settings(settings)) as http:
            proven = await complete_sign_in(
                http,
                metadata,
                config,
                client_secret=secret,
                code=code,
                redirect_uri=redirect_uri(settings, target.org.slug, target.provider.id),
                code_verifier=pkce_verifier(binding, state),
                nonce=row.nonce,
            )
    except OidcError as refused:
        await _refuse(request, target, refused)
    profile = ExternalProfile(**asdict(proven), protocol=Protocol.OIDC.value)
    return await finish_sso_sign_in(request, db, target, profile, row.next_path)
