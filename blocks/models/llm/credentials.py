"""LLM credentials: where an organization's model server is, which models it may ask for, and its
API key sealed under the organization's data key.

The key is write-only: it is sealed here as it arrives (AES-256-GCM under the organization's live
data key, associated data binding organization, credential and purpose) and opened only by
`open_api_key`, which the LLM activity calls just before the model call. Nothing else returns it;
the row keeps its last four characters to tell keys apart.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from cryptography.exceptions import InvalidTag
from sqlalchemy import Column, Index, LargeBinary, String, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.infra.crypto.org_keys import OrgDataKey
from blocks.infra.db import bind_org
from blocks.models.base import new_id, org_fk_column, timestamp_column, utcnow
from blocks.models.keys.org_keys import live_org_key, org_key_by_id

# Shorter keys (a local server's placeholder such as "ollama") would be half shown by four.
_SHOW_LAST4_FROM = 12
OPENAI_BASE_URL = "https://api.openai.com/v1"


class LlmCredential(SQLModel, table=True):
    __tablename__ = "llm_credentials"
    __table_args__ = (
        Index(
            "ux_llm_credentials_live_name",
            "org_id",
            "name",
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index("ix_llm_credentials_org", "org_id"),
    )

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    name: str = Field(max_length=100)
    provider: str = Field(max_length=40)
    base_url: str = Field(max_length=2048)
    api: str = Field(default="chat", max_length=16)
    allowed_models: list[str] = Field(sa_column=Column(ARRAY(String), nullable=False))
    key_last4: str | None = Field(default=None, max_length=4)
    key_key_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    key_sealed: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    created_by: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    rotated_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    deleted_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))

    def __repr__(self) -> str:
        # Never the sealed key, even in a traceback's locals.
        return f"LlmCredential(id={self.id}, name={self.name!r}, base_url={self.base_url!r})"


class CredentialNameTaken(ValueError):
    """Another live credential of the organization has this name."""


class CredentialKeyUnavailable(LookupError):
    """The sealed key does not open: its data key was destroyed, or the row was tampered with."""


def last_four(api_key: str) -> str | None:
    return api_key[-4:] if len(api_key) >= _SHOW_LAST4_FROM else None


def _aad(org_id: uuid.UUID, credential_id: uuid.UUID) -> bytes:
    return f"blocks.llm-credential.v1|{org_id}|{credential_id}|api_key".encode()


def _seal(key: OrgDataKey, credential: LlmCredential, api_key: str) -> None:
    credential.key_key_id = key.key_id
    credential.key_sealed = key.seal(api_key.encode(), _aad(credential.org_id, credential.id))
    credential.key_last4 = last_four(api_key)


async def create_credential(
    ctx: OrgContext,
    session: AsyncSession,
    *,
    name: str,
    provider: str,
    base_url: str,
    api: str,
    allowed_models: list[str],
    api_key: str,
) -> LlmCredential:
    """A new credential with its key sealed; CredentialNameTaken if the name is in use."""
    await bind_org(session, ctx.org_id)
    if await credential_by_name(ctx, session, name) is not None:
        raise CredentialNameTaken(name)
    credential = LlmCredential(
        org_id=ctx.org_id,
        name=name,
        provider=provider,
        base_url=base_url,
        api=api,
        allowed_models=allowed_models,
        created_by=ctx.user_id,
    )
    _seal(await live_org_key(session, ctx.org_id), credential, api_key)
    try:
        async with session.begin_nested():
            session.add(credential)
            await session.flush()
    except IntegrityError:  # a concurrent create took the name first
        raise CredentialNameTaken(name) from None
    return credential


async def list_credentials(ctx: OrgContext, session: AsyncSession) -> list[LlmCredential]:
    """The organization's live credentials, by name."""
    await bind_org(session, ctx.org_id)
    statement = (
        select(LlmCredential)
        .where(LlmCredential.org_id == ctx.org_id, col(LlmCredential.deleted_at).is_(None))
        .order_by(col(LlmCredential.name))
    )
    return list((await session.exec(statement)).all())


async def get_credential(
    ctx: OrgContext, session: AsyncSession, credential_id: uuid.UUID
) -> LlmCredential | None:
    """A live credential of the organization by id (None: deleted, unknown or another's)."""
    await bind_org(session, ctx.org_id)
    statement = select(LlmCredential).where(
        LlmCredential.org_id == ctx.org_id,
        LlmCredential.id == credential_id,
        col(LlmCredential.deleted_at).is_(None),
    )
    return (await session.exec(statement)).first()


async def credential_by_name(
    ctx: OrgContext, session: AsyncSession, name: str
) -> LlmCredential | None:
    await bind_org(session, ctx.org_id)
    statement = select(LlmCredential).where(
        LlmCredential.org_id == ctx.org_id,
        LlmCredential.name == name,
        col(LlmCredential.deleted_at).is_(None),
    )
    return (await session.exec(statement)).first()


async def rotate_key(
    ctx: OrgContext, session: AsyncSession, credential: LlmCredential, api_key: str
) -> LlmCredential:
    """Replace the credential's key (sealed under the live data key, which may be newer)."""
    await bind_org(session, ctx.org_id)
    _seal(await live_org_key(session, ctx.org_id), credential, api_key)
    credential.rotated_at = credential.updated_at = utcnow()
    session.add(credential)
    await session.flush()
    return credential


async def update_credential(
    ctx: OrgContext,
    session: AsyncSession,
    credential: LlmCredential,
    *,
    base_url: str | None = None,
    api: str | None = None,
    allowed_models: list[str] | None = None,
) -> LlmCredential:
    await bind_org(session, ctx.org_id)
    if base_url is not None:
        credential.base_url = base_url
    if api is not None:
        credential.api = api
    if allowed_models is not None:
        credential.allowed_models = allowed_models
    credential.updated_at = utcnow()
    session.add(credential)
    await session.flush()
    return credential


async def delete_credential(
    ctx: OrgContext, session: AsyncSession, credential: LlmCredential
) -> LlmCredential:
    """Delete: the sealed key is dropped for good; the row stays for the usage that names it."""
    await bind_org(session, ctx.org_id)
    credential.deleted_at = credential.updated_at = utcnow()
    credential.key_sealed = None
    credential.key_key_id = None
    session.add(credential)
    await session.flush()
    return credential


async def open_api_key(ctx: OrgContext, session: AsyncSession, credential: LlmCredential) -> str:
    """The credential's API key in clear, for the one model call about to be made."""
    await bind_org(session, ctx.org_id)
    if credential.key_sealed is None or credential.key_key_id is None:
        raise CredentialKeyUnavailable(f"LLM credential {credential.name!r} has no key")
    key = await org_key_by_id(session, ctx.org_id, credential.key_key_id)
    sealed = credential.key_sealed
    try:
        opened = key.open_sealed(sealed, _aad(credential.org_id, credential.id))
    except InvalidTag as error:  # altered, or copied from another row
        raise CredentialKeyUnavailable(
            f"the key of LLM credential {credential.name!r} does not open (it was altered or "
            "moved); rotate it"
        ) from error
    return opened.decode()
