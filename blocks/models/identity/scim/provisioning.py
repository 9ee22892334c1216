"""What SCIM provisioning does to people and groups: a SCIM User is a person with a membership in
the organization (created `managed_by='idp'`, no role: roles come from groups), deactivated and
reactivated with its `active`; a SCIM Group's members get the roles and member groups the admin's
mapping table gives its name (`apply_idp_groups`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.infra.db import bind_org
from blocks.models.base import utcnow
from blocks.models.identity.members import (
    Member,
    Revoked,
    active_owner_ids,
    deactivate_member,
    get_member,
    lock_org,
    reactivate_member,
)
from blocks.models.identity.orgs import Membership, User, find_user_by_email
from blocks.models.identity.scim.tables import ScimGroup, ScimGroupMember, ScimUser
from blocks.models.identity.sso.domains import verified_domains
from blocks.models.identity.sso.idp_groups import GroupChange, apply_idp_groups


class ScimConflict(ValueError):
    """The write would break a uniqueness rule (SCIM's 409 `uniqueness`)."""


class LastOwner(ValueError):
    """Deprovisioning would leave the organization without an active owner."""


class UnknownScimUser(ValueError):
    """A group names as member an id that is no SCIM User of the organization."""

    def __init__(self, value: str) -> None:
        super().__init__(f"{value} is not a User of this organization")
        self.value = value


@dataclass(frozen=True)
class UserWrite:
    """A User's state as the identity provider sends it, already checked by the API."""

    user_name: str
    external_id: str | None
    active: bool
    attributes: dict[str, Any]
    email: str | None  # the account's address (normalized): a creation needs it
    display_name: str


@dataclass
class Provisioned:
    """What a write of a User did, for the audit."""

    row: ScimUser
    member: Member
    created_account: bool = False
    deactivated: Revoked | None = None
    reactivated: bool = False
    group_changes: list[tuple[Member, GroupChange]] = field(default_factory=list)


def _domain(email: str) -> str:
    return email.rsplit("@", 1)[-1]


async def _user_name_taken(
    ctx: OrgContext, db: AsyncSession, user_name: str, *, other_than: uuid.UUID | None
) -> bool:
    statement = select(ScimUser.id).where(
        ScimUser.org_id == ctx.org_id, func.lower(ScimUser.user_name) == user_name.lower()
    )
    if other_than is not None:
        statement = statement.where(ScimUser.id != other_than)
    return (await db.exec(statement)).first() is not None


async def flush_unique(db: AsyncSession, detail: str) -> None:
    """Flush in a savepoint: a unique index another request won a moment ago is a conflict."""
    try:
        async with db.begin_nested():
            await db.flush()
    except IntegrityError:
        raise ScimConflict(detail) from None


async def _refuse_last_owner(ctx: OrgContext, db: AsyncSession, member: Member) -> None:
    """A provider never locks everyone out: the last active owner stays (LastOwner)."""
    if not member.is_owner or not member.active:
        return
    await lock_org(ctx, db)
    if await active_owner_ids(ctx, db) == [member.user.id]:
        raise LastOwner(str(member.user.id))


async def _set_active(
    ctx: OrgContext, db: AsyncSession, member: Member, active: bool, result: Provisioned
) -> None:
    if not active and member.membership.deactivated_at is None:
        await _refuse_last_owner(ctx, db, member)
        result.deactivated = await deactivate_member(ctx, db, member, by=None)
    elif active and member.membership.deactivated_at is not None:
        await reactivate_member(ctx, db, member)
        result.reactivated = True


async def create_user(ctx: OrgContext, db: AsyncSession, write: UserWrite) -> Provisioned:
    """Provision a person: their account if none has the address, else that account when its
    domain is one the organization verified (ScimConflict otherwise), and their membership."""
    await bind_org(db, ctx.org_id)
    if write.email is None:
        raise ValueError("a User is created with an email address")
    if await _user_name_taken(ctx, db, write.user_name, other_than=None):
        raise ScimConflict(f"userName {write.user_name!r} is taken")
    verified = _domain(write.email) in await verified_domains(ctx, db)
    user = await find_user_by_email(db, write.email)
    created_account = user is None
    if user is None:
        user = User(
            email=write.email,
            display_name=write.display_name[:200],
            email_verified_at=utcnow() if verified else None,
        )
        db.add(user)
        await flush_unique(db, f"an account with the address of {write.user_name!r} exists")
    member = await get_member(ctx, db, user.id)
    # An existing account is linked only when the organization verified its domain, or when
    # this organization's provider created its membership before (a re-provisioning): anything
    # else would hand this organization someone else's account.
    provisioned_here = member is not None and member.membership.managed_by == "idp"
    if not created_account and not verified and not provisioned_here:
        raise ScimConflict(
            "an account with this email address exists and its domain is not one this "
            "organization verified"
        )
    if member is None:
        membership = Membership(org_id=ctx.org_id, user_id=user.id, roles=[], managed_by="idp")
        db.add(membership)
        await db.flush()
        member = Member(membership, user)
    row = ScimUser(
        org_id=ctx.org_id,
        user_id=user.id,
        user_name=write.user_name,
        external_id=write.external_id,
        active=write.active,
        attributes=write.attributes,
    )
    db.add(row)
    await flush_unique(db, f"{write.user_name!r} is provisioned already")
    result = Provisioned(row, member, created_account=created_account)
    await _set_active(ctx, db, member, write.active, result)
    result.group_changes = await apply_groups(ctx, db, [row.id])
    return result


async def update_user(
    ctx: OrgContext, db: AsyncSession, row: ScimUser, write: UserWrite
) -> Provisioned:
    """Replace a User's state; `active` deactivates or reactivates the membership (idempotent).
    The account's own address and name are not changed: other organizations share it."""
    await bind_org(db, ctx.org_id)
    if await _user_name_taken(ctx, db, write.user_name, other_than=row.id):
        raise ScimConflict(f"userName {write.user_name!r} is taken")
    member = await get_member(ctx, db, row.user_id)
    if member is None:  # the membership is kept for history; it cannot vanish
        raise LookupError(f"SCIM user {row.id} has no membership")
    changed = (
        row.user_name != write.user_name
        or row.external_id != write.external_id
        or row.active != write.active
        or row.attributes != write.attributes
    )
    if changed:
        row.user_name = write.user_name
        row.external_id = write.external_id
        row.active = write.active
        row.attributes = write.attributes
        row.version += 1
        row.updated_at = utcnow()
        db.add(row)
        await flush_unique(db, f"userName {write.user_name!r} is taken")
    result = Provisioned(row, member)
    await _set_active(ctx, db, member, write.active, result)
    return result


async def delete_user(
    ctx: OrgContext, db: AsyncSession, row: ScimUser
) -> tuple[Member | None, Revoked | None]:
    """Remove the SCIM resource (and its group memberships); the member is deactivated, their
    history kept."""
    await bind_org(db, ctx.org_id)
    member = await get_member(ctx, db, row.user_id)
    revoked = None
    if member is not None and member.membership.deactivated_at is None:
        await _refuse_last_owner(ctx, db, member)
        revoked = await deactivate_member(ctx, db, member, by=None)
    await db.delete(row)
    await db.flush()
    return member, revoked


async def get_user(ctx: OrgContext, db: AsyncSession, scim_id: uuid.UUID) -> ScimUser | None:
    await bind_org(db, ctx.org_id)
    statement = (
        select(ScimUser)
        .where(ScimUser.org_id == ctx.org_id, ScimUser.id == scim_id)
        .execution_options(populate_existing=True)
    )
    return (await db.exec(statement)).first()


async def list_users(
    ctx: OrgContext,
    db: AsyncSession,
    *,
    user_name: str | None = None,
    external_id: str | None = None,
    ids: Sequence[uuid.UUID] | None = None,
) -> list[ScimUser]:
    """The organization's Users, oldest first, narrowed by the equalities given (userName
    compares without case, as SCIM's userName is caseExact false)."""
    await bind_org(db, ctx.org_id)
    statement = select(ScimUser).where(ScimUser.org_id == ctx.org_id)
    if user_name is not None:
        statement = statement.where(func.lower(ScimUser.user_name) == user_name.lower())
    if external_id is not None:
        statement = statement.where(ScimUser.external_id == external_id)
    if ids is not None:
        statement = statement.where(col(ScimUser.id).in_(list(ids)))
    statement = statement.order_by(col(ScimUser.created_at), col(ScimUser.id))
    return list((await db.exec(statement)).all())


async def groups_of_users(
    ctx: OrgContext, db: AsyncSession, scim_user_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, list[ScimGroup]]:
    """Each User's groups, by name."""
    wanted = list(scim_user_ids)
    found: dict[uuid.UUID, list[ScimGroup]] = {user_id: [] for user_id in wanted}
    if not wanted:
        return found
    await bind_org(db, ctx.org_id)
    statement = (
        select(ScimGroupMember.scim_user_id, ScimGroup)
        .join(ScimGroup, col(ScimGroup.id) == ScimGroupMember.group_id)
        .where(ScimGroupMember.org_id == ctx.org_id, col(ScimGroupMember.scim_user_id).in_(wanted))
        .order_by(col(ScimGroup.display_name))
    )
    for user_id, group in (await db.exec(statement)).all():
        found[user_id].append(group)
    return found


async def apply_groups(
    ctx: OrgContext, db: AsyncSession, scim_user_ids: Iterable[uuid.UUID]
) -> list[tuple[Member, GroupChange]]:
    """Give each of these Users' members the roles and member groups their groups map to; the
    members whose roles or member groups changed, with what changed."""
    ids = sorted(set(scim_user_ids))
    if not ids:
        return []
    groups = await groups_of_users(ctx, db, ids)
    changes = []
    for row in await list_users(ctx, db, ids=ids):
        member = await get_member(ctx, db, row.user_id)
        if member is None:
            continue
        change = await apply_idp_groups(
            ctx, db, member, [group.display_name for group in groups[row.id]]
        )
        if change.changed:
            changes.append((member, change))
    return changes
