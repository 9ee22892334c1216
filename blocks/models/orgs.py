"""Organizations, users and the memberships (with their roles) that join them."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.core.roles import Role
from blocks.infra.db import bind_org
from blocks.models.base import (
    new_id,
    org_fk_column,
    text_array_column,
    timestamp_column,
    user_fk_column,
    utcnow,
)


class Organization(SQLModel, table=True):
    __tablename__ = "organizations"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    slug: str = Field(unique=True, max_length=63)
    name: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    # Whether an emailed decision link alone may decide, or the approver must also be signed in.
    link_only_decisions: bool = False


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    email: str = Field(unique=True, max_length=320)
    display_name: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    deactivated_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


class Membership(SQLModel, table=True):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("org_id", "user_id"),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column())
    user_id: uuid.UUID = Field(sa_column=user_fk_column())
    roles: list[str] = Field(sa_column=text_array_column())
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


async def get_org_by_slug(session: AsyncSession, slug: str) -> Organization | None:
    """Pre-tenant lookup used only by operator tooling (the CLI), never by request handlers."""
    return (await session.exec(select(Organization).where(Organization.slug == slug))).first()


async def create_org_with_owner(
    session: AsyncSession, *, slug: str, name: str, owner_email: str, owner_name: str
) -> tuple[Organization, User, Membership]:
    org = Organization(slug=slug, name=name)
    user = (await session.exec(select(User).where(User.email == owner_email))).first()
    if user is None:
        user = User(email=owner_email, display_name=owner_name)
        session.add(user)
    session.add(org)
    await session.flush()
    await bind_org(session, org.id)
    membership = Membership(org_id=org.id, user_id=user.id, roles=[Role.OWNER.value])
    session.add(membership)
    await session.flush()
    return org, user, membership


async def add_member(
    ctx: OrgContext, session: AsyncSession, *, email: str, display_name: str, roles: list[Role]
) -> tuple[User, Membership]:
    await bind_org(session, ctx.org_id)
    user = (await session.exec(select(User).where(User.email == email))).first()
    if user is None:
        user = User(email=email, display_name=display_name)
        session.add(user)
        await session.flush()
    membership = Membership(org_id=ctx.org_id, user_id=user.id, roles=[r.value for r in roles])
    session.add(membership)
    await session.flush()
    return user, membership


async def get_membership(
    ctx: OrgContext, session: AsyncSession, user_id: uuid.UUID
) -> Membership | None:
    await bind_org(session, ctx.org_id)
    statement = select(Membership).where(
        Membership.org_id == ctx.org_id, Membership.user_id == user_id
    )
    return (await session.exec(statement)).first()


async def members_matching(
    ctx: OrgContext, session: AsyncSession, *, user_ids: list[uuid.UUID], roles: list[str]
) -> list[User]:
    """Active members named by id or holding one of the roles (who a step's approvers are)."""
    await bind_org(session, ctx.org_id)
    statement = (
        select(User)
        .join(Membership, Membership.user_id == User.id)
        .where(
            Membership.org_id == ctx.org_id,
            col(User.deactivated_at).is_(None),
            col(User.id).in_(user_ids) | col(Membership.roles).overlap(roles),
        )
        .order_by(col(User.email))
    )
    return list((await session.exec(statement)).all())
