"""Approvers a run's input names are checked on the server before the run starts.

The published input schema marks each field that names approvers by member id
(`blocks.core.approvals.named_approvers`). Each id must be an active member of the organization
whose roles let them decide steps, in the member group the field requires, and never the
requester; and the organization may forbid naming approvers in input at all, so that only roles
and member groups decide. A start that breaks any of it is a 422 naming each field; nothing is
written. The step checks its members again when it opens (blocks.activities.approvers).
"""

from __future__ import annotations

import uuid
from typing import Any, NoReturn

from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.api.errors import Problem
from blocks.core.approvals.named_approvers import (
    Standing,
    approver_refusal,
    member_uuid,
    named_approvers,
)
from blocks.core.context import OrgContext
from blocks.models.approvals.groups import group_names_by_user
from blocks.models.identity.members import Member, get_org, members_by_ids
from blocks.workflows.catalogue import MAX_INPUT_ERRORS

NOT_ALLOWED = (
    "this organization allows only roles and member groups to decide: approvers may not be "
    "named in the input"
)


async def check_named_approvers(
    ctx: OrgContext, session: AsyncSession, input_schema: dict[str, Any], params: dict[str, Any]
) -> None:
    """Raise a 422 (`invalid_approver`, one error per field) unless every approver `params`
    names by member id may be one; reads the members in one query, whatever their number."""
    named = named_approvers(input_schema, params)
    if not named:
        return
    org = await get_org(ctx, session)
    if org is not None and not org.approvers_from_input:
        fields = dict.fromkeys(n.marked_field for n in named)
        _refuse([{"field": field, "reason": NOT_ALLOWED} for field in fields])
    ids = {n.value: member_uuid(n.value) for n in named}
    members = await members_by_ids(ctx, session, list({i for i in ids.values() if i is not None}))
    needs_groups = bool(members) and any(n.groups for n in named)
    groups = await group_names_by_user(ctx, session, list(members)) if needs_groups else {}
    errors = []
    for n in named:
        reason = approver_refusal(n, ctx.user_id, _standing(ids[n.value], members, groups))
        if reason is not None:
            errors.append({"field": n.field, "reason": reason})
    if errors:
        _refuse(errors)


def _standing(
    user_id: uuid.UUID | None,
    members: dict[uuid.UUID, Member],
    groups: dict[uuid.UUID, list[str]],
) -> Standing | None:
    member = members.get(user_id) if user_id is not None else None
    if member is None or user_id is None:
        return None
    return Standing(member.active, member.roles, tuple(groups.get(user_id, [])))


def _refuse(errors: list[dict[str, str]]) -> NoReturn:
    summary = "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    raise Problem(
        422,
        "Invalid Request",
        f"{summary}{more}",
        code="invalid_approver",
        errors=errors[:MAX_INPUT_ERRORS],
    )
