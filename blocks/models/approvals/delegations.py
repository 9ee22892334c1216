"""Delegations and the data access over them: who may decide for whom, and when."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.approvals.eligibility import Delegator
from blocks.core.approvals.policy import policy_memberships
from blocks.core.context import OrgContext
from blocks.core.roles import parse_roles
from blocks.infra.db import bind_org
from blocks.models.approvals.groups import group_names_by_user
from blocks.models.base import new_id, org_fk_column, timestamp_column, user_fk_column, utcnow
from blocks.models.identity.orgs import Membership


class Delegation(SQLModel, table=True):
    __tablename__ = "delegations"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    delegator_id: uuid.UUID = Field(sa_column=user_fk_column())
    delegate_id: uuid.UUID = Field(sa_column=user_fk_column())
    starts_at: datetime = Field(sa_column=timestamp_column())
    ends_at: datetime = Field(sa_column=timestamp_column())
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    revoked_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


async def create_delegation(
    ctx: OrgContext,
    session: AsyncSession,
    *,
    delegate_id: uuid.UUID,
    starts_at: datetime,
    ends_at: datetime,
) -> Delegation:
    """The caller delegates their own approvals; the delegate must be a member of the org."""
    await bind_org(session, ctx.org_id)
    if ctx.user_id is None:
        raise PermissionError("only a member can delegate")
    delegation = Delegation(
        org_id=ctx.org_id,
        delegator_id=ctx.user_id,
        delegate_id=delegate_id,
        starts_at=starts_at,
        ends_at=ends_at,
    )
    session.add(delegation)
    await session.flush()
    return delegation


async def is_member(ctx: OrgContext, session: AsyncSession, user_id: uuid.UUID) -> bool:
    await bind_org(session, ctx.org_id)
    statement = select(Membership.id).where(
        Membership.org_id == ctx.org_id, Membership.user_id == user_id
    )
    return (await session.exec(statement)).first() is not None


async def my_delegations(ctx: OrgContext, session: AsyncSession) -> list[Delegation]:
    """Delegations the caller gave or received, newest first."""
    await bind_org(session, ctx.org_id)
    statement = (
        select(Delegation)
        .where(
            Delegation.org_id == ctx.org_id,
            (Delegation.delegator_id == ctx.user_id) | (Delegation.delegate_id == ctx.user_id),
        )
        .order_by(col(Delegation.created_at).desc())
    )
    return list((await session.exec(statement)).all())


async def revoke_delegation(
    ctx: OrgContext, session: AsyncSession, delegation_id: uuid.UUID
) -> Delegation | None:
    """Only the delegator revokes; another member's delegation reads as not found."""
    await bind_org(session, ctx.org_id)
    statement = select(Delegation).where(
        Delegation.org_id == ctx.org_id,
        Delegation.id == delegation_id,
        Delegation.delegator_id == ctx.user_id,
    )
    delegation = (await session.exec(statement)).first()
    if delegation is None:
        return None
    if delegation.revoked_at is None:
        delegation.revoked_at = utcnow()
        session.add(delegation)
        await session.flush()
    return delegation


async def active_delegators(
    ctx: OrgContext, session: AsyncSession, *, at: datetime | None = None
) -> list[Delegator]:
    """Whom the caller may decide for right now, with those members' current roles."""
    await bind_org(session, ctx.org_id)
    now = at or utcnow()
    statement = (
        select(Delegation.delegator_id, Membership.roles)
        .join(
            Membership,
            (Membership.org_id == Delegation.org_id)
            & (Membership.user_id == Delegation.delegator_id),
        )
        .where(
            Delegation.org_id == ctx.org_id,
            # A deactivated member's delegation lapses with their access.
            col(Membership.deactivated_at).is_(None),
            Delegation.delegate_id == ctx.user_id,
            col(Delegation.revoked_at).is_(None),
            Delegation.starts_at <= now,
            Delegation.ends_at > now,
        )
        .order_by(col(Delegation.created_at))
    )
    rows = (await session.exec(statement)).all()
    groups = await group_names_by_user(ctx, session, [user_id for user_id, _ in rows])
    return [
        Delegator(
            user_id=str(user_id),
            roles=policy_memberships(
                (r.value for r in parse_roles(roles)), groups.get(user_id, [])
            ),
        )
        for user_id, roles in rows
    ]
