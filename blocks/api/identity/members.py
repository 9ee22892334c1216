"""Routes for members: list them, change their roles, deactivate, reactivate, end their sessions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from blocks.api.deps import (
    CanManageMembers,
    CanManageSecurity,
    CanReadOrg,
    DbSession,
    forbidden,
    record_change,
    record_denial,
)
from blocks.api.errors import Problem, not_found
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.api.security_audit import request_audit_fields
from blocks.core.audit.records import AuditRecord
from blocks.core.context import OrgContext
from blocks.core.roles import Role
from blocks.models.audit.events import append_events
from blocks.models.identity.members import (
    Member,
    active_owner_ids,
    canonical_roles,
    deactivate_member,
    get_member,
    list_members,
    lock_org,
    reactivate_member,
    revoke_member_sessions,
    set_roles,
)

router = APIRouter(prefix="/v1/members", tags=["identity"])

MEMBER_EXAMPLE = {
    "id": ex.APPROVER_ID,
    "email": ex.APPROVER_EMAIL,
    "display_name": "Alan Turing",
    "roles": ["approver"],
    "created_at": ex.CREATED,
    "deactivated_at": None,
    "two_factor": True,
}


class MemberOut(BaseModel):
    model_config = example(**MEMBER_EXAMPLE)

    id: uuid.UUID = Field(description="The member's user id")
    email: str
    display_name: str
    roles: list[str]
    created_at: datetime = Field(description="When they joined this organization")
    deactivated_at: datetime | None
    two_factor: bool = Field(description="Whether they sign in with a second factor")


class RolesIn(StrictModel):
    model_config = example(roles=["approver", "auditor"])

    roles: list[Role] = Field(min_length=1, max_length=len(Role), description="e.g. [approver]")


class DeactivatedOut(MemberOut):
    model_config = example(
        **MEMBER_EXAMPLE | {"deactivated_at": ex.DECIDED}, api_keys_revoked=1, sessions_revoked=2
    )

    api_keys_revoked: int
    sessions_revoked: int


class SessionsRevokedOut(BaseModel):
    model_config = example(user_id=ex.APPROVER_ID, sessions_revoked=2)

    user_id: uuid.UUID
    sessions_revoked: int


def member_out(member: Member) -> MemberOut:
    return MemberOut(
        id=member.user.id,
        email=member.user.email,
        display_name=member.user.display_name,
        roles=list(member.membership.roles),
        created_at=member.membership.created_at,
        deactivated_at=member.membership.deactivated_at,
        two_factor=member.user.totp_enabled_at is not None,
    )


def last_owner() -> Problem:
    return Problem(
        409,
        "Conflict",
        "an organization keeps at least one active owner: make someone else owner first",
        code="last_owner",
    )


async def audit_member(
    request: Request,
    ctx: OrgContext,
    session: DbSession,
    action: str,
    user_id: uuid.UUID,
    data: dict[str, Any],
) -> None:
    await record_change(
        request,
        ctx,
        session,
        action,
        target_type="member",
        target_id=str(user_id),
        data=data,
    )


async def refuse_unless_owner(request: Request, ctx: OrgContext, what: str) -> None:
    """Owner-only changes inside routes admins may otherwise use: 403, audited."""
    if Role.OWNER not in ctx.roles:
        await record_denial(request, ctx, f"only an owner may {what}")
        raise forbidden(f"only an owner may {what}")


async def _member_or_404(ctx: OrgContext, session: DbSession, user_id: uuid.UUID) -> Member:
    member = await get_member(ctx, session, user_id)
    if member is None:
        raise not_found("member")
    return member


@router.get(
    "",
    response_model=list[MemberOut],
    summary="List the organization's members",
    operation_id="list_members",
)
async def members(ctx: CanReadOrg, session: DbSession) -> list[MemberOut]:
    return [member_out(m) for m in await list_members(ctx, session)]


@router.put(
    "/{user_id}/roles",
    response_model=MemberOut,
    summary="Change a member's roles",
    operation_id="change_member_roles",
)
async def change_roles(
    user_id: uuid.UUID, body: RolesIn, request: Request, ctx: CanManageMembers, session: DbSession
) -> MemberOut:
    # Serialises with every other change that could remove the last owner.
    await lock_org(ctx, session)
    member = await _member_or_404(ctx, session, user_id)
    before = list(member.membership.roles)
    after = canonical_roles(body.roles)
    if sorted(before) == sorted(after):
        return member_out(member)
    was_owner, will_be_owner = Role.OWNER.value in before, Role.OWNER.value in after
    if was_owner or will_be_owner:
        await refuse_unless_owner(
            request, ctx, "grant or remove the owner role, or change an owner's roles"
        )
    if (
        was_owner
        and not will_be_owner
        and member.active
        and await active_owner_ids(ctx, session) == [user_id]
    ):
        raise last_owner()
    await set_roles(ctx, session, member, after)
    await audit_member(
        request, ctx, session, "member.roles_changed", user_id, {"before": before, "after": after}
    )
    return member_out(member)


@router.post(
    "/{user_id}/deactivate",
    response_model=DeactivatedOut,
    summary="Deactivate a member",
    operation_id="deactivate_member",
)
async def deactivate(
    user_id: uuid.UUID, request: Request, ctx: CanManageMembers, session: DbSession
) -> DeactivatedOut:
    await lock_org(ctx, session)
    member = await _member_or_404(ctx, session, user_id)
    if member.membership.deactivated_at is not None:
        raise Problem(
            409, "Conflict", "this member is already deactivated", code="member_deactivated"
        )
    if member.is_owner:
        await refuse_unless_owner(request, ctx, "deactivate an owner")
        if await active_owner_ids(ctx, session) == [user_id]:
            raise last_owner()
    revoked = await deactivate_member(ctx, session, member, by=ctx.user_id)
    await audit_member(
        request,
        ctx,
        session,
        "member.deactivated",
        user_id,
        {
            "roles": list(member.membership.roles),
            "api_keys_revoked": revoked.api_keys,
            "sessions_revoked": revoked.sessions,
        },
    )
    return DeactivatedOut(
        **member_out(member).model_dump(),
        api_keys_revoked=revoked.api_keys,
        sessions_revoked=revoked.sessions,
    )


@router.post(
    "/{user_id}/reactivate",
    response_model=MemberOut,
    summary="Reactivate a member",
    operation_id="reactivate_member",
)
async def reactivate(
    user_id: uuid.UUID, request: Request, ctx: CanManageMembers, session: DbSession
) -> MemberOut:
    member = await _member_or_404(ctx, session, user_id)
    if member.membership.deactivated_at is None:
        raise Problem(409, "Conflict", "this member is not deactivated", code="member_active")
    if member.is_owner:
        # Reactivating an owner hands owner powers back: the owner role's own rule applies.
        await refuse_unless_owner(request, ctx, "reactivate an owner")
    await reactivate_member(ctx, session, member)
    await audit_member(
        request,
        ctx,
        session,
        "member.reactivated",
        user_id,
        {"roles": list(member.membership.roles)},
    )
    return member_out(member)


@router.post(
    "/{user_id}/sessions/revoke",
    response_model=SessionsRevokedOut,
    summary="End every session of a member",
)
async def revoke_sessions_of_member(
    user_id: uuid.UUID, request: Request, ctx: CanManageSecurity, session: DbSession
) -> SessionsRevokedOut:
    await _member_or_404(ctx, session, user_id)
    count = await revoke_member_sessions(ctx, session, user_id, reason="revoked by an admin")
    await append_events(
        ctx,
        session,
        [
            AuditRecord(
                action="session.revoked",
                target_type="member",
                target_id=str(user_id),
                data={"sessions_revoked": count, "scope": "organization"},
                **request_audit_fields(request, ctx),
            )
        ],
    )
    return SessionsRevokedOut(user_id=user_id, sessions_revoked=count)
