"""Identity providers: an organization's OIDC and SAML providers, their settings, and the OIDC
client secret sealed under the organization's data key (write-only: only sign-in opens it)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidTag
from sqlalchemy import Column, Index, LargeBinary, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.infra.crypto.org_keys import OrgDataKey
from blocks.infra.db import bind_org
from blocks.models.base import new_id, org_fk_column, timestamp_column, utcnow
from blocks.models.keys.org_keys import live_org_key, org_key_by_id


class Protocol(StrEnum):
    OIDC = "oidc"
    SAML = "saml"


class IdentityProvider(SQLModel, table=True):
    __tablename__ = "identity_providers"
    __table_args__ = (
        Index(
            "ux_identity_providers_live_name",
            "org_id",
            "name",
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
        ),
    )

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    name: str = Field(max_length=100)
    protocol: str = Field(max_length=8)
    enabled: bool = True
    # The protocol's settings, as the API checked them (blocks.api.identity.sso_config).
    config: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    secret_key_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    secret_sealed: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    secret_last4: str | None = Field(default=None, max_length=4)
    created_by: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    deleted_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))

    def __repr__(self) -> str:
        # Never the sealed secret, even in a traceback's locals.
        return f"IdentityProvider(id={self.id}, name={self.name!r}, protocol={self.protocol!r})"


class ProviderNameTaken(ValueError):
    """Another live provider of the organization has this name."""


class ProviderSecretUnavailable(LookupError):
    """The sealed client secret does not open (its data key destroyed, or the row altered)."""


def _aad(org_id: uuid.UUID, provider_id: uuid.UUID) -> bytes:
    return f"blocks.identity-provider.v1|{org_id}|{provider_id}|client_secret".encode()


def seal_secret(key: OrgDataKey, provider: IdentityProvider, secret: str | None) -> None:
    """Seal (or, with None, drop) the provider's client secret."""
    if secret is None:
        provider.secret_key_id = provider.secret_sealed = provider.secret_last4 = None
        return
    provider.secret_key_id = key.key_id
    provider.secret_sealed = key.seal(secret.encode(), _aad(provider.org_id, provider.id))
    provider.secret_last4 = secret[-4:] if len(secret) >= 12 else None


async def create_provider(
    ctx: OrgContext,
    db: AsyncSession,
    *,
    name: str,
    protocol: Protocol,
    config: dict[str, Any],
    secret: str | None,
    enabled: bool = True,
) -> IdentityProvider:
    """A new provider (secret sealed); ProviderNameTaken if a live one has the name."""
    await bind_org(db, ctx.org_id)
    provider = IdentityProvider(
        org_id=ctx.org_id,
        name=name,
        protocol=protocol.value,
        enabled=enabled,
        config=config,
        created_by=ctx.user_id,
    )
    if secret is not None:
        seal_secret(await live_org_key(db, ctx.org_id), provider, secret)
    try:
        async with db.begin_nested():
            db.add(provider)
            await db.flush()
    except IntegrityError:
        raise ProviderNameTaken(name) from None
    return provider


async def update_provider(
    ctx: OrgContext,
    db: AsyncSession,
    provider: IdentityProvider,
    *,
    name: str | None = None,
    config: dict[str, Any] | None = None,
    enabled: bool | None = None,
    secret: str | None = None,
) -> IdentityProvider:
    """Change what is given (a secret given replaces the sealed one)."""
    await bind_org(db, ctx.org_id)
    if name is not None:
        provider.name = name
    if config is not None:
        provider.config = config
    if enabled is not None:
        provider.enabled = enabled
    if secret is not None:
        seal_secret(await live_org_key(db, ctx.org_id), provider, secret)
    provider.updated_at = utcnow()
    try:
        async with db.begin_nested():
            db.add(provider)
            await db.flush()
    except IntegrityError:
        raise ProviderNameTaken(provider.name) from None
    return provider


async def delete_provider(ctx: OrgContext, db: AsyncSession, provider: IdentityProvider) -> None:
    """Delete: the secret dropped for good; the row stays for the identities and events naming it."""
    await bind_org(db, ctx.org_id)
    provider.deleted_at = provider.updated_at = utcnow()
    provider.enabled = False
    seal_secret(await live_org_key(db, ctx.org_id), provider, None)
    db.add(provider)
    await db.flush()


async def list_providers(ctx: OrgContext, db: AsyncSession) -> list[IdentityProvider]:
    """The organization's live providers, by name."""
    await bind_org(db, ctx.org_id)
    statement = (
        select(IdentityProvider)
        .where(IdentityProvider.org_id == ctx.org_id, col(IdentityProvider.deleted_at).is_(None))
        .order_by(col(IdentityProvider.name))
    )
    return list((await db.exec(statement)).all())


async def get_provider(
    ctx: OrgContext, db: AsyncSession, provider_id: uuid.UUID
) -> IdentityProvider | None:
    """A live provider of the organization by id (None: deleted, unknown or another's)."""
    await bind_org(db, ctx.org_id)
    statement = select(IdentityProvider).where(
        IdentityProvider.org_id == ctx.org_id,
        IdentityProvider.id == provider_id,
        col(IdentityProvider.deleted_at).is_(None),
    )
    return (await db.exec(statement)).first()


async def open_client_secret(
    ctx: OrgContext, db: AsyncSession, provider: IdentityProvider
) -> str | None:
    """The OIDC client secret in clear for the one token request about to be made (None: a
    public client, PKCE only)."""
    await bind_org(db, ctx.org_id)
    if provider.secret_sealed is None or provider.secret_key_id is None:
        return None
    key = await org_key_by_id(db, ctx.org_id, provider.secret_key_id)
    sealed = provider.secret_sealed
    try:
        opened = key.open_sealed(sealed, _aad(provider.org_id, provider.id))
    except InvalidTag as error:
        raise ProviderSecretUnavailable(
            f"the client secret of identity provider {provider.name!r} does not open; set it again"
        ) from error
    return opened.decode()
