"""SCIM provisioning's tables (migration 0021) and its token: one live per organization, stored as
a lookup id and a hash of the secret, resolved before the organization is known."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.crypto.hashing import issue_token, presented_secret_matches, split_token
from blocks.infra.db import bind_org, mark_bound
from blocks.models.base import new_id, org_fk_column, timestamp_column, user_fk_column, utcnow

# `blkscim_<lookup>_<secret>`: told apart from an API key (`blk_...`) at a glance.
TOKEN_PREFIX = "blkscim"  # noqa: S105 (a prefix, not a secret)
# As for API keys: a write per minute at most, not one per request.
_LAST_USED_GRANULARITY = timedelta(minutes=1)


class ScimToken(SQLModel, table=True):
    __tablename__ = "scim_tokens"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    lookup: str = Field(unique=True, max_length=32)
    secret_hash: str
    created_by: uuid.UUID | None = Field(default=None, sa_column=user_fk_column(nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    revoked_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    last_used_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


class ScimUser(SQLModel, table=True):
    """A SCIM User: a person of the organization as its identity provider describes them."""

    __tablename__ = "scim_users"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    user_id: uuid.UUID = Field(sa_column=user_fk_column())
    user_name: str = Field(max_length=320)
    external_id: str | None = Field(default=None, max_length=255)
    active: bool = True
    # The resource's other attributes (name, emails, enterprise extension...), as SCIM JSON.
    attributes: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONB, nullable=False)
    )
    version: int = 1
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class ScimGroup(SQLModel, table=True):
    __tablename__ = "scim_groups"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    display_name: str = Field(max_length=255)
    external_id: str | None = Field(default=None, max_length=255)
    version: int = 1
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class ScimGroupMember(SQLModel, table=True):
    __tablename__ = "scim_group_members"

    group_id: uuid.UUID = Field(
        sa_column=Column(PgUUID(as_uuid=True), primary_key=True, nullable=False)
    )
    scim_user_id: uuid.UUID = Field(
        sa_column=Column(PgUUID(as_uuid=True), primary_key=True, nullable=False)
    )
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))


class TokenRace(Exception):
    """Two tokens were issued for one organization at once; this one lost."""


@dataclass(frozen=True)
class IssuedScimToken:
    token: ScimToken
    plaintext: str  # shown once, never stored


async def live_token(ctx: OrgContext, db: AsyncSession) -> ScimToken | None:
    await bind_org(db, ctx.org_id)
    statement = select(ScimToken).where(
        ScimToken.org_id == ctx.org_id, col(ScimToken.revoked_at).is_(None)
    )
    return (await db.exec(statement)).first()


async def revoke_token(ctx: OrgContext, db: AsyncSession) -> ScimToken | None:
    """Revoke the organization's live token; the one revoked, if there was one."""
    current = await live_token(ctx, db)
    if current is None:
        return None
    current.revoked_at = utcnow()
    db.add(current)
    await db.flush()
    return current


async def issue_scim_token(ctx: OrgContext, db: AsyncSession) -> IssuedScimToken:
    """A new token for the organization; the live one, if any, is revoked in the same transaction
    (the unique index on live tokens lets two issues at once not both succeed)."""
    await revoke_token(ctx, db)
    issued = issue_token(TOKEN_PREFIX)
    row = ScimToken(
        org_id=ctx.org_id,
        lookup=issued.lookup,
        secret_hash=issued.secret_hash,
        created_by=ctx.user_id,
    )
    try:
        async with db.begin_nested():
            db.add(row)
            await db.flush()
    except IntegrityError:  # another issue for this organization committed a moment ago
        raise TokenRace(str(ctx.org_id)) from None
    return IssuedScimToken(row, issued.plaintext)


_RESOLVE = text("SELECT * FROM blocks_resolve_scim_token(:lookup)")


async def resolve_scim_token(db: AsyncSession, token: str) -> OrgContext | None:
    """The pre-tenant lookup: a live token of an open organization becomes its SCIM context (no
    person, no role), the transaction bound to that organization. None for anything else, after
    one constant-time comparison whatever was wrong."""
    parts = split_token(token, TOKEN_PREFIX)
    row = None
    if parts is not None:
        row = (await db.exec(_RESOLVE.bindparams(lookup=parts[0]))).first()  # type: ignore[call-overload]
    secret = parts[1] if parts else None
    if not presented_secret_matches(secret, row.secret_hash if row else None) or row is None:
        return None
    if row.revoked_at is not None or row.closed_at is not None:
        return None
    mark_bound(db, row.org_id)
    now = utcnow()
    # SKIP LOCKED: of a burst of requests (identity providers send them in parallel), the first
    # writes the time and the others go on rather than wait for its commit.
    await db.exec(  # type: ignore[call-overload]
        text(
            "UPDATE scim_tokens SET last_used_at = :now WHERE id = ("
            "SELECT id FROM scim_tokens WHERE id = :id"
            " AND (last_used_at IS NULL OR last_used_at < :stale) FOR UPDATE SKIP LOCKED)"
        ).bindparams(now=now, id=row.token_id, stale=now - _LAST_USED_GRANULARITY)
    )
    return OrgContext(
        org_id=OrgId(row.org_id),
        user_id=None,
        roles=(),
        auth=AuthMethod.SCIM,
        credential_id=row.token_id,
    )
