"""Routes for an organization's identity providers (OIDC, SAML): what admins configure, and the
URLs they give their IdP in return.

The OIDC client secret is write-only: sealed as it arrives (models.identity.sso.providers) and
never answered, logged or audited; answers say `client_secret_set` and its last four characters,
audit events `client_secret_changed`. Every config passes the save-time checks of
provider_checks (a 422 naming `config.<field>` and why); the protocol is fixed at creation.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field, SecretStr, StrictBool, StringConstraints, field_validator

from blocks.api.deps import CanManageSecurity, DbSession, record_change
from blocks.api.errors import PROBLEM_JSON, Problem, invalid_field, not_found
from blocks.api.identity.sso.provider_checks import (
    audited_config,
    checked_config,
    merged_config,
    shown_config,
)
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.core.context import OrgContext
from blocks.infra.integrations.outbound_http import OutboundPolicy
from blocks.infra.settings import Settings
from blocks.models.identity.members import get_org, lock_org
from blocks.models.identity.sso.providers import (
    IdentityProvider,
    Protocol,
    ProviderNameTaken,
    create_provider,
    delete_provider,
    get_provider,
    list_providers,
    update_provider,
)

router = APIRouter(prefix="/v1/org/sso/providers", tags=["identity"])

PROVIDER_ID = "8c7b6a59-4d3e-4f2a-9b1c-0d9e8f7a6b5c"
_ISSUER = "https://login.acme.example/oauth2/default"
_CONFIG = {"issuer": _ISSUER, "client_id": "0oa1blocks", "jit_provisioning": True}
_EXAMPLE_SECRET = "example-not-a-real-secret-7Qf3"  # noqa: S105 (an example)
_BASE = f"https://blocks.acme.example/v1/sso/{ex.ORG_SLUG}/{PROVIDER_ID}"

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
# A client secret goes into a form field or a Basic header: printable ASCII, no spaces.
ClientSecret = Annotated[SecretStr, Field(min_length=1, max_length=1000)]


def _printable(value: SecretStr | None) -> SecretStr | None:
    if value is not None and not all("\x21" <= c <= "\x7e" for c in value.get_secret_value()):
        raise ValueError("must be printable ASCII without spaces")
    return value


class ProviderIn(StrictModel):
    model_config = example(
        name="Okta", protocol="oidc", enabled=True, config=_CONFIG, client_secret=_EXAMPLE_SECRET
    )

    name: Name
    protocol: Protocol = Field(description="oidc or saml; fixed once created")
    enabled: StrictBool = True
    config: dict[str, Any] = Field(
        description="The protocol's settings (OIDC: issuer, client_id, scopes, groups_claim, "
        "mfa_values; SAML: one IdP source, attribute names, mfa_values; both: allowed_domains, "
        "jit_provisioning, require_mfa)"
    )
    client_secret: ClientSecret | None = Field(
        default=None, description="OIDC only. Write-only: never answered, logged or audited"
    )

    _printable_secret = field_validator("client_secret")(_printable)


class ProviderPatch(StrictModel):
    model_config = example(enabled=False, config={"require_mfa": True})

    name: Name | None = None
    protocol: Protocol | None = Field(default=None, description="Only the one it has")
    enabled: StrictBool | None = None
    config: dict[str, Any] | None = Field(
        default=None,
        description="The keys given replace the stored ones, the others stay; giving one SAML "
        "IdP source replaces the others (a metadata URL is fetched again)",
    )
    client_secret: ClientSecret | None = Field(default=None, description="Replaces the secret")

    _printable_secret = field_validator("client_secret")(_printable)


class ProviderOut(BaseModel):
    model_config = example(
        id=PROVIDER_ID,
        name="Okta",
        protocol="oidc",
        enabled=True,
        config=_CONFIG,
        client_secret_set=True,
        client_secret_last4=_EXAMPLE_SECRET[-4:],
        start_url=f"{_BASE}/start",
        redirect_uri=f"{_BASE}/oidc/callback",
        sp_entity_id=None,
        sp_metadata_url=None,
        acs_url=None,
        created_by=ex.OWNER_ID,
        created_at=ex.CREATED,
        updated_at=ex.CREATED,
    )

    id: uuid.UUID
    name: str
    protocol: str
    enabled: bool
    config: dict[str, Any]
    client_secret_set: bool
    client_secret_last4: str | None = Field(description="Its last four characters (secrets of 12+)")
    start_url: str = Field(description="Where a sign-in through this provider starts")
    redirect_uri: str | None = Field(description="OIDC: the redirect URI to register at the IdP")
    sp_entity_id: str | None = Field(description="SAML: the SP entity id (the metadata URL)")
    sp_metadata_url: str | None = Field(description="SAML: the SP metadata, for the IdP")
    acs_url: str | None = Field(description="SAML: the Assertion Consumer Service URL")
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


_LAST_PROVIDER = {
    409: {
        "description": "SSO is enforced and this is its last enabled provider",
        "content": {
            PROBLEM_JSON: {
                "schema": {"$ref": "#/components/schemas/ProblemOut"},
                "example": {
                    "type": "/problems/sso_enforced",
                    "title": "Conflict",
                    "status": 409,
                    "detail": "sign-in is enforced through SSO and this is the last enabled "
                    "provider: turn enforcement off first (PUT /v1/org/sso)",
                    "instance": f"/v1/org/sso/providers/{PROVIDER_ID}",
                    "code": "sso_enforced",
                },
            }
        },
    }
}


def provider_urls(settings: Settings, org_slug: str, provider: IdentityProvider) -> dict[str, Any]:
    """The URLs of Blocks the admin gives the IdP (settings.public_url based)."""
    base = f"{settings.public_url.rstrip('/')}/v1/sso/{org_slug}/{provider.id}"
    oidc = provider.protocol == Protocol.OIDC
    metadata = None if oidc else f"{base}/saml/metadata"
    return {
        "start_url": f"{base}/start",
        "redirect_uri": f"{base}/oidc/callback" if oidc else None,
        "sp_entity_id": metadata,
        "sp_metadata_url": metadata,
        "acs_url": None if oidc else f"{base}/saml/acs",
    }


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _out(request: Request, org_slug: str, provider: IdentityProvider) -> ProviderOut:
    return ProviderOut(
        id=provider.id,
        name=provider.name,
        protocol=provider.protocol,
        enabled=provider.enabled,
        config=shown_config(provider.config),
        client_secret_set=provider.secret_sealed is not None,
        client_secret_last4=provider.secret_last4,
        created_by=provider.created_by,
        created_at=provider.created_at,
        updated_at=provider.updated_at,
        **provider_urls(_settings(request), org_slug, provider),
    )


def _metadata(provider: IdentityProvider, **extra: Any) -> dict[str, Any]:
    """What an audit event says of a provider: never the secret, only whether it is set."""
    return {
        "name": provider.name,
        "protocol": provider.protocol,
        "enabled": provider.enabled,
        "config": audited_config(provider.config),
        "client_secret_set": provider.secret_sealed is not None,
        "client_secret_last4": provider.secret_last4,
        **extra,
    }


async def _org_slug(ctx: OrgContext, session: DbSession) -> str:
    org = await get_org(ctx, session)
    if org is None:
        raise not_found("organization")
    return org.slug


async def _provider_or_404(
    ctx: OrgContext, session: DbSession, provider_id: uuid.UUID
) -> IdentityProvider:
    provider = await get_provider(ctx, session, provider_id)
    if provider is None:
        raise not_found("identity provider")
    return provider


def _policy(request: Request) -> OutboundPolicy:
    return OutboundPolicy.from_settings(_settings(request))


def _secret_for(protocol: Protocol, secret: SecretStr | None) -> str | None:
    if secret is not None and protocol is not Protocol.OIDC:
        raise invalid_field("client_secret", "only an OIDC provider has a client secret")
    return secret.get_secret_value() if secret is not None else None


async def _refuse_leaving_none(
    ctx: OrgContext, session: DbSession, provider: IdentityProvider
) -> None:
    """409 if disabling or deleting `provider` would leave enforced SSO without a provider.
    Under the organization's lock, as PUT /v1/org/sso takes it, so the two cannot cross."""
    org = await lock_org(ctx, session)
    if not org.sso_enforced:
        return
    others = [p for p in await list_providers(ctx, session) if p.enabled and p.id != provider.id]
    if not others:
        raise Problem(
            409,
            "Conflict",
            "sign-in is enforced through SSO and this is the last enabled provider: turn "
            "enforcement off first (PUT /v1/org/sso)",
            code="sso_enforced",
        )


@router.post("", status_code=201, response_model=ProviderOut, summary="Add an identity provider")
async def add_sso_provider(
    body: ProviderIn, request: Request, ctx: CanManageSecurity, session: DbSession
) -> ProviderOut:
    """Add an OIDC or SAML provider. The config is checked as it is saved: an OIDC issuer must
    be public (or allowed by BLOCKS_OUTBOUND_ALLOW_PRIVATE); a SAML IdP is given by exactly one
    source, and its metadata (fetched once from a URL) or certificate must parse. Each refusal
    is a 422 naming `config.<field>` and why."""
    secret = _secret_for(body.protocol, body.client_secret)
    config = await checked_config(body.protocol, body.config, _policy(request))
    try:
        provider = await create_provider(
            ctx,
            session,
            name=body.name,
            protocol=body.protocol,
            config=config,
            secret=secret,
            enabled=body.enabled,
        )
    except ProviderNameTaken:
        raise invalid_field("name", f"an identity provider named {body.name!r} exists") from None
    await record_change(
        request,
        ctx,
        session,
        "sso.provider_created",
        target_type="identity_provider",
        target_id=str(provider.id),
        data=_metadata(provider, client_secret_changed=secret is not None),
    )
    return _out(request, await _org_slug(ctx, session), provider)


@router.get("", response_model=list[ProviderOut], summary="List identity providers")
async def list_sso_providers(
    request: Request, ctx: CanManageSecurity, session: DbSession
) -> list[ProviderOut]:
    """The organization's providers by name; no client secret is ever shown, only whether one
    is set and its last four characters."""
    slug = await _org_slug(ctx, session)
    return [_out(request, slug, p) for p in await list_providers(ctx, session)]


@router.get("/{provider_id}", response_model=ProviderOut, summary="Read an identity provider")
async def read_sso_provider(
    provider_id: uuid.UUID, request: Request, ctx: CanManageSecurity, session: DbSession
) -> ProviderOut:
    provider = await _provider_or_404(ctx, session, provider_id)
    return _out(request, await _org_slug(ctx, session), provider)


@router.patch(
    "/{provider_id}",
    response_model=ProviderOut,
    responses=_LAST_PROVIDER,
    summary="Change an identity provider",
)
async def change_sso_provider(
    provider_id: uuid.UUID,
    body: ProviderPatch,
    request: Request,
    ctx: CanManageSecurity,
    session: DbSession,
) -> ProviderOut:
    """Rename, enable or disable, change the config (checked again, as when added) or replace
    the client secret. Disabling the last enabled provider while SSO is enforced is a 409."""
    provider = await _provider_or_404(ctx, session, provider_id)
    protocol = Protocol(provider.protocol)
    if body.protocol is not None and body.protocol is not protocol:
        raise invalid_field("protocol", "is fixed once created: add another provider instead")
    secret = _secret_for(protocol, body.client_secret)
    config = None
    if body.config is not None:
        merged = merged_config(provider.config, body.config)
        config = await checked_config(protocol, merged, _policy(request))
    if body.enabled is False and provider.enabled:
        await _refuse_leaving_none(ctx, session, provider)
    before = _metadata(provider)
    try:
        provider = await update_provider(
            ctx,
            session,
            provider,
            name=body.name,
            config=config,
            enabled=body.enabled,
            secret=secret,
        )
    except ProviderNameTaken:
        raise invalid_field("name", f"an identity provider named {body.name!r} exists") from None
    after = _metadata(provider)
    changed = sorted(k for k in after if after[k] != before[k])
    await record_change(
        request,
        ctx,
        session,
        "sso.provider_updated",
        target_type="identity_provider",
        target_id=str(provider.id),
        data={
            **after,
            "client_secret_changed": secret is not None,
            "changed": changed,
            "before": {k: before[k] for k in changed},
        },
    )
    return _out(request, await _org_slug(ctx, session), provider)


@router.delete(
    "/{provider_id}",
    status_code=204,
    responses=_LAST_PROVIDER,
    summary="Delete an identity provider",
)
async def delete_sso_provider(
    provider_id: uuid.UUID, request: Request, ctx: CanManageSecurity, session: DbSession
) -> Response:
    """Delete a provider: its client secret is dropped for good and no sign-in goes through it
    again (its accounts' members stay members). The last enabled provider of an organization
    that enforces SSO cannot go (409)."""
    provider = await _provider_or_404(ctx, session, provider_id)
    if provider.enabled:
        await _refuse_leaving_none(ctx, session, provider)
    data = _metadata(provider)
    await delete_provider(ctx, session, provider)
    await record_change(
        request,
        ctx,
        session,
        "sso.provider_deleted",
        target_type="identity_provider",
        target_id=str(provider.id),
        data=data,
    )
    return Response(status_code=204)
