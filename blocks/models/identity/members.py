"""Administering members and the organization: roles, deactivation, sessions, 2FA rule, closing."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.core.roles import Role, parse_roles
from blocks.infra.db import bind_org
from blocks.models.base import utcnow
from blocks.models.identity.api_keys import ApiKey
from blocks.models.identity.invites import revoke_all_pending
from blocks.models.identity.orgs import Membership, Organization, User
from blocks.models.identity.sessions import UserSession, revoke_sessions


@dataclass(frozen=True)
class Member:
    membership: Membership
    user: User

    @property
    def roles(self) -> tuple[Role, ...]:
        return parse_roles(self.membership.roles)

    @property
    def is_owner(self) -> bool:
        return Role.OWNER in self.roles

    @property
    def active(self) -> bool:
        return self.membership.deactivated_at is None and self.user.deactivated_at is None


@dataclass(frozen=True)
class Revoked:
    """What a deactivation or a closure cut off."""

    api_keys: int
    sessions: int
    invites: int = 0


def canonical_roles(roles: Iterable[Role]) -> list[str]:
    """Roles without duplicates, in the table's order, so equal sets compare and read equal."""
    wanted = set(roles)
    return [role.value for role in Role if role in wanted]


async def lock_org(ctx: OrgContext, db: AsyncSession) -> Organization:
    """The organization, row-locked until the transaction ends, so changes that could leave it
    without an owner (demote, deactivate, transfer) run one at a time and count owners truly.

    FOR NO KEY UPDATE, not FOR UPDATE: audit appends (and record_denial, in a transaction of
    its own while this one waits) take KEY SHARE on this row through their foreign key, which
    FOR UPDATE would block."""
    await bind_org(db, ctx.org_id)
    statement = (
        select(Organization)
        .where(Organization.id == ctx.org_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    org = (await db.exec(statement)).first()
    if org is None:
        # The context was resolved from this organization's own rows moments ago.
        raise LookupError(f"organization {ctx.org_id} is gone")
    return org


async def get_org(ctx: OrgContext, db: AsyncSession) -> Organization | None:
    await bind_org(db, ctx.org_id)
    return await db.get(Organization, ctx.org_id)


async def list_members(ctx: OrgContext, db: AsyncSession) -> list[Member]:
    """Every member, deactivated ones included, by email."""
    await bind_org(db, ctx.org_id)
    statement = (
        select(Membership, User)
        .join(User, col(User.id) == Membership.user_id)
        .where(Membership.org_id == ctx.org_id)
        .order_by(col(User.email))
    )
    return [Member(m, u) for m, u in (await db.exec(statement)).all()]


async def get_member(ctx: OrgContext, db: AsyncSession, user_id: uuid.UUID) -> Member | None:
    """One member of this organization; a person of another organization reads as missing."""
    await bind_org(db, ctx.org_id)
    statement = (
        select(Membership, User)
        .join(User, col(User.id) == Membership.user_id)
        .where(Membership.org_id == ctx.org_id, Membership.user_id == user_id)
        .execution_options(populate_existing=True)
    )
    row = (await db.exec(statement)).first()
    return Member(row[0], row[1]) if row else None


async def members_by_ids(
    ctx: OrgContext, db: AsyncSession, user_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Member]:
    """The members of this organization among `user_ids` (deactivated ones included), in one
    query; anyone else (another organization's person, an unknown id) is absent."""
    if not user_ids:
        return {}
    await bind_org(db, ctx.org_id)
    statement = (
        select(Membership, User)
        .join(User, col(User.id) == Membership.user_id)
        .where(Membership.org_id == ctx.org_id, col(Membership.user_id).in_(list(user_ids)))
    )
    return {u.id: Member(m, u) for m, u in (await db.exec(statement)).all()}


async def member_by_email(ctx: OrgContext, db: AsyncSession, email: str) -> Member | None:
    await bind_org(db, ctx.org_id)
    statement = (
        select(Membership, User)
        .join(User, col(User.id) == Membership.user_id)
        .where(Membership.org_id == ctx.org_id, User.email == email)
    )
    row = (await db.exec(statement)).first()
    return Member(row[0], row[1]) if row else None


async def active_owner_ids(ctx: OrgContext, db: AsyncSession) -> list[uuid.UUID]:
    """Owners who can still act: membership and account both active. Call under lock_org."""
    await bind_org(db, ctx.org_id)
    statement = (
        select(Membership.user_id)
        .join(User, col(User.id) == Membership.user_id)
        .where(
            Membership.org_id == ctx.org_id,
            col(Membership.deactivated_at).is_(None),
            col(User.deactivated_at).is_(None),
            col(Membership.roles).contains([Role.OWNER.value]),
        )
    )
    return list((await db.exec(statement)).all())


async def set_roles(ctx: OrgContext, db: AsyncSession, member: Member, roles: list[str]) -> None:
    await bind_org(db, ctx.org_id)
    member.membership.roles = list(roles)
    db.add(member.membership)
    await db.flush()


async def add_membership(
    ctx: OrgContext, db: AsyncSession, *, user_id: uuid.UUID, roles: list[str]
) -> Membership:
    await bind_org(db, ctx.org_id)
    membership = Membership(org_id=ctx.org_id, user_id=user_id, roles=list(roles))
    db.add(membership)
    await db.flush()
    return membership


async def revoke_member_keys(ctx: OrgContext, db: AsyncSession, user_id: uuid.UUID) -> int:
    """Revoke every live API key the member holds in this organization; how many."""
    await bind_org(db, ctx.org_id)
    result = await db.exec(  # type: ignore[call-overload]
        update(ApiKey)
        .where(
            col(ApiKey.org_id) == ctx.org_id,
            col(ApiKey.user_id) == user_id,
            col(ApiKey.revoked_at).is_(None),
        )
        .values(revoked_at=utcnow())
    )
    return int(result.rowcount or 0)


async def revoke_member_sessions(
    ctx: OrgContext, db: AsyncSession, user_id: uuid.UUID, *, reason: str
) -> int:
    """End the member's sessions scoped to this organization (their others stay); how many."""
    await bind_org(db, ctx.org_id)
    return len(await revoke_sessions(db, user_id=user_id, org_id=ctx.org_id, reason=reason))


async def deactivate_member(
    ctx: OrgContext, db: AsyncSession, member: Member, *, by: uuid.UUID | None
) -> Revoked:
    """Cut the member off now: membership marked, their keys and sessions here revoked. Their
    audit events are history and stay as they are."""
    await bind_org(db, ctx.org_id)
    member.membership.deactivated_at = utcnow()
    member.membership.deactivated_by = by
    db.add(member.membership)
    await db.flush()
    keys = await revoke_member_keys(ctx, db, member.user.id)
    sessions = await revoke_member_sessions(ctx, db, member.user.id, reason="member deactivated")
    return Revoked(api_keys=keys, sessions=sessions)


async def reactivate_member(ctx: OrgContext, db: AsyncSession, member: Member) -> None:
    """Restore the membership; revoked keys and sessions stay revoked (new ones are needed)."""
    await bind_org(db, ctx.org_id)
    member.membership.deactivated_at = None
    member.membership.deactivated_by = None
    db.add(member.membership)
    await db.flush()


async def set_require_2fa(
    ctx: OrgContext, db: AsyncSession, org: Organization, required: bool
) -> None:
    await bind_org(db, ctx.org_id)
    org.require_2fa = required
    db.add(org)
    await db.flush()


async def close_org(ctx: OrgContext, db: AsyncSession, org: Organization) -> Revoked:
    """Close the organization: every API key, session and pending invite of it revoked.

    The rows stay (its audit trail references them); a closed organization resolves no key and
    admits no session (blocks_resolve_api_key and session_org_context check closed_at too)."""
    await bind_org(db, ctx.org_id)
    now = utcnow()
    org.closed_at = now
    db.add(org)
    await db.flush()
    keys = await db.exec(  # type: ignore[call-overload]
        update(ApiKey)
        .where(col(ApiKey.org_id) == ctx.org_id, col(ApiKey.revoked_at).is_(None))
        .values(revoked_at=now)
    )
    sessions = await db.exec(  # type: ignore[call-overload]
        update(UserSession)
        .where(col(UserSession.org_id) == ctx.org_id, col(UserSession.revoked_at).is_(None))
        .values(revoked_at=now, revoke_reason="organization closed")
    )
    invites = await revoke_all_pending(ctx, db)
    return Revoked(
        api_keys=int(keys.rowcount or 0), sessions=int(sessions.rowcount or 0), invites=invites
    )
