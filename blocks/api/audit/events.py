"""Routes for reading the audit log: the organization's events, or one run's chain of custody."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.api.deps import CanReadAudit, DbSession
from blocks.api.errors import not_found
from blocks.api.params import AfterSeq, time_window
from blocks.api.schemas import AuditEventListOut, AuditEventOut
from blocks.core.context import OrgContext
from blocks.models.approvals.runs import get_run
from blocks.models.audit.content import with_content
from blocks.models.audit.events import AuditEvent, list_events
from blocks.models.audit.personal_data import reveal

router = APIRouter(prefix="/v1", tags=["audit"])


@router.get(
    "/audit-events", response_model=AuditEventListOut, summary="List audit events in chain order"
)
async def list_audit_events(
    ctx: CanReadAudit,
    session: DbSession,
    run_id: Annotated[uuid.UUID | None, Query()] = None,
    action: Annotated[str | None, Query(max_length=100, description="e.g. step.decided")] = None,
    actor_id: Annotated[str | None, Query(max_length=100)] = None,
    occurred_from: Annotated[
        datetime | None, Query(alias="from", description="Occurred at or after (RFC 3339)")
    ] = None,
    occurred_to: Annotated[
        datetime | None, Query(alias="to", description="Occurred before (RFC 3339)")
    ] = None,
    after_seq: AfterSeq = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditEventListOut:
    """The events matching every filter given, in chain order; the same filters as the export."""
    if run_id is not None and await get_run(ctx, session, run_id) is None:
        raise not_found("run")
    start, end = time_window(occurred_from, occurred_to)
    events = await list_events(
        ctx,
        session,
        run_id=str(run_id) if run_id else None,
        action=action,
        actor_id=actor_id,
        occurred_from=start,
        occurred_to=end,
        after_seq=after_seq,
        limit=limit,
    )
    return await _page(ctx, session, events, limit)


@router.get(
    "/runs/{run_id}/audit-events",
    response_model=AuditEventListOut,
    summary="List one run's audit events",
)
async def run_audit_events(
    run_id: uuid.UUID,
    ctx: CanReadAudit,
    session: DbSession,
    after_seq: AfterSeq = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> AuditEventListOut:
    if await get_run(ctx, session, run_id) is None:
        raise not_found("run")
    events = await list_events(ctx, session, run_id=str(run_id), after_seq=after_seq, limit=limit)
    return await _page(ctx, session, events, limit)


async def _page(
    ctx: OrgContext, session: AsyncSession, events: list[AuditEvent], limit: int
) -> AuditEventListOut:
    # Personal fields and run content are shown decrypted (or "[erased]", "[destroyed]"); the
    # stored rows are never modified.
    shown = await reveal(ctx, session, events)
    events = await with_content(session, ctx.org_id, events)
    return AuditEventListOut(
        events=[
            AuditEventOut.model_validate(
                {
                    **event.model_dump(),
                    "actor_email": fields.actor_email,
                    "ip": fields.ip,
                    "user_agent": fields.user_agent,
                    "personal_data_erased": fields.erased,
                }
            )
            for event, fields in zip(events, shown, strict=True)
        ],
        next_after_seq=events[-1].seq if len(events) == limit else None,
    )
