"""Server-side sign-in sessions: a hashed token, idle and absolute expiry, an optional organization."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import Column, update
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.infra.crypto.hashing import issue_token, presented_secret_matches, split_token
from blocks.models.base import new_id, timestamp_column, user_fk_column, utcnow

SESSION_PREFIX = "bls"
# Writing last_seen_at on every request would turn each read into a write; idle expiry is
# measured in tens of minutes, so a minute of slack is harmless.
_LAST_SEEN_GRANULARITY = timedelta(minutes=1)


class UserSession(SQLModel, table=True):
    __tablename__ = "user_sessions"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    user_id: uuid.UUID = Field(sa_column=user_fk_column())
    lookup: str = Field(unique=True, max_length=32)
    secret_hash: str = Field(max_length=64, repr=False)
    # The organization this session acts in; None until the person picks one.
    org_id: uuid.UUID | None = Field(default=None, foreign_key="organizations.id")
    # Password (or link) accepted, second factor still owed: the session grants nothing else.
    mfa_pending: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    last_seen_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    expires_at: datetime = Field(sa_column=timestamp_column())
    # When the person last proved who they are (sign-in, or re-entering the password).
    authenticated_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    revoked_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    revoke_reason: str | None = Field(default=None, max_length=100)
    # Signed in through this organization's identity provider (None: password or emailed link):
    # what lets the session into an organization that enforces single sign-on.
    sso_provider_id: uuid.UUID | None = Field(default=None, sa_column=Column(PgUUID(as_uuid=True)))
    sso_org_id: uuid.UUID | None = Field(default=None, sa_column=Column(PgUUID(as_uuid=True)))
    # The provider asserted multi-factor authentication (it then stands for Blocks' own 2FA).
    sso_mfa: bool = False
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=500)


async def start_session(
    db: AsyncSession,
    *,
    user_id: uuid.UUID,
    mfa_pending: bool,
    lifetime: timedelta,
    ip: str | None,
    user_agent: str | None,
) -> tuple[UserSession, str]:
    """A new session with a new token (never one carried over from before sign-in)."""
    issued = issue_token(SESSION_PREFIX)
    now = utcnow()
    row = UserSession(
        user_id=user_id,
        lookup=issued.lookup,
        secret_hash=issued.secret_hash,
        mfa_pending=mfa_pending,
        created_at=now,
        last_seen_at=now,
        authenticated_at=now,
        expires_at=now + lifetime,
        ip=ip,
        user_agent=user_agent,
    )
    db.add(row)
    await db.flush()
    return row, issued.plaintext


async def rotate_token(db: AsyncSession, row: UserSession) -> str:
    """Give the session a new token (after a privilege change); the old one stops working."""
    issued = issue_token(SESSION_PREFIX)
    row.lookup = issued.lookup
    row.secret_hash = issued.secret_hash
    db.add(row)
    await db.flush()
    return issued.plaintext


async def find_live_session(db: AsyncSession, token: str, *, idle: timedelta) -> UserSession | None:
    """The live session a cookie names, or None (unknown, revoked, idle or past its lifetime)."""
    parts = split_token(token, SESSION_PREFIX)
    row = None
    if parts is not None:
        statement = select(UserSession).where(UserSession.lookup == parts[0])
        row = (await db.exec(statement)).first()
    secret = parts[1] if parts else None
    if not presented_secret_matches(secret, row.secret_hash if row else None) or row is None:
        return None
    now = utcnow()
    if row.revoked_at is not None or row.expires_at <= now or row.last_seen_at + idle <= now:
        return None
    if now - row.last_seen_at > _LAST_SEEN_GRANULARITY:
        row.last_seen_at = now
        db.add(row)
        await db.flush()
    return row


async def revoke_sessions(
    db: AsyncSession,
    *,
    user_id: uuid.UUID,
    reason: str,
    org_id: uuid.UUID | None = None,
    session_id: uuid.UUID | None = None,
    keep: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """Revoke a person's live sessions (or one, or those in one organization); the ids revoked."""
    statement = (
        update(UserSession)
        .where(col(UserSession.user_id) == user_id, col(UserSession.revoked_at).is_(None))
        .values(revoked_at=utcnow(), revoke_reason=reason)
        .returning(col(UserSession.id))
    )
    if org_id is not None:
        statement = statement.where(col(UserSession.org_id) == org_id)
    if session_id is not None:
        statement = statement.where(col(UserSession.id) == session_id)
    if keep is not None:
        statement = statement.where(col(UserSession.id) != keep)
    result = await db.exec(statement)  # type: ignore[call-overload]
    return [row[0] for row in result.all()]


async def live_sessions(db: AsyncSession, user_id: uuid.UUID) -> list[UserSession]:
    now = utcnow()
    statement = (
        select(UserSession)
        .where(
            UserSession.user_id == user_id,
            col(UserSession.revoked_at).is_(None),
            UserSession.expires_at > now,
        )
        .order_by(col(UserSession.created_at).desc())
    )
    return list((await db.exec(statement)).all())
