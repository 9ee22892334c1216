"""Organizations, users and the memberships (with their roles) that join them."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Column, LargeBinary, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import UUID as PgUUID
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
    # Every member must have two-factor sign-in before a session may enter the organization.
    require_2fa: bool = False
    # The published workflows members may start (None: every one), and whether a run's input may
    # name its approvers by member id (else only roles and member groups decide).
    allowed_workflows: list[str] | None = Field(default=None, sa_column=Column(JSONB))
    approvers_from_input: bool = True
    # Sign-in into the organization only through its identity providers, except for the named
    # break-glass admins (password and two-factor, audited at every use).
    sso_enforced: bool = False
    sso_break_glass: list[uuid.UUID] = Field(
        default_factory=list, sa_column=Column(ARRAY(PgUUID(as_uuid=True)), nullable=False)
    )
    closed_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    email: str = Field(unique=True, max_length=320)
    display_name: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    deactivated_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    # argon2id (pwdlib); None until the person sets one (sign-up is by emailed link).
    password_hash: str | None = Field(default=None, max_length=500, repr=False)
    password_changed_at: datetime | None = Field(
        default=None, sa_column=timestamp_column(nullable=True)
    )
    email_verified_at: datetime | None = Field(
        default=None, sa_column=timestamp_column(nullable=True)
    )
    # The TOTP secret, sealed under the master keys; enabled once a first code proved it.
    totp_key_id: str | None = Field(default=None, max_length=64)
    totp_secret_sealed: bytes | None = Field(
        default=None, sa_column=Column(LargeBinary, nullable=True), repr=False
    )
    totp_enabled_at: datetime | None = Field(
        default=None, sa_column=timestamp_column(nullable=True)
    )
    # The time step of the last accepted code: a code is never accepted twice.
    totp_last_counter: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class Membership(SQLModel, table=True):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("org_id", "user_id"),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column())
    user_id: uuid.UUID = Field(sa_column=user_fk_column())
    roles: list[str] = Field(sa_column=text_array_column())
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    deactivated_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    deactivated_by: uuid.UUID | None = Field(default=None, sa_column=user_fk_column(nullable=True))
    # 'idp': created by an identity provider (just-in-time or SCIM); its roles follow its groups.
    managed_by: str = Field(default="manual", max_length=8)


async def get_org_by_slug(session: AsyncSession, slug: str) -> Organization | None:
    """Pre-tenant lookup used only by operator tooling (the CLI), never by request handlers."""
    return (await session.exec(select(Organization).where(Organization.slug == slug))).first()


async def create_org_with_owner(
    session: AsyncSession, *, slug: str, name: str, owner_email: str, owner_name: str
) -> tuple[Organization, User, Membership]:
    org = Organization(slug=slug, name=name)
    user = await find_user_by_email(session, owner_email)
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
    user = await find_user_by_email(session, email)
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
            col(Membership.deactivated_at).is_(None),
            col(User.id).in_(user_ids) | col(Membership.roles).overlap(roles),
        )
        .order_by(col(User.email))
    )
    return list((await session.exec(statement)).all())


async def orgs_of_user(
    db: AsyncSession, user_id: uuid.UUID
) -> list[tuple[Organization, Membership]]:
    """The open organizations a person is an active member of (the organization picker).

    Pre-tenant: row-level security lets a transaction read its own person's memberships once
    `app.user_id` names them; only sign-in code, holding a verified session, calls this.
    """
    await db.exec(  # type: ignore[call-overload]
        text("SELECT set_config('app.user_id', :user_id, true)").bindparams(user_id=str(user_id))
    )
    statement = (
        select(Organization, Membership)
        .join(Membership, col(Membership.org_id) == Organization.id)
        .where(
            Membership.user_id == user_id,
            col(Membership.deactivated_at).is_(None),
            col(Organization.closed_at).is_(None),
        )
        .order_by(col(Organization.name))
    )
    return [(org, membership) for org, membership in (await db.exec(statement)).all()]


async def active_org_ids(db: AsyncSession, user_id: uuid.UUID) -> list[uuid.UUID]:
    """The organizations a person's events are also written to (see api.security_audit)."""
    return [org.id for org, _ in await orgs_of_user(db, user_id)]


async def find_user_by_email(db: AsyncSession, email: str) -> User | None:
    return (await db.exec(select(User).where(User.email == email))).first()
