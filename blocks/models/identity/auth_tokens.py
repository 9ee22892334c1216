"""Single-use, expiring tokens sent by email: sign-up, sign-in links, password resets, email changes."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.infra.crypto.hashing import issue_token, presented_secret_matches, split_token
from blocks.models.base import new_id, timestamp_column, user_fk_column, utcnow


class TokenPurpose(StrEnum):
    SIGNUP = "signup"
    SIGNIN = "signin"
    PASSWORD_RESET = "reset"  # noqa: S105
    EMAIL_CHANGE = "email_change"


# A token of one purpose is refused for another, already by its prefix.
_PREFIXES = {
    TokenPurpose.SIGNUP: "bsu",
    TokenPurpose.SIGNIN: "bsi",
    TokenPurpose.PASSWORD_RESET: "brs",
    TokenPurpose.EMAIL_CHANGE: "bec",
}


class TokenProblem(Exception):
    """The token cannot be used; the message says why, for the person holding it."""


class AuthToken(SQLModel, table=True):
    __tablename__ = "auth_tokens"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    purpose: str = Field(max_length=20)
    email: str = Field(max_length=320)
    user_id: uuid.UUID | None = Field(default=None, sa_column=user_fk_column(nullable=True))
    lookup: str = Field(unique=True, max_length=32)
    secret_hash: str = Field(max_length=64, repr=False)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    expires_at: datetime = Field(sa_column=timestamp_column())
    used_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


async def issue_auth_token(
    db: AsyncSession,
    *,
    purpose: TokenPurpose,
    email: str,
    user_id: uuid.UUID | None,
    lifetime: timedelta,
    data: dict[str, Any] | None = None,
) -> str:
    """A new token; earlier unused tokens of the same purpose for the same email stop working."""
    now = utcnow()
    await db.exec(  # type: ignore[call-overload]
        update(AuthToken)
        .where(
            col(AuthToken.purpose) == purpose.value,
            col(AuthToken.email) == email,
            col(AuthToken.used_at).is_(None),
        )
        .values(used_at=now)
    )
    issued = issue_token(_PREFIXES[purpose])
    db.add(
        AuthToken(
            purpose=purpose.value,
            email=email,
            user_id=user_id,
            lookup=issued.lookup,
            secret_hash=issued.secret_hash,
            data=data or {},
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    await db.flush()
    return issued.plaintext


async def redeem_auth_token(db: AsyncSession, token: str, purpose: TokenPurpose) -> AuthToken:
    """Use a token once: the row, now marked used; TokenProblem says why it cannot be used."""
    parts = split_token(token, _PREFIXES[purpose])
    row = None
    if parts is not None:
        statement = select(AuthToken).where(
            AuthToken.lookup == parts[0], AuthToken.purpose == purpose.value
        )
        row = (await db.exec(statement)).first()
    secret = parts[1] if parts else None
    if not presented_secret_matches(secret, row.secret_hash if row else None) or row is None:
        raise TokenProblem("this link is not valid")
    if row.used_at is not None:
        raise TokenProblem("this link has already been used; ask for a new one")
    if row.expires_at <= utcnow():
        raise TokenProblem("this link has expired; ask for a new one")
    # Single use even against a concurrent request holding the same token.
    result = await db.exec(  # type: ignore[call-overload]
        update(AuthToken)
        .where(col(AuthToken.id) == row.id, col(AuthToken.used_at).is_(None))
        .values(used_at=utcnow())
    )
    if not result.rowcount:
        raise TokenProblem("this link has already been used; ask for a new one")
    return row
