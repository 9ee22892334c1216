"""Routes for reading the audit log: the organization's events, or one run's chain of custody."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from blocks.api.deps import CanReadAudit, DbSession
from blocks.api.errors import not_found
from blocks.api.schemas import AuditEventListOut, AuditEventOut
from blocks.models.audit import AuditEvent, list_events
from blocks.models.runs import get_run

router = APIRouter(prefix="/v1", tags=["audit"])


@router.get("/audit-events", response_model=AuditEventListOut)
async def list_audit_events(
    ctx: CanReadAudit,
    session: DbSession,
    run_id: Annotated[uuid.UUID | None, Query()] = None,
    after_seq: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditEventListOut:
    if run_id is not None and await get_run(ctx, session, run_id) is None:
        raise not_found("run")
    events = await list_events(
        ctx, session, run_id=str(run_id) if run_id else None, after_seq=after_seq, limit=limit
    )
    return _page(events, limit)


@router.get("/runs/{run_id}/audit-events", response_model=AuditEventListOut)
async def run_audit_events(
    run_id: uuid.UUID,
    ctx: CanReadAudit,
    session: DbSession,
    after_seq: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> AuditEventListOut:
    if await get_run(ctx, session, run_id) is None:
        raise not_found("run")
    events = await list_events(ctx, session, run_id=str(run_id), after_seq=after_seq, limit=limit)
    return _page(events, limit)


def _page(events: list[AuditEvent], limit: int) -> AuditEventListOut:
    return AuditEventListOut(
        events=[AuditEventOut.model_validate(e, from_attributes=True) for e in events],
        next_after_seq=events[-1].seq if len(events) == limit else None,
    )
