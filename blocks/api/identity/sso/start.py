"""Where single sign-on begins: an organization's sign-in providers, and the start of a sign-in
through one of them (a redirect to the provider, by its protocol)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from blocks.api import rate_limit
from blocks.api.deps import DbSession
from blocks.api.identity.sso.flow import find_org, load_target, org_probe
from blocks.api.identity.sso.oidc import start_oidc
from blocks.api.identity.sso.saml import start_saml
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.infra.settings import Settings
from blocks.models.identity.sso.providers import Protocol, list_providers

router = APIRouter(prefix="/v1/sso", tags=["identity"])


class ProviderChoice(BaseModel):
    model_config = example(
        id=ex.ORG_ID, name="Okta", protocol="oidc", start_url="https://blocks.example.com/..."
    )

    id: uuid.UUID
    name: str
    protocol: str
    start_url: str = Field(description="Open this URL in the browser to sign in")


class SignInOptions(BaseModel):
    model_config = example(
        organization=ex.ORG_SLUG,
        sso_enforced=False,
        providers=[
            {
                "id": ex.ORG_ID,
                "name": "Okta",
                "protocol": "oidc",
                "start_url": "https://blocks.example.com/...",
            }
        ],
    )

    organization: str
    sso_enforced: bool = Field(
        description="Password and emailed-link sign-in cannot enter this organization"
    )
    providers: list[ProviderChoice]


def start_url(settings: Settings, org_slug: str, provider_id: uuid.UUID) -> str:
    return f"{settings.public_url.rstrip('/')}/v1/sso/{org_slug}/{provider_id}/start"


@router.get(
    "/{org_slug}",
    response_model=SignInOptions,
    summary="List an organization's sign-in providers",
    operation_id="list_sign_in_providers",
)
async def sign_in_options(org_slug: str, request: Request, db: DbSession) -> SignInOptions:
    """What a sign-in page shows for an organization: its enabled identity providers."""
    await rate_limit.enforce_per_address(request, "signin_ip")
    org = await find_org(db, org_slug)
    settings: Settings = request.app.state.settings
    providers = [p for p in await list_providers(org_probe(org), db) if p.enabled]
    return SignInOptions(
        organization=org.slug,
        sso_enforced=org.sso_enforced,
        providers=[
            ProviderChoice(
                id=p.id,
                name=p.name,
                protocol=p.protocol,
                start_url=start_url(settings, org.slug, p.id),
            )
            for p in providers
        ],
    )


@router.get(
    "/{org_slug}/{provider_id}/start",
    status_code=303,
    response_class=Response,
    summary="Start signing in through an identity provider",
    operation_id="start_sso_sign_in",
    responses={303: {"description": "To the identity provider"}},
)
async def start_sign_in(
    org_slug: str,
    provider_id: uuid.UUID,
    request: Request,
    db: DbSession,
    next: str | None = Query(default=None, max_length=2000),
) -> Response:
    """Redirect the browser to the provider; it comes back to the protocol's callback."""
    await rate_limit.enforce_per_address(request, "signin_ip")
    target = await load_target(db, org_slug, provider_id)
    if target.provider.protocol == Protocol.OIDC.value:
        return await start_oidc(request, db, target, next)
    return await start_saml(request, db, target, next)
