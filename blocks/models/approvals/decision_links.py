"""Decision links: a single-use, expiring secret that lets one approver decide one step."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text, update
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.infra.crypto.hashing import issue_token, presented_secret_matches, split_token
from blocks.infra.db import bind_org
from blocks.models.base import new_id, org_fk_column, timestamp_column, user_fk_column, utcnow
from blocks.models.identity.orgs import Organization

LINK_PREFIX = "dl"
# The SECURITY DEFINER lookup of the one link a token names, before its organization is known
# (`decision_links` has row-level security, migration 0013).
_FIND = text("SELECT * FROM blocks_find_decision_link(:lookup)")


class DecisionLink(SQLModel, table=True):
    __tablename__ = "decision_links"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    run_id: uuid.UUID
    step_id: str = Field(max_length=200)
    user_id: uuid.UUID = Field(sa_column=user_fk_column())
    lookup: str = Field(unique=True, max_length=32)
    secret_hash: str = Field(max_length=64)
    notice_id: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    expires_at: datetime = Field(sa_column=timestamp_column())
    used_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


async def issue_link(
    ctx: OrgContext,
    session: AsyncSession,
    *,
    run_id: uuid.UUID,
    step_id: str,
    user_id: uuid.UUID,
    notice_id: str,
    ttl: timedelta,
) -> str | None:
    """A new link's secret (shown once, in the email), or None if this notice already issued
    one to this person (a retried delivery sends nothing twice)."""
    await bind_org(session, ctx.org_id)
    existing = await session.exec(
        select(DecisionLink.id).where(
            DecisionLink.notice_id == notice_id, DecisionLink.user_id == user_id
        )
    )
    if existing.first() is not None:
        return None
    issued = issue_token(LINK_PREFIX)
    session.add(
        DecisionLink(
            org_id=ctx.org_id,
            run_id=run_id,
            step_id=step_id,
            user_id=user_id,
            lookup=issued.lookup,
            secret_hash=issued.secret_hash,
            notice_id=notice_id,
            expires_at=utcnow() + ttl,
        )
    )
    await session.flush()
    return issued.plaintext


class LinkProblem(Exception):
    """Why a link cannot be used: unknown, expired or used (each a clear message to the user)."""


@dataclass(frozen=True)
class OpenLink:
    link: DecisionLink
    link_only_allowed: bool


async def open_link(session: AsyncSession, token: str) -> OpenLink:
    """The pre-tenant lookup: a live link binds the session to its organization."""
    parts = split_token(token, LINK_PREFIX)
    row = None
    if parts is not None:
        statement = select(DecisionLink).from_statement(_FIND.bindparams(lookup=parts[0]))
        row = (await session.exec(statement)).scalars().first()  # type: ignore[call-overload]
    secret = parts[1] if parts else None
    if not presented_secret_matches(secret, row.secret_hash if row else None) or row is None:
        raise LinkProblem("this decision link is not valid")
    if row.used_at is not None:
        raise LinkProblem("this decision link has already been used")
    if row.expires_at <= utcnow():
        raise LinkProblem("this decision link has expired")
    await bind_org(session, row.org_id)
    org = await session.get(Organization, row.org_id)
    return OpenLink(link=row, link_only_allowed=bool(org and org.link_only_decisions))


async def use_link(ctx: OrgContext, session: AsyncSession, link: DecisionLink) -> bool:
    """Mark the link used; False if a concurrent request used it first (single use holds)."""
    await bind_org(session, ctx.org_id)
    result = await session.exec(
        update(DecisionLink)
        .where(
            col(DecisionLink.id) == link.id,
            col(DecisionLink.org_id) == ctx.org_id,
            col(DecisionLink.used_at).is_(None),
        )
        .values(used_at=utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
