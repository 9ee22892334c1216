"""Console pages for member groups (the sets of members approval policies can require): list,
create, add and remove members, through the API's own group routes."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from blocks.api.approvals.groups import GroupIn, add_member, create, groups, remove_member
from blocks.api.console.admin.common import ADMIN, back_to, notice, refused
from blocks.api.console.forms import FormErrors, from_validation, read_form
from blocks.api.console.pages import render
from blocks.api.deps import CanManageMembers, DbSession
from blocks.api.errors import Problem, invalid_field
from blocks.api.identity.members import members
from blocks.core.context import OrgContext

router = APIRouter()

PAGE = f"{ADMIN}/groups"
NOTICES = {
    "created": "Group created.",
    "added": "Member added to the group.",
    "removed": "Member removed from the group.",
}


async def _page(
    request: Request,
    ctx: OrgContext,
    session: DbSession,
    *,
    errors: FormErrors | None = None,
    entered: str = "",
    status: int = 200,
) -> HTMLResponse:
    people = await members(ctx=ctx, session=session)
    return render(
        request,
        "admin_groups.html",
        ctx=ctx,
        status=status,
        notice=notice(request, NOTICES),
        groups=await groups(ctx=ctx, session=session),
        people=people,
        names={person.id: person.email for person in people},
        errors=errors,
        entered=entered,
    )


@router.get(PAGE)
async def groups_page(request: Request, ctx: CanManageMembers, session: DbSession) -> HTMLResponse:
    return await _page(request, ctx, session)


@router.post(PAGE, response_model=None)
async def create_group_page(
    request: Request, ctx: CanManageMembers, session: DbSession
) -> HTMLResponse | RedirectResponse:
    name = (await read_form(request)).get("name", "")
    try:
        await create(
            body=GroupIn.model_validate({"name": name}), request=request, ctx=ctx, session=session
        )
    except ValidationError as invalid:
        errors = from_validation(invalid)
        return await _page(request, ctx, session, errors=errors, entered=name, status=422)
    except Problem as problem:
        errors = await refused(session, problem)
        return await _page(
            request, ctx, session, errors=errors, entered=name, status=problem.status
        )
    return back_to(PAGE, "created")


@router.post(f"{PAGE}/{{group_id}}/members", response_model=None)
async def add_member_page(
    group_id: uuid.UUID, request: Request, ctx: CanManageMembers, session: DbSession
) -> HTMLResponse | RedirectResponse:
    try:
        try:
            user_id = uuid.UUID((await read_form(request)).get("user_id", ""))
        except ValueError:
            raise invalid_field("user_id", "choose a member") from None
        await add_member(
            group_id=group_id, user_id=user_id, request=request, ctx=ctx, session=session
        )
    except Problem as problem:
        errors = await refused(session, problem)
        return await _page(request, ctx, session, errors=errors, status=problem.status)
    return back_to(PAGE, "added")


@router.post(f"{PAGE}/{{group_id}}/members/{{user_id}}/remove", response_model=None)
async def remove_member_page(
    group_id: uuid.UUID,
    user_id: uuid.UUID,
    request: Request,
    ctx: CanManageMembers,
    session: DbSession,
) -> HTMLResponse | RedirectResponse:
    try:
        await remove_member(
            group_id=group_id, user_id=user_id, request=request, ctx=ctx, session=session
        )
    except Problem as problem:
        errors = await refused(session, problem)
        return await _page(request, ctx, session, errors=errors, status=problem.status)
    return back_to(PAGE, "removed")
