"""The audit events of SCIM provisioning, written in the request's transaction (the actor is the
SCIM token), and the role changes a provider's groups made, shaped as single sign-on's are."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.api.deps import record_change
from blocks.core.context import OrgContext
from blocks.models.identity.members import Member, Revoked
from blocks.models.identity.sso.idp_groups import GroupChange


def revoked_data(revoked: Revoked | None) -> dict[str, int]:
    if revoked is None:
        return {}
    return {"api_keys_revoked": revoked.api_keys, "sessions_revoked": revoked.sessions}


async def audit_user(
    request: Request,
    ctx: OrgContext,
    db: AsyncSession,
    action: str,
    member: Member,
    data: dict[str, Any],
) -> None:
    """`scim.user_*`: the target is the member (the person), the SCIM id is in the data."""
    await record_change(
        request, ctx, db, action, target_type="member", target_id=str(member.user.id), data=data
    )


async def audit_group(
    request: Request,
    ctx: OrgContext,
    db: AsyncSession,
    action: str,
    group_id: str,
    data: dict[str, Any],
) -> None:
    await record_change(
        request, ctx, db, action, target_type="scim_group", target_id=group_id, data=data
    )


async def audit_group_changes(
    request: Request,
    ctx: OrgContext,
    db: AsyncSession,
    changes: list[tuple[Member, GroupChange]],
) -> None:
    """`member.roles_changed` (or `member.groups_changed` when only member groups moved), with
    `data.source = "idp"`, for each member the provider's groups changed."""
    for member, change in changes:
        await record_change(
            request,
            ctx,
            db,
            change.action,
            target_type="member",
            target_id=str(member.user.id),
            data=change.audit_data(),
        )
