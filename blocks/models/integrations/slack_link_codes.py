"""Slack link codes: the member's proof behind a Slack link, short, single-use, stored hashed.

A member signed in to Blocks asks for a code (bound to them and their organization); whoever
sends it from Slack within its lifetime links that Slack user to that member. So a link needs
both the member's session and the Slack account, and no one (an admin included) can link a Slack
account of their own to another member.

A code is ten characters from an alphabet without look-alikes (about 49 bits), easy to type in
Slack. It is stored as its SHA-256 only: short-lived, single-use and tried under a rate limit per
Slack user, it is out of reach of guessing, online or (within its minutes) offline.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Column, String, UniqueConstraint, update
from sqlmodel import Field, SQLModel, col
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.infra.crypto.hashing import hash_secret
from blocks.infra.db import bind_org
from blocks.models.base import new_id, org_fk_column, timestamp_column, user_fk_column, utcnow

# No 0/O, 1/I/L or U: what a person reads off a screen and types is what was issued.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"
CODE_LENGTH = 10


class SlackLinkCode(SQLModel, table=True):
    __tablename__ = "slack_link_codes"
    __table_args__ = (UniqueConstraint("org_id", "code_hash", name="slack_link_codes_code_key"),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    user_id: uuid.UUID = Field(sa_column=user_fk_column())
    code_hash: str = Field(sa_column=Column(String(64), nullable=False), repr=False)
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    expires_at: datetime = Field(sa_column=timestamp_column())
    used_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


@dataclass(frozen=True)
class IssuedCode:
    id: uuid.UUID
    code: str  # shown once, to the member; never stored
    expires_at: datetime


def _new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def display_code(code: str) -> str:
    """The code as shown to people: two groups of five."""
    return f"{code[:5]}-{code[5:]}"


def normalized_code(typed: str) -> str | None:
    """A typed code without spaces and dashes, in capitals; None if it cannot be a code."""
    code = "".join(typed.split()).replace("-", "").upper()
    if len(code) != CODE_LENGTH or any(c not in CODE_ALPHABET for c in code):
        return None
    return code


async def issue_link_code(
    ctx: OrgContext, session: AsyncSession, *, lifetime: timedelta
) -> IssuedCode:
    """A new code for the context's member; their earlier unused codes stop working."""
    await bind_org(session, ctx.org_id)
    if ctx.user_id is None:
        raise ValueError("a Slack link code belongs to a member, and this context names none")
    now = utcnow()
    await session.exec(  # type: ignore[call-overload]
        update(SlackLinkCode)
        .where(
            col(SlackLinkCode.org_id) == ctx.org_id,
            col(SlackLinkCode.user_id) == ctx.user_id,
            col(SlackLinkCode.used_at).is_(None),
        )
        .values(used_at=now)
    )
    code = _new_code()
    row = SlackLinkCode(
        org_id=ctx.org_id,
        user_id=ctx.user_id,
        code_hash=hash_secret(code),
        created_at=now,
        expires_at=now + lifetime,
    )
    session.add(row)
    await session.flush()
    return IssuedCode(id=row.id, code=code, expires_at=row.expires_at)


@dataclass(frozen=True)
class RedeemedCode:
    id: uuid.UUID
    user_id: uuid.UUID  # the member who started the link


async def redeem_link_code(
    ctx: OrgContext, session: AsyncSession, typed: str
) -> RedeemedCode | None:
    """Use up a live code of the context's organization: the member it was issued to, or None
    if it is not one (unknown, used, expired, another organization's). One conditional UPDATE,
    so two requests racing with one code cannot both use it."""
    await bind_org(session, ctx.org_id)
    code = normalized_code(typed)
    if code is None:
        return None
    now = utcnow()
    result = await session.exec(  # type: ignore[call-overload]
        update(SlackLinkCode)
        .where(
            col(SlackLinkCode.org_id) == ctx.org_id,
            col(SlackLinkCode.code_hash) == hash_secret(code),
            col(SlackLinkCode.used_at).is_(None),
            col(SlackLinkCode.expires_at) > now,
        )
        .values(used_at=now)
        .returning(col(SlackLinkCode.id), col(SlackLinkCode.user_id))
    )
    row = result.first()
    return RedeemedCode(id=row[0], user_id=row[1]) if row is not None else None
