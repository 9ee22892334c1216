"""Sign-ins in flight at an identity provider, consumed once, and SAML assertion ids already used.

A request is found by `lookup`, the SHA-256 of the OIDC `state` or the SAML request id (a copy
of the table shows no live one), and is bound to the browser that started it: the browser keeps a
random value in a cookie, the row its hash. Consuming is one UPDATE that only an unconsumed,
unexpired row passes, so a callback replayed (or raced) finds nothing the second time.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta

from sqlalchemy import Column, delete, update
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import Field, SQLModel, col
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.infra.db import bind_org
from blocks.models.base import new_id, org_fk_column, timestamp_column, utcnow


class SsoRequest(SQLModel, table=True):
    __tablename__ = "sso_requests"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    provider_id: uuid.UUID = Field(sa_column=Column(PgUUID(as_uuid=True), nullable=False))
    lookup: str = Field(unique=True, max_length=64)
    nonce: str | None = Field(default=None, max_length=64)
    binding_hash: str = Field(max_length=64)
    next_path: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    expires_at: datetime = Field(sa_column=timestamp_column())
    consumed_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


class SamlSeenAssertion(SQLModel, table=True):
    __tablename__ = "saml_seen_assertions"

    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    provider_id: uuid.UUID = Field(
        sa_column=Column(PgUUID(as_uuid=True), nullable=False, primary_key=True)
    )
    assertion_id: str = Field(primary_key=True, max_length=255)
    expires_at: datetime = Field(sa_column=timestamp_column())


def request_lookup(handle: str) -> str:
    """What the table keeps of a state or request id: its SHA-256, hex."""
    return hashlib.sha256(handle.encode()).hexdigest()


async def start_request(
    ctx: OrgContext,
    db: AsyncSession,
    *,
    provider_id: uuid.UUID,
    handle: str,
    binding_hash: str,
    nonce: str | None,
    next_path: str | None,
    lifetime: timedelta,
) -> SsoRequest:
    """Record a sign-in sent to the provider; `handle` is the state or the SAML request id."""
    await bind_org(db, ctx.org_id)
    now = utcnow()
    row = SsoRequest(
        org_id=ctx.org_id,
        provider_id=provider_id,
        lookup=request_lookup(handle),
        nonce=nonce,
        binding_hash=binding_hash,
        next_path=next_path,
        created_at=now,
        expires_at=now + lifetime,
    )
    db.add(row)
    await db.flush()
    # Expired rows are worthless; each start clears its organization's (an index on expiry).
    await db.exec(  # type: ignore[call-overload]
        delete(SsoRequest).where(
            col(SsoRequest.org_id) == ctx.org_id,
            col(SsoRequest.expires_at) < now - timedelta(days=1),
        )
    )
    return row


async def consume_request(
    ctx: OrgContext, db: AsyncSession, *, provider_id: uuid.UUID, handle: str
) -> SsoRequest | None:
    """The request `handle` names, marked consumed; None if unknown, used, expired or another
    provider's. The caller still compares the browser binding."""
    await bind_org(db, ctx.org_id)
    now = utcnow()
    statement = (
        update(SsoRequest)
        .where(
            col(SsoRequest.org_id) == ctx.org_id,
            col(SsoRequest.provider_id) == provider_id,
            col(SsoRequest.lookup) == request_lookup(handle),
            col(SsoRequest.consumed_at).is_(None),
            col(SsoRequest.expires_at) > now,
        )
        .values(consumed_at=now)
        .returning(SsoRequest)
    )
    result = await db.exec(statement)  # type: ignore[call-overload]
    row = result.first()
    return SsoRequest.model_validate(row[0]) if row is not None else None


async def remember_assertion(
    ctx: OrgContext,
    db: AsyncSession,
    *,
    provider_id: uuid.UUID,
    assertion_id: str,
    expires_at: datetime,
) -> bool:
    """Remember an accepted assertion id until it expires; False if it was already used."""
    await bind_org(db, ctx.org_id)
    now = utcnow()
    await db.exec(  # type: ignore[call-overload]
        delete(SamlSeenAssertion).where(
            col(SamlSeenAssertion.org_id) == ctx.org_id,
            col(SamlSeenAssertion.provider_id) == provider_id,
            col(SamlSeenAssertion.expires_at) < now,
        )
    )
    statement = (
        insert(SamlSeenAssertion)
        .values(
            org_id=ctx.org_id,
            provider_id=provider_id,
            assertion_id=assertion_id,
            expires_at=max(expires_at, now + timedelta(minutes=5)),
        )
        .on_conflict_do_nothing()
        .returning(col(SamlSeenAssertion.assertion_id))
    )
    result = await db.exec(statement)  # type: ignore[call-overload]
    return result.first() is not None
