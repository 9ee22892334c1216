"""API keys: stored as a lookup id and a hash of the secret, scoped to a member and a set of roles."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlmodel import Field, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import Role, parse_roles
from blocks.infra.crypto.hashing import (
    IssuedKey,
    issue_api_key,
    presented_secret_matches,
    split_api_key,
)
from blocks.infra.db import bind_org, mark_bound
from blocks.models.base import (
    new_id,
    org_fk_column,
    text_array_column,
    timestamp_column,
    user_fk_column,
    utcnow,
)

# Writing last_used_at on every request would turn each read into a write; a minute is precise enough.
_LAST_USED_GRANULARITY = timedelta(minutes=1)


class TwoFactorRequired(Exception):
    """A valid key of a member without two-factor sign-in, in an organization that requires it."""

    def __init__(self, ctx: OrgContext) -> None:
        super().__init__("organization requires two-factor sign-in")
        self.ctx = ctx


class SsoRequired(Exception):
    """A valid key of a member the organization's identity provider does not have, in an
    organization that enforces single sign-on."""

    def __init__(self, ctx: OrgContext) -> None:
        super().__init__("organization enforces single sign-on")
        self.ctx = ctx


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column())
    user_id: uuid.UUID = Field(sa_column=user_fk_column())
    name: str = Field(max_length=200)
    lookup: str = Field(unique=True, max_length=32)
    secret_hash: str = Field(max_length=64)
    roles: list[str] = Field(sa_column=text_array_column())
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    expires_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    last_used_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    revoked_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


async def create_api_key(
    ctx: OrgContext,
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    name: str,
    roles: list[Role],
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Returns the row and the plaintext key, which is never stored and cannot be shown again."""
    await bind_org(session, ctx.org_id)
    issued: IssuedKey = issue_api_key()
    key = ApiKey(
        org_id=ctx.org_id,
        user_id=user_id,
        name=name,
        lookup=issued.lookup,
        secret_hash=issued.secret_hash,
        roles=[role.value for role in roles],
        expires_at=expires_at,
    )
    session.add(key)
    await session.flush()
    return key, issued.plaintext


async def revoke_api_key(ctx: OrgContext, session: AsyncSession, key_id: uuid.UUID) -> bool:
    await bind_org(session, ctx.org_id)
    statement = select(ApiKey).where(ApiKey.org_id == ctx.org_id, ApiKey.id == key_id)
    key = (await session.exec(statement)).first()
    if key is None or key.revoked_at is not None:
        return False
    key.revoked_at = utcnow()
    session.add(key)
    await session.flush()
    return True


_RESOLVE = text("SELECT * FROM blocks_resolve_api_key(:lookup)")


async def resolve_api_key(session: AsyncSession, token: str) -> OrgContext | None:
    """The pre-tenant lookup: a valid, live key of an active member becomes an OrgContext.

    One round trip fetches the key, its user and membership and binds the transaction to the
    key's organization (row-level security needs that binding to read the membership). `api_keys`
    has row-level security too (migration 0013): the SQL function is SECURITY DEFINER and may
    read only the row of the lookup id it is given before the organization is bound.
    """
    parts = split_api_key(token)
    row = None
    if parts is not None:
        row = (await session.exec(_RESOLVE.bindparams(lookup=parts[0]))).first()  # type: ignore[call-overload]
    secret = parts[1] if parts else None
    if not presented_secret_matches(secret, row.secret_hash if row else None) or row is None:
        return None
    now = utcnow()
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    if row.deactivated_at is not None or row.member_roles is None:
        return None
    mark_bound(session, row.org_id)
    # A key never grants more than its member holds today.
    roles = tuple(r for r in parse_roles(row.member_roles) if r.value in row.key_roles)
    ctx = OrgContext(
        org_id=OrgId(row.org_id),
        user_id=row.user_id,
        roles=roles,
        auth=AuthMethod.API_KEY,
        actor_email=row.email,
        credential_id=row.key_id,
    )
    if row.require_2fa and not row.has_2fa:
        raise TwoFactorRequired(ctx)
    if row.sso_enforced and not row.idp_has_member:
        raise SsoRequired(ctx)
    if row.last_used_at is None or now - row.last_used_at > _LAST_USED_GRANULARITY:
        # SKIP LOCKED: in a burst of requests with one key, the first writes the time and the
        # others go on, instead of each waiting for the row until that first commits.
        await session.exec(  # type: ignore[call-overload]
            text(
                "UPDATE api_keys SET last_used_at = :now WHERE id = ("
                "SELECT id FROM api_keys WHERE id = :id FOR UPDATE SKIP LOCKED)"
            ).bindparams(now=now, id=row.key_id)
        )
    return ctx
