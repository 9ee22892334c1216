"""Routes for member groups: admins name sets of members that approval policies can require."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from blocks.api.deps import (
    CanManageMembers,
    CanReadOrg,
    DbSession,
    record_change,
)
from blocks.api.errors import Problem, not_found
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.core.context import OrgContext
from blocks.models.approvals.delegations import is_member
from blocks.models.approvals.groups import (
    MemberGroup,
    add_to_group,
    create_group,
    get_group,
    list_groups,
    remove_from_group,
)

router = APIRouter(prefix="/v1/groups", tags=["approvals"])


class GroupIn(StrictModel):
    model_config = example(name="finance")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="e.g. finance")


class GroupOut(BaseModel):
    model_config = example(id=ex.GROUP_ID, name="finance", members=[ex.APPROVER_ID])

    id: uuid.UUID
    name: str
    members: list[uuid.UUID]


async def _audit(
    request: Request,
    ctx: OrgContext,
    session: DbSession,
    action: str,
    group: MemberGroup,
    **data: str,
) -> None:
    await record_change(
        request,
        ctx,
        session,
        action,
        target_type="member_group",
        target_id=str(group.id),
        data={"name": group.name, **data},
    )


@router.post(
    "",
    status_code=201,
    response_model=GroupOut,
    summary="Create an approver group",
    operation_id="create_group",
)
async def create(
    body: GroupIn, request: Request, ctx: CanManageMembers, session: DbSession
) -> GroupOut:
    group = await create_group(ctx, session, body.name)
    if group is None:
        raise Problem(409, "Conflict", f"a group named {body.name!r} exists", code="group_exists")
    await _audit(request, ctx, session, "group.created", group)
    return GroupOut(id=group.id, name=group.name, members=[])


@router.get(
    "", response_model=list[GroupOut], summary="List approver groups", operation_id="list_groups"
)
async def groups(ctx: CanReadOrg, session: DbSession) -> list[GroupOut]:
    return [GroupOut(id=g.id, name=g.name, members=m) for g, m in await list_groups(ctx, session)]


@router.put(
    "/{group_id}/members/{user_id}",
    response_model=GroupOut,
    summary="Add a member to a group",
    operation_id="add_group_member",
)
async def add_member(
    group_id: uuid.UUID,
    user_id: uuid.UUID,
    request: Request,
    ctx: CanManageMembers,
    session: DbSession,
) -> GroupOut:
    group = await get_group(ctx, session, group_id)
    if group is None:
        raise not_found("group")
    if not await is_member(ctx, session, user_id):
        raise not_found("member")
    if await add_to_group(ctx, session, group, user_id):
        await _audit(request, ctx, session, "group.member_added", group, user_id=str(user_id))
    return await _out(ctx, session, group)


@router.delete(
    "/{group_id}/members/{user_id}",
    response_model=GroupOut,
    summary="Remove a member from a group",
    operation_id="remove_group_member",
)
async def remove_member(
    group_id: uuid.UUID,
    user_id: uuid.UUID,
    request: Request,
    ctx: CanManageMembers,
    session: DbSession,
) -> GroupOut:
    group = await get_group(ctx, session, group_id)
    if group is None:
        raise not_found("group")
    if not await remove_from_group(ctx, session, group, user_id):
        raise not_found("member")
    await _audit(request, ctx, session, "group.member_removed", group, user_id=str(user_id))
    return await _out(ctx, session, group)


async def _out(ctx: OrgContext, session: DbSession, group: MemberGroup) -> GroupOut:
    members = next(m for g, m in await list_groups(ctx, session) if g.id == group.id)
    return GroupOut(id=group.id, name=group.name, members=members)
