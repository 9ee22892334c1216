"""The SLA compliance report of one organization, read from its audit log by one server-side cursor.

The report is as of one point of the chain: the head's seq when it starts (`through_seq`), or
an earlier point a page cursor names. The head advances in the same transaction that inserts
events, so every event up to it is already committed and append-only: a report through a given
seq, with a given `now`, comes out the same whenever it is computed, and an auditor can reproduce
it from an export through that seq.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Select, Table, Text, cast, select, text
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.approvals.sla import (
    REPORT_ACTIONS,
    LoggedEvent,
    ReportFilters,
    SlaReportBuilder,
    StepRow,
    Summary,
    summarize,
    summarize_by_workflow,
)
from blocks.core.audit.sealed_content import CONTENT_PREFIX
from blocks.core.context import OrgContext
from blocks.infra.db import bind_org
from blocks.models.audit.content import ContentKeys
from blocks.models.audit.events import AuditEvent
from blocks.models.audit.reads import fetch_batches

BATCH = 2000  # events per FETCH: memory bounded whatever the log's size
_OPENED = "step.opened"
_SEALED = CONTENT_PREFIX
_EVENTS: Table = AuditEvent.__table__  # type: ignore[attr-defined]
_HEAD_SEQ = text("SELECT seq FROM audit_chain_heads WHERE org_id = :org_id")


@dataclass(frozen=True)
class SlaReport:
    org_id: str
    generated_at: datetime
    through_seq: int
    filters: ReportFilters
    rows: list[StepRow]
    by_workflow: list[Summary]
    overall: Summary


async def head_seq(ctx: OrgContext, session: AsyncSession) -> int:
    """The seq of the org's last event (0 for an empty log)."""
    await bind_org(session, ctx.org_id)
    row = (await session.exec(_HEAD_SEQ.bindparams(org_id=ctx.org_id))).first()  # type: ignore[call-overload]
    return int(row.seq) if row is not None else 0


def _data(value: str | None) -> Any:
    """An event's data, {} for none. Read by orjson (the driver's json.loads took a third of the
    report's time): it reads what json.loads does but integers beyond 64 bits (as floats), and
    the report reads no such number (reminder counts, SLA seconds); what it refuses goes to
    json.loads."""
    if value is None:
        return {}
    try:
        return orjson.loads(value) or {}
    except orjson.JSONDecodeError:
        return json.loads(value) or {}


def _report_events(ctx: OrgContext, through_seq: int) -> Select[Any]:
    """The org's run and step events up to `through_seq`, in seq order, their data as text."""
    return (
        select(
            _EVENTS.c.seq,
            _EVENTS.c.action,
            _EVENTS.c.run_id,
            _EVENTS.c.target_id,
            _EVENTS.c.actor_id,
            _EVENTS.c.occurred_at,
            cast(_EVENTS.c.data, Text),
        )
        .where(
            # Explicit as well as row-level security: the filter the index serves.
            _EVENTS.c.org_id == ctx.org_id,
            _EVENTS.c.seq <= through_seq,
            _EVENTS.c.action.in_(REPORT_ACTIONS),
        )
        .order_by(_EVENTS.c.seq)
    )


async def sla_report(
    ctx: OrgContext,
    session: AsyncSession,
    filters: ReportFilters,
    *,
    now: datetime | None = None,
    through_seq: int | None = None,
    batch: int = BATCH,
) -> SlaReport:
    """Compute the report through the head, or through `through_seq` if it is not beyond the
    head (the report says which: `through_seq`); `now` (default: the current time) tells open
    steps from overdue."""
    head = await head_seq(ctx, session)
    through = head if through_seq is None else min(through_seq, head)
    builder = SlaReportBuilder(filters)
    add = builder.add
    await bind_org(session, ctx.org_id)
    keys = ContentKeys(session, ctx.org_id)
    async for rows in fetch_batches(session, _report_events(ctx, through), batch):
        # Each event is read and passed on at once: the garbage collector, run by allocations,
        # would otherwise walk a whole batch of them again and again.
        for seq, action, run_id, target_id, actor_id, occurred_at, data in rows:
            values = _data(data)
            if (
                action == _OPENED and data is not None and _SEALED in data
            ):  # the step's title is run content
                values["title"] = await keys.reveal(None, "title", values.get("title"))
            add(LoggedEvent(seq, action, run_id, target_id, actor_id, occurred_at, values))
    generated_at = now or datetime.now(UTC)
    rows = builder.rows(generated_at)
    return SlaReport(
        org_id=str(ctx.org_id),
        generated_at=generated_at,
        through_seq=through,
        filters=filters,
        rows=rows,
        by_workflow=summarize_by_workflow(rows),
        overall=summarize(rows),
    )
