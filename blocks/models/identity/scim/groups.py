"""SCIM Groups: a name and its member Users. Whoever joins, leaves, or sees their group renamed or
deleted gets the roles and member groups the admin's mapping table gives their groups' names."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

from sqlalchemy import delete, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.infra.db import bind_org
from blocks.models.base import utcnow
from blocks.models.identity.members import Member
from blocks.models.identity.scim.provisioning import (
    ScimConflict,
    UnknownScimUser,
    apply_groups,
    flush_unique,
)
from blocks.models.identity.scim.tables import ScimGroup, ScimGroupMember, ScimUser
from blocks.models.identity.sso.idp_groups import GroupChange

GroupChanges = list[tuple[Member, GroupChange]]


async def _check_name(
    ctx: OrgContext, db: AsyncSession, display_name: str, *, other_than: uuid.UUID | None
) -> None:
    statement = select(ScimGroup.id).where(
        ScimGroup.org_id == ctx.org_id, func.lower(ScimGroup.display_name) == display_name.lower()
    )
    if other_than is not None:
        statement = statement.where(ScimGroup.id != other_than)
    if (await db.exec(statement)).first() is not None:
        raise ScimConflict(f"displayName {display_name!r} is taken")


async def _known_users(
    ctx: OrgContext, db: AsyncSession, member_ids: Iterable[str]
) -> set[uuid.UUID]:
    """The Users `member_ids` name (UnknownScimUser for one that names none)."""
    wanted: set[uuid.UUID] = set()
    for value in member_ids:
        try:
            wanted.add(uuid.UUID(value))
        except ValueError:
            raise UnknownScimUser(value) from None
    if not wanted:
        return wanted
    statement = select(ScimUser.id).where(
        ScimUser.org_id == ctx.org_id, col(ScimUser.id).in_(list(wanted))
    )
    found = set((await db.exec(statement)).all())
    missing = sorted(str(value) for value in wanted - found)
    if missing:
        raise UnknownScimUser(missing[0])
    return wanted


async def member_ids(ctx: OrgContext, db: AsyncSession, group_id: uuid.UUID) -> set[uuid.UUID]:
    await bind_org(db, ctx.org_id)
    statement = select(ScimGroupMember.scim_user_id).where(
        ScimGroupMember.org_id == ctx.org_id, ScimGroupMember.group_id == group_id
    )
    return set((await db.exec(statement)).all())


async def members_of_groups(
    ctx: OrgContext, db: AsyncSession, group_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, list[ScimUser]]:
    """Each group's member Users, oldest first."""
    wanted = list(group_ids)
    found: dict[uuid.UUID, list[ScimUser]] = {group_id: [] for group_id in wanted}
    if not wanted:
        return found
    await bind_org(db, ctx.org_id)
    statement = (
        select(ScimGroupMember.group_id, ScimUser)
        .join(ScimUser, col(ScimUser.id) == ScimGroupMember.scim_user_id)
        .where(ScimGroupMember.org_id == ctx.org_id, col(ScimGroupMember.group_id).in_(wanted))
        .order_by(col(ScimUser.created_at), col(ScimUser.id))
    )
    for group_id, user in (await db.exec(statement)).all():
        found[group_id].append(user)
    return found


async def _set_members(
    ctx: OrgContext, db: AsyncSession, group: ScimGroup, wanted: set[uuid.UUID]
) -> set[uuid.UUID]:
    """Make `wanted` the group's members; the Users who joined or left."""
    current = await member_ids(ctx, db, group.id)
    joined, left = wanted - current, current - wanted
    for user_id in sorted(joined):
        db.add(ScimGroupMember(group_id=group.id, scim_user_id=user_id, org_id=ctx.org_id))
    if left:
        await db.exec(  # type: ignore[call-overload]
            delete(ScimGroupMember).where(
                col(ScimGroupMember.org_id) == ctx.org_id,
                col(ScimGroupMember.group_id) == group.id,
                col(ScimGroupMember.scim_user_id).in_(sorted(left)),
            )
        )
    await db.flush()
    return joined | left


async def create_group(
    ctx: OrgContext,
    db: AsyncSession,
    *,
    display_name: str,
    external_id: str | None,
    members: Sequence[str],
) -> tuple[ScimGroup, GroupChanges]:
    await bind_org(db, ctx.org_id)
    await _check_name(ctx, db, display_name, other_than=None)
    wanted = await _known_users(ctx, db, members)
    group = ScimGroup(org_id=ctx.org_id, display_name=display_name, external_id=external_id)
    db.add(group)
    await flush_unique(db, f"displayName {display_name!r} is taken")
    affected = await _set_members(ctx, db, group, wanted)
    return group, await apply_groups(ctx, db, affected)


async def update_group(
    ctx: OrgContext,
    db: AsyncSession,
    group: ScimGroup,
    *,
    display_name: str,
    external_id: str | None,
    members: Sequence[str],
) -> tuple[bool, GroupChanges]:
    """Replace the group's state; (whether anything changed, the members' role changes)."""
    await bind_org(db, ctx.org_id)
    await _check_name(ctx, db, display_name, other_than=group.id)
    wanted = await _known_users(ctx, db, members)
    renamed = group.display_name != display_name
    affected = await _set_members(ctx, db, group, wanted)
    changed = renamed or group.external_id != external_id or bool(affected)
    if changed:
        group.display_name = display_name
        group.external_id = external_id
        group.version += 1
        group.updated_at = utcnow()
        db.add(group)
        await flush_unique(db, f"displayName {display_name!r} is taken")
    if renamed:  # the name is what the mapping table matches: every member is affected
        affected |= wanted
    return changed, await apply_groups(ctx, db, affected)


async def delete_group(ctx: OrgContext, db: AsyncSession, group: ScimGroup) -> GroupChanges:
    await bind_org(db, ctx.org_id)
    affected = await member_ids(ctx, db, group.id)
    await db.delete(group)
    await db.flush()
    return await apply_groups(ctx, db, affected)


async def get_group(ctx: OrgContext, db: AsyncSession, group_id: uuid.UUID) -> ScimGroup | None:
    await bind_org(db, ctx.org_id)
    statement = (
        select(ScimGroup)
        .where(ScimGroup.org_id == ctx.org_id, ScimGroup.id == group_id)
        .execution_options(populate_existing=True)
    )
    return (await db.exec(statement)).first()


async def list_groups(
    ctx: OrgContext,
    db: AsyncSession,
    *,
    display_name: str | None = None,
    external_id: str | None = None,
    ids: Sequence[uuid.UUID] | None = None,
) -> list[ScimGroup]:
    await bind_org(db, ctx.org_id)
    statement = select(ScimGroup).where(ScimGroup.org_id == ctx.org_id)
    if display_name is not None:
        statement = statement.where(func.lower(ScimGroup.display_name) == display_name.lower())
    if external_id is not None:
        statement = statement.where(ScimGroup.external_id == external_id)
    if ids is not None:
        statement = statement.where(col(ScimGroup.id).in_(list(ids)))
    statement = statement.order_by(col(ScimGroup.created_at), col(ScimGroup.id))
    return list((await db.exec(statement)).all())
