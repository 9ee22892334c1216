"""Member groups: named sets of an organization's members that approval policies can name."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Column, ForeignKey, delete
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.infra.db import bind_org
from blocks.models.base import new_id, org_fk_column, timestamp_column, utcnow


class MemberGroup(SQLModel, table=True):
    __tablename__ = "member_groups"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    name: str = Field(max_length=63)
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class MemberGroupMember(SQLModel, table=True):
    __tablename__ = "member_group_members"

    group_id: uuid.UUID = Field(primary_key=True, foreign_key="member_groups.id")
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    user_id: uuid.UUID = Field(
        sa_column=Column(
            PgUUID(as_uuid=True),
            ForeignKey("users.id", ondelete="RESTRICT"),
            primary_key=True,
        )
    )
    added_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


async def create_group(ctx: OrgContext, session: AsyncSession, name: str) -> MemberGroup | None:
    """None when the organization already has a group of that name."""
    await bind_org(session, ctx.org_id)
    taken = await session.exec(
        select(MemberGroup.id).where(MemberGroup.org_id == ctx.org_id, MemberGroup.name == name)
    )
    if taken.first() is not None:
        return None
    group = MemberGroup(org_id=ctx.org_id, name=name)
    session.add(group)
    await session.flush()
    return group


async def get_group(
    ctx: OrgContext, session: AsyncSession, group_id: uuid.UUID
) -> MemberGroup | None:
    await bind_org(session, ctx.org_id)
    statement = select(MemberGroup).where(
        MemberGroup.org_id == ctx.org_id, MemberGroup.id == group_id
    )
    return (await session.exec(statement)).first()


async def list_groups(
    ctx: OrgContext, session: AsyncSession
) -> list[tuple[MemberGroup, list[uuid.UUID]]]:
    await bind_org(session, ctx.org_id)
    groups = (
        await session.exec(
            select(MemberGroup)
            .where(MemberGroup.org_id == ctx.org_id)
            .order_by(col(MemberGroup.name))
        )
    ).all()
    members = (
        await session.exec(
            select(MemberGroupMember.group_id, MemberGroupMember.user_id).where(
                MemberGroupMember.org_id == ctx.org_id
            )
        )
    ).all()
    by_group: dict[uuid.UUID, list[uuid.UUID]] = {}
    for group_id, user_id in members:
        by_group.setdefault(group_id, []).append(user_id)
    return [(g, sorted(by_group.get(g.id, []), key=str)) for g in groups]


async def add_to_group(
    ctx: OrgContext, session: AsyncSession, group: MemberGroup, user_id: uuid.UUID
) -> bool:
    """False if the person was already in the group."""
    await bind_org(session, ctx.org_id)
    present = await session.exec(
        select(MemberGroupMember.user_id).where(
            MemberGroupMember.group_id == group.id, MemberGroupMember.user_id == user_id
        )
    )
    if present.first() is not None:
        return False
    session.add(MemberGroupMember(group_id=group.id, org_id=ctx.org_id, user_id=user_id))
    await session.flush()
    return True


async def remove_from_group(
    ctx: OrgContext, session: AsyncSession, group: MemberGroup, user_id: uuid.UUID
) -> bool:
    await bind_org(session, ctx.org_id)
    result = await session.exec(
        delete(MemberGroupMember).where(
            col(MemberGroupMember.org_id) == ctx.org_id,
            col(MemberGroupMember.group_id) == group.id,
            col(MemberGroupMember.user_id) == user_id,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def group_names_of(ctx: OrgContext, session: AsyncSession, user_id: uuid.UUID) -> list[str]:
    """The names of the groups a member belongs to (approval policies name groups by name)."""
    return (await group_names_by_user(ctx, session, [user_id])).get(user_id, [])


async def group_names_by_user(
    ctx: OrgContext, session: AsyncSession, user_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[str]]:
    """The group names of several members, in one query."""
    if not user_ids:
        return {}
    await bind_org(session, ctx.org_id)
    statement = (
        select(MemberGroupMember.user_id, MemberGroup.name)
        .join(MemberGroup, col(MemberGroupMember.group_id) == col(MemberGroup.id))
        .where(MemberGroupMember.org_id == ctx.org_id, col(MemberGroupMember.user_id).in_(user_ids))
        .order_by(col(MemberGroup.name))
    )
    names: dict[uuid.UUID, list[str]] = {}
    for user_id, name in (await session.exec(statement)).all():
        names.setdefault(user_id, []).append(name)
    return names


async def members_of_groups(
    ctx: OrgContext, session: AsyncSession, names: list[str]
) -> list[uuid.UUID]:
    if not names:
        return []
    await bind_org(session, ctx.org_id)
    statement = (
        select(MemberGroupMember.user_id)
        .join(MemberGroup, col(MemberGroupMember.group_id) == col(MemberGroup.id))
        .where(MemberGroup.org_id == ctx.org_id, col(MemberGroup.name).in_(names))
    )
    return list(dict.fromkeys((await session.exec(statement)).all()))
