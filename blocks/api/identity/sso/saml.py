"""SAML 2.0 sign-in routes: the start (an AuthnRequest by HTTP-Redirect), the Assertion Consumer
Service (the IdP's HTTP-POST), and our SP metadata at a stable URL.

The ACS is a cross-site POST from the IdP, so it has no origin check; what ties a response to
the browser is the request it answers (consumed once, by InResponseTo) and the SameSite=None
binding cookie set when that request was made. An unsolicited (IdP-initiated) response is taken
only when the provider allows it. Every assertion id accepted is remembered until its
NotOnOrAfter, so neither kind can be replayed. Single logout is not offered.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import NoReturn
from urllib.parse import parse_qs

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.api import rate_limit
from blocks.api.deps import DbSession
from blocks.api.errors import Problem
from blocks.api.identity.sso.flow import (
    SSO_REQUEST_LIFETIME,
    SsoTarget,
    bind_browser,
    binding_matches,
    finish_sso_sign_in,
    load_target,
    refuse_sso,
)
from blocks.api.identity.sso.providers import provider_urls
from blocks.infra.identity.provider_config import SamlConfig, saml_config
from blocks.infra.identity.saml import (
    MAX_RESPONSE_CHARS,
    ServiceProvider,
    authn_request_async,
    peek_in_response_to,
    read_response_async,
    sp_metadata_xml,
)
from blocks.infra.identity.saml_xml import SamlError
from blocks.infra.settings import Settings
from blocks.models.identity.sso.accounts import ExternalProfile
from blocks.models.identity.sso.providers import Protocol
from blocks.models.identity.sso.requests import (
    consume_request,
    remember_assertion,
    start_request,
)

router = APIRouter(tags=["identity"])

SAML_METADATA_MEDIA_TYPE = "application/samlmetadata+xml"
# The IdP's form post (read by hand: FastAPI's Form needs python-multipart, not installed).
_ACS_FORM = {
    "required": True,
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "required": ["SAMLResponse"],
                "properties": {
                    "SAMLResponse": {
                        "type": "string",
                        "description": "The base64 Response",
                        "maxLength": MAX_RESPONSE_CHARS,
                    },
                    "RelayState": {"type": "string", "description": "Ignored", "maxLength": 80},
                },
            },
            "example": {"SAMLResponse": "PHNhbWxwOlJlc3BvbnNlIC4uLg==", "RelayState": ""},
        }
    },
}
# A form with more fields than this is not an IdP's post.
_MAX_FORM_FIELDS = 8


def service_provider(request: Request, target: SsoTarget) -> ServiceProvider:
    """Us for this provider: entity id = the metadata URL, and the ACS URL (from public_url)."""
    settings: Settings = request.app.state.settings
    urls = provider_urls(settings, target.org.slug, target.provider)
    return ServiceProvider(entity_id=urls["sp_entity_id"], acs_url=urls["acs_url"])


async def _config(request: Request, target: SsoTarget) -> SamlConfig:
    try:
        return saml_config(target.provider.config)
    except ValidationError:
        await refuse_sso(request, target, "the provider's stored SAML settings are not valid")


async def _refuse(request: Request, target: SsoTarget, error: SamlError) -> NoReturn:
    await refuse_sso(request, target, error.reason)


async def start_saml(
    request: Request, db: AsyncSession, target: SsoTarget, next_path: str | None
) -> Response:
    """A 303 to the IdP with an unsigned AuthnRequest; its ID is the sign-in's handle, bound to
    this browser. No RelayState: nothing needs to travel through the IdP."""
    config = await _config(request, target)
    try:
        redirect = await authn_request_async(config, service_provider(request, target))
    except SamlError as error:
        await _refuse(request, target, error)
    response = RedirectResponse(redirect.url, status_code=303)
    _, binding_hash = bind_browser(response)
    await start_request(
        target.ctx,
        db,
        provider_id=target.provider.id,
        handle=redirect.request_id,
        binding_hash=binding_hash,
        nonce=None,
        next_path=next_path,
        lifetime=SSO_REQUEST_LIFETIME,
    )
    return response


async def _posted_response(request: Request, target: SsoTarget) -> str:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        await refuse_sso(request, target, "the ACS takes a form post (HTTP-POST binding)")
    try:
        form = parse_qs((await request.body()).decode("ascii"), max_num_fields=_MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        await refuse_sso(request, target, "the ACS post is not a readable form")
    values = form.get("SAMLResponse", [])
    if len(values) != 1 or not values[0].strip():
        await refuse_sso(request, target, "the post carries no single SAMLResponse")
    return values[0]


@router.post(
    "/v1/sso/{org_slug}/{provider_id}/saml/acs",
    status_code=303,
    response_class=Response,
    summary="Finish signing in through a SAML identity provider (Assertion Consumer Service)",
    operation_id="saml_assertion_consumer_service",
    # Its errors (400: refused, the reason audited; 404: no such enabled SAML provider) are
    # problem+json, listed in api.reference.openapi.ROUTE_ERRORS.
    responses={303: {"description": "Signed in: to the page the sign-in was started for"}},
    openapi_extra={"requestBody": _ACS_FORM},
)
async def saml_acs(
    org_slug: str, provider_id: uuid.UUID, request: Request, db: DbSession
) -> Response:
    """The IdP's HTTP-POST of a SAMLResponse (and RelayState, ignored): verified, then the
    person signed in, or the sign-in refused (400, audited with the reason)."""
    await rate_limit.enforce_per_address(request, "signin_ip")
    target = await load_target(db, org_slug, provider_id, Protocol.SAML)
    config = await _config(request, target)
    posted = await _posted_response(request, target)
    try:
        request_id = await asyncio.to_thread(peek_in_response_to, posted)
    except SamlError as error:
        await _refuse(request, target, error)
    row = None
    if request_id is not None:
        row = await consume_request(
            target.ctx, db, provider_id=target.provider.id, handle=request_id
        )
        # The request is spent whatever follows: a refusal below rolls back, and the same
        # response posted again must still find nothing.
        await db.commit()
        if row is None:
            await refuse_sso(
                request,
                target,
                "the response answers a request that is unknown, already used or expired",
                detail="This sign-in is no longer valid; start signing in again.",
            )
        if not binding_matches(request, row):
            await refuse_sso(
                request,
                target,
                "the response came to another browser than the one that started the sign-in",
            )
    elif not config.allow_idp_initiated:
        await refuse_sso(
            request,
            target,
            "an unsolicited (IdP-initiated) response, which this provider does not accept",
        )
    try:
        identity = await read_response_async(
            config, service_provider(request, target), posted, expected_request_id=request_id
        )
    except SamlError as error:
        await _refuse(request, target, error)
    fresh = await remember_assertion(
        target.ctx,
        db,
        provider_id=target.provider.id,
        assertion_id=identity.assertion_id,
        expires_at=identity.not_on_or_after,
    )
    await db.commit()  # remembered even if the sign-in is refused below
    if not fresh:
        await refuse_sso(request, target, "the assertion was already used (replayed)")
    profile = ExternalProfile(
        subject=identity.subject,
        email=identity.email,
        email_verified=identity.email is not None,
        display_name=identity.display_name,
        groups=identity.groups,
        mfa=identity.mfa,
        protocol=Protocol.SAML.value,
    )
    return await finish_sso_sign_in(
        request, db, target, profile, row.next_path if row is not None else None
    )


# For identity providers, not API clients: left out of the OpenAPI document (as SCIM is), whose
# clients have no use for a SAML metadata document (and generators no type for its media type).
@router.get(
    "/v1/sso/{org_slug}/{provider_id}/saml/metadata",
    response_class=Response,
    include_in_schema=False,
)
async def saml_metadata(
    org_slug: str, provider_id: uuid.UUID, request: Request, db: DbSession
) -> Response:
    """The SP metadata an admin gives their IdP: entity id (this URL), ACS (HTTP-POST),
    signed assertions wanted, persistent NameID; unsigned, with no key (none is needed)."""
    target = await load_target(db, org_slug, provider_id, Protocol.SAML)
    try:
        xml = await asyncio.to_thread(sp_metadata_xml, service_provider(request, target))
    except SamlError as error:  # xmlsec1 missing on this server
        raise Problem(503, "Service Unavailable", error.reason, code="saml_unavailable") from None
    return Response(xml, media_type=SAML_METADATA_MEDIA_TYPE)
