"""The approver's inbox: every pending step, across the organization's runs, they may decide now."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from blocks.api.deps import CanDecide, DbSession
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.core.approvals.policy import GROUP_PREFIX, policy_memberships
from blocks.models.approvals.delegations import active_delegators
from blocks.models.approvals.groups import group_names_of
from blocks.models.approvals.pending_steps import Seat, pending_steps_for
from blocks.models.audit.content import ContentKeys

router = APIRouter(prefix="/v1", tags=["approvals"])


_ITEM = {
    "run_id": ex.RUN_ID,
    "workflow": "expense_approval",
    "step_id": "approve",
    "title": "Expense of 120.50 EUR: Team lunch",
    "approvers": ["role:approver"],
    "opened_at": ex.STARTED,
    "deadline": ex.DEADLINE,
    "votes_so_far": 0,
    "requested_by": ex.OPERATOR_ID,
}


class InboxItem(BaseModel):
    model_config = example(**_ITEM)

    run_id: uuid.UUID
    workflow: str | None
    step_id: str
    title: str
    approvers: list[str]
    opened_at: datetime
    deadline: datetime | None
    votes_so_far: int
    requested_by: str | None = Field(
        default=None, description="The member who started the run; null when the system did"
    )


class InboxOut(BaseModel):
    model_config = example(items=[_ITEM])

    items: list[InboxItem]


def _labels(user_id: str, roles: Iterable[str]) -> tuple[str, ...]:
    """A person's policy labels; `roles` also carries `group:<name>` for member groups."""
    return (
        f"user:{user_id}",
        *(role if role.startswith(GROUP_PREFIX) else f"role:{role}" for role in roles),
    )


@router.get(
    "/inbox",
    response_model=InboxOut,
    summary="List the steps waiting for your decision",
    operation_id="read_inbox",
)
async def inbox(
    ctx: CanDecide,
    session: DbSession,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> InboxOut:
    # The caller's own seat, then those of members who delegated to them right now. The steps
    # come from the pending-steps projection of the audit log (one query; no worker involved).
    own = policy_memberships(
        (r.value for r in ctx.roles), await group_names_of(ctx, session, ctx.user_id)
    )
    seats = [Seat(str(ctx.user_id), _labels(str(ctx.user_id), own))] + [
        Seat(d.user_id, _labels(d.user_id, d.roles)) for d in await active_delegators(ctx, session)
    ]
    steps = await pending_steps_for(ctx, session, seats, limit=limit)
    # A step's title is run content, sealed in the log and in its projection.
    keys = ContentKeys(session, ctx.org_id)
    titles = [str(await keys.reveal(None, "title", step.title)) for step in steps]
    return InboxOut(
        items=[
            InboxItem(
                run_id=uuid.UUID(step.run_id),
                workflow=step.workflow,
                step_id=step.step_id,
                title=title,
                approvers=step.approvers,
                opened_at=step.opened_at,
                deadline=step.deadline,
                votes_so_far=len(step.deciders),
                requested_by=step.requested_by,
            )
            for step, title in zip(steps, titles, strict=True)
        ]
    )
