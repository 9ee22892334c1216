"""The admin's table from identity-provider groups to roles and member groups, and applying it.

A group is matched by its name as the provider sends it (an OIDC claim value, a SAML attribute
value, a SCIM group's displayName), exactly. Deny by default: a group no row names grants
nothing, and a member managed by the provider whose groups map to nothing has no role.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.core.roles import Role
from blocks.infra.db import bind_org
from blocks.models.approvals.groups import MemberGroupMember
from blocks.models.base import new_id, org_fk_column, text_array_column, timestamp_column, utcnow
from blocks.models.identity.members import (
    Member,
    active_owner_ids,
    canonical_roles,
    lock_org,
    set_roles,
)


class IdpGroupMapping(SQLModel, table=True):
    __tablename__ = "idp_group_mappings"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    idp_group: str = Field(max_length=255)
    roles: list[str] = Field(sa_column=text_array_column())
    member_group_id: uuid.UUID | None = Field(default=None, foreign_key="member_groups.id")
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


@dataclass(frozen=True)
class GroupGrant:
    """What a person's provider groups grant: roles, and the member groups they belong in."""

    roles: list[str]
    member_group_ids: frozenset[uuid.UUID]
    # Every member group some mapping names: membership in these follows the provider.
    managed_group_ids: frozenset[uuid.UUID]


async def list_mappings(ctx: OrgContext, db: AsyncSession) -> list[IdpGroupMapping]:
    await bind_org(db, ctx.org_id)
    statement = (
        select(IdpGroupMapping)
        .where(IdpGroupMapping.org_id == ctx.org_id)
        .order_by(col(IdpGroupMapping.idp_group))
    )
    return list((await db.exec(statement)).all())


async def replace_mappings(
    ctx: OrgContext,
    db: AsyncSession,
    rows: Iterable[tuple[str, list[Role], uuid.UUID | None]],
) -> list[IdpGroupMapping]:
    """Replace the whole table with `rows` (group, roles, member group id)."""
    await bind_org(db, ctx.org_id)
    await db.exec(  # type: ignore[call-overload]
        delete(IdpGroupMapping).where(col(IdpGroupMapping.org_id) == ctx.org_id)
    )
    created = [
        IdpGroupMapping(
            org_id=ctx.org_id,
            idp_group=group,
            roles=canonical_roles(roles),
            member_group_id=member_group_id,
        )
        for group, roles, member_group_id in rows
    ]
    db.add_all(created)
    await db.flush()
    return created


async def grant_for(ctx: OrgContext, db: AsyncSession, groups: Iterable[str]) -> GroupGrant:
    """What `groups` grant under the organization's table (deny by default)."""
    wanted = set(groups)
    roles: set[Role] = set()
    member_groups: set[uuid.UUID] = set()
    managed: set[uuid.UUID] = set()
    for mapping in await list_mappings(ctx, db):
        if mapping.member_group_id is not None:
            managed.add(mapping.member_group_id)
        if mapping.idp_group not in wanted:
            continue
        roles.update(Role(value) for value in mapping.roles)
        if mapping.member_group_id is not None:
            member_groups.add(mapping.member_group_id)
    return GroupGrant(
        roles=canonical_roles(roles),
        member_group_ids=frozenset(member_groups),
        managed_group_ids=frozenset(managed),
    )


async def sync_member_groups(
    ctx: OrgContext, db: AsyncSession, user_id: uuid.UUID, grant: GroupGrant
) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """Put the person in the member groups `grant` names and out of the other managed ones
    (groups no mapping names are the admins' and stay as they are); (added, removed)."""
    await bind_org(db, ctx.org_id)
    current = set(
        (
            await db.exec(
                select(MemberGroupMember.group_id).where(
                    MemberGroupMember.org_id == ctx.org_id, MemberGroupMember.user_id == user_id
                )
            )
        ).all()
    )
    added = sorted(grant.member_group_ids - current)
    removed = sorted((current & grant.managed_group_ids) - grant.member_group_ids)
    for group_id in added:
        db.add(MemberGroupMember(group_id=group_id, org_id=ctx.org_id, user_id=user_id))
    if removed:
        await db.exec(  # type: ignore[call-overload]
            delete(MemberGroupMember).where(
                col(MemberGroupMember.org_id) == ctx.org_id,
                col(MemberGroupMember.user_id) == user_id,
                col(MemberGroupMember.group_id).in_(removed),
            )
        )
    await db.flush()
    return added, removed


@dataclass(frozen=True)
class GroupChange:
    """What applying a person's provider groups changed (for the audit event)."""

    roles_before: list[str]
    roles_after: list[str]
    member_groups_added: list[uuid.UUID]
    member_groups_removed: list[uuid.UUID]
    # The provider's groups would have left the organization without an active owner.
    kept_last_owner: bool = False

    @property
    def roles_changed(self) -> bool:
        return self.roles_before != self.roles_after

    @property
    def changed(self) -> bool:
        return (
            self.roles_changed or bool(self.member_groups_added) or bool(self.member_groups_removed)
        )

    @property
    def action(self) -> str:
        """The audit action saying what changed: roles, or only member groups."""
        return "member.roles_changed" if self.roles_changed else "member.groups_changed"

    def audit_data(self) -> dict[str, Any]:
        """The event's data, whichever way the provider's groups arrived (sign-in or SCIM)."""
        return {
            "source": "idp",
            "before": self.roles_before,
            "after": self.roles_after,
            "member_groups_added": [str(g) for g in self.member_groups_added],
            "member_groups_removed": [str(g) for g in self.member_groups_removed],
            "kept_last_owner": self.kept_last_owner,
        }


async def apply_idp_groups(
    ctx: OrgContext, db: AsyncSession, member: Member, groups: Iterable[str]
) -> GroupChange:
    """Give a provider-managed member (`managed_by == 'idp'`) the roles and member groups their
    provider groups map to. A member an admin manages keeps their roles: this returns no change.
    The last active owner is never demoted by a provider: the owner role stays (and says so)."""
    before = list(member.membership.roles)
    if member.membership.managed_by != "idp":
        return GroupChange(before, before, [], [])
    grant = await grant_for(ctx, db, groups)
    after = grant.roles
    kept = False
    if Role.OWNER.value in before and Role.OWNER.value not in after:
        await lock_org(ctx, db)
        owners = await active_owner_ids(ctx, db)
        if owners == [member.user.id]:
            after = canonical_roles([Role(r) for r in [*after, Role.OWNER.value]])
            kept = True
    if after != before:
        await set_roles(ctx, db, member, after)
    added, removed = await sync_member_groups(ctx, db, member.user.id, grant)
    return GroupChange(before, after, added, removed, kept_last_owner=kept)
