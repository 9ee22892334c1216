"""Email domains an organization owns: claimed by an admin, proved by a DNS TXT record (or attested
by the operator). Only a verified domain lets a sign-in from an identity provider link to an
account that already exists; one organization at a time may hold a domain verified."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime

from sqlalchemy import Column, text
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.infra.db import bind_org
from blocks.models.base import new_id, org_fk_column, timestamp_column, utcnow

# The TXT record's value starts with this; the rest is the claim's random token.
TXT_PREFIX = "blocks-domain-verification="


class OrgDomain(SQLModel, table=True):
    __tablename__ = "org_domains"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    domain: str = Field(max_length=253)
    verification_token: str = Field(max_length=64)
    created_by: uuid.UUID | None = Field(default=None, sa_column=Column(PgUUID(as_uuid=True)))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    verified_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    verified_by: str | None = Field(default=None, max_length=16)

    @property
    def txt_record(self) -> str:
        return f"{TXT_PREFIX}{self.verification_token}"


class DomainTaken(ValueError):
    """The organization already claims the domain."""


class DomainVerifiedElsewhere(ValueError):
    """Another organization holds the domain verified."""


async def claim_domain(ctx: OrgContext, db: AsyncSession, domain: str) -> OrgDomain:
    await bind_org(db, ctx.org_id)
    row = OrgDomain(
        org_id=ctx.org_id,
        domain=domain,
        verification_token=secrets.token_urlsafe(24),
        created_by=ctx.user_id,
    )
    try:
        async with db.begin_nested():
            db.add(row)
            await db.flush()
    except IntegrityError:
        raise DomainTaken(domain) from None
    return row


async def list_domains(ctx: OrgContext, db: AsyncSession) -> list[OrgDomain]:
    await bind_org(db, ctx.org_id)
    statement = (
        select(OrgDomain).where(OrgDomain.org_id == ctx.org_id).order_by(col(OrgDomain.domain))
    )
    return list((await db.exec(statement)).all())


async def get_domain(ctx: OrgContext, db: AsyncSession, domain: str) -> OrgDomain | None:
    await bind_org(db, ctx.org_id)
    statement = select(OrgDomain).where(OrgDomain.org_id == ctx.org_id, OrgDomain.domain == domain)
    return (await db.exec(statement)).first()


async def _verified_elsewhere(db: AsyncSession, org_id: uuid.UUID, domain: str) -> bool:
    # Row-level security hides other organizations' rows, so ask the one narrow question
    # through a function that may see them all (migration 0021).
    result = await db.exec(  # type: ignore[call-overload]
        text("SELECT blocks_domain_verified_elsewhere(:org, :domain)").bindparams(
            org=org_id, domain=domain
        )
    )
    return bool(result.scalar())


async def mark_verified(ctx: OrgContext, db: AsyncSession, row: OrgDomain, *, by: str) -> None:
    """Verified (by 'dns' or 'operator'); DomainVerifiedElsewhere if another org holds it."""
    await bind_org(db, ctx.org_id)
    if await _verified_elsewhere(db, ctx.org_id, row.domain):
        raise DomainVerifiedElsewhere(row.domain)
    row.verified_at = utcnow()
    row.verified_by = by
    try:
        async with db.begin_nested():
            db.add(row)
            await db.flush()
    except IntegrityError:  # another organization verified it a moment ago
        raise DomainVerifiedElsewhere(row.domain) from None


async def remove_domain(ctx: OrgContext, db: AsyncSession, row: OrgDomain) -> None:
    await bind_org(db, ctx.org_id)
    await db.delete(row)
    await db.flush()


async def verified_domains(ctx: OrgContext, db: AsyncSession) -> set[str]:
    await bind_org(db, ctx.org_id)
    statement = select(OrgDomain.domain).where(
        OrgDomain.org_id == ctx.org_id, col(OrgDomain.verified_at).is_not(None)
    )
    return set((await db.exec(statement)).all())
