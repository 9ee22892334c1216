"""The approver's inbox: every pending step, across the organization's runs, they may decide now."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel
from temporalio.client import Client
from temporalio.service import RPCError

from blocks.api.deps import CanDecide, DbSession, TemporalClient
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.core.approvals import search_attributes as sa
from blocks.core.approvals.policy import GROUP_PREFIX, policy_memberships
from blocks.models.approvals.delegations import active_delegators
from blocks.models.approvals.groups import group_names_of
from blocks.workflows.sdk import STATUS_QUERY
from blocks.workflows.types import RunView

router = APIRouter(prefix="/v1", tags=["approvals"])

# Queries run concurrently, a few at a time, so a large inbox neither crawls nor floods Temporal.
_QUERY_CONCURRENCY = 8


_ITEM = {
    "run_id": ex.RUN_ID,
    "workflow": "expense_approval",
    "step_id": "approve",
    "title": "Expense of 120.50 EUR: Team lunch",
    "approvers": ["role:approver"],
    "opened_at": ex.STARTED,
    "deadline": ex.DEADLINE,
    "votes_so_far": 0,
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


class InboxOut(BaseModel):
    model_config = example(items=[_ITEM])

    items: list[InboxItem]


def _labels(user_id: str, roles: Iterable[str]) -> list[str]:
    """A person's policy labels; `roles` also carries `group:<name>` for member groups."""
    return [
        f"user:{user_id}",
        *(role if role.startswith(GROUP_PREFIX) else f"role:{role}" for role in roles),
    ]


@router.get(
    "/inbox",
    response_model=InboxOut,
    summary="List the steps waiting for your decision",
    operation_id="read_inbox",
)
async def inbox(
    ctx: CanDecide,
    client: TemporalClient,
    session: DbSession,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> InboxOut:
    # The caller's own seats, then those of members who delegated to them right now.
    own = policy_memberships(
        (r.value for r in ctx.roles), await group_names_of(ctx, session, ctx.user_id)
    )
    people = [(str(ctx.user_id), own)] + [
        (d.user_id, d.roles) for d in await active_delegators(ctx, session)
    ]
    labels = list(dict.fromkeys(label for p in people for label in _labels(*p)))
    # Both values come from the resolved context (a UUID and role names), never from the caller.
    wanted = ", ".join(f'"{label}"' for label in labels)
    query = (
        f'{sa.ORG_ID.name} = "{ctx.org_id}" AND ExecutionStatus = "Running" '
        f"AND {sa.PENDING_APPROVERS.name} IN ({wanted})"
    )
    workflow_ids = [execution.id async for execution in client.list_workflows(query, limit=limit)]
    gate = asyncio.Semaphore(_QUERY_CONCURRENCY)
    views = await asyncio.gather(*(_view(client, gate, wid) for wid in workflow_ids))
    items: list[InboxItem] = []
    for workflow_id, view in zip(workflow_ids, views, strict=True):
        if view is None or view.requested_by == str(ctx.user_id):
            continue  # closed meanwhile, or the caller's own request (they may not approve it)
        for step in view.steps:
            seats = [
                user
                for user, roles in people
                if user != view.requested_by
                and user not in step.deciders
                and any(label in step.approvers for label in _labels(user, roles))
            ]
            if step.state == "pending" and seats:
                items.append(
                    InboxItem(
                        run_id=uuid.UUID(workflow_id.removeprefix("run-")),
                        workflow=view.workflow_name,
                        step_id=step.step_id,
                        title=step.title,
                        approvers=step.approvers,
                        opened_at=step.opened_at,
                        deadline=step.deadline,
                        votes_so_far=len(step.deciders),
                    )
                )
    items.sort(key=lambda item: (item.deadline is None, item.deadline or item.opened_at))
    return InboxOut(items=items)


async def _view(client: Client, gate: asyncio.Semaphore, workflow_id: str) -> RunView | None:
    async with gate:
        try:
            return await client.get_workflow_handle(workflow_id).query(
                STATUS_QUERY, result_type=RunView
            )
        except RPCError:
            return None
