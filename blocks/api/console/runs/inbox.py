"""The console inbox: the steps the signed-in person may decide now, with SLA time left."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.api.approvals.inbox import InboxItem, inbox
from blocks.api.console.pages import render
from blocks.api.console.time_text import Deadline, deadline, utc
from blocks.api.deps import CanDecide, DbSession
from blocks.api.identity.members import members
from blocks.core.context import OrgContext
from blocks.core.roles import Permission

router = APIRouter()

# Notices after a redirect here: fixed text per key, never the query's own words.
DONE = {
    "approved": "Your approval is recorded.",
    "rejected": "Your rejection is recorded.",
}


@dataclass(frozen=True)
class InboxRow:
    item: InboxItem
    href: str
    opened: str
    due: Deadline | None
    requester: str


async def member_names(ctx: OrgContext, session: AsyncSession) -> dict[str, str]:
    """Member id -> how to name them (display name and email), read through the API's member
    list when the caller may read it; otherwise ids stay ids."""
    if not ctx.can(Permission.ORG_READ):
        return {}
    return {str(m.id): f"{m.display_name} <{m.email}>" for m in await members(ctx, session)}


def name_of(names: dict[str, str], member_id: object | None, *, nobody: str = "") -> str:
    if member_id is None:
        return nobody
    return names.get(str(member_id), str(member_id))


def step_href(run_id: uuid.UUID, step_id: str) -> str:
    return f"/console/runs/{run_id}/steps/{step_id}"


@router.get("/inbox", response_class=HTMLResponse)
async def inbox_page(
    request: Request,
    ctx: CanDecide,
    session: DbSession,
    done: str | None = Query(None, max_length=40),
) -> HTMLResponse:
    out = await inbox(ctx=ctx, session=session, limit=200)
    names = await member_names(ctx, session)
    now = datetime.now(UTC)
    rows = [
        InboxRow(
            item=item,
            href=step_href(item.run_id, item.step_id),
            opened=utc(item.opened_at, ""),
            due=deadline(item.deadline, now),
            requester=name_of(names, item.requested_by, nobody="the system"),
        )
        for item in out.items
    ]
    return render(request, "inbox.html", ctx=ctx, notice=DONE.get(done or ""), rows=rows)
