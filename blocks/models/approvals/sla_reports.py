"""The SLA compliance report of one organization, read from its audit log in keyset pages.

The report is as of one point of the chain: the head's seq when it starts (`through_seq`). The
head advances in the same transaction that inserts events, so every event up to it is already
committed and append-only, and later pages read exactly those events whatever is appended
meanwhile; an auditor can reproduce the report from an export through that seq.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Table, select, text
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
from blocks.core.context import OrgContext
from blocks.infra.db import bind_org
from blocks.models.audit.events import AuditEvent

PAGE = 1000
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


async def approval_event_pages(
    ctx: OrgContext, session: AsyncSession, *, through_seq: int, page: int = PAGE
) -> AsyncIterator[list[LoggedEvent]]:
    """The org's run and step events up to `through_seq`, in seq order, `page` at a time."""
    await bind_org(session, ctx.org_id)
    after = 0
    while after < through_seq:
        statement = (
            select(
                _EVENTS.c.seq,
                _EVENTS.c.action,
                _EVENTS.c.run_id,
                _EVENTS.c.target_id,
                _EVENTS.c.actor_id,
                _EVENTS.c.occurred_at,
                _EVENTS.c.data,
            )
            .where(
                # Explicit as well as row-level security: the filter the index serves.
                _EVENTS.c.org_id == ctx.org_id,
                _EVENTS.c.seq > after,
                _EVENTS.c.seq <= through_seq,
                _EVENTS.c.action.in_(REPORT_ACTIONS),
            )
            .order_by(_EVENTS.c.seq)
            .limit(page)
        )
        rows = (await session.exec(statement)).all()  # type: ignore[call-overload]
        if not rows:
            return
        yield [
            LoggedEvent(
                seq=int(row.seq),
                action=str(row.action),
                run_id=row.run_id,
                target_id=row.target_id,
                actor_id=row.actor_id,
                occurred_at=row.occurred_at,
                data=row.data or {},
            )
            for row in rows
        ]
        if len(rows) < page:
            return
        after = int(rows[-1].seq)


async def sla_report(
    ctx: OrgContext,
    session: AsyncSession,
    filters: ReportFilters,
    *,
    now: datetime | None = None,
    page: int = PAGE,
) -> SlaReport:
    """Compute the report; `now` (default: the current time) tells open steps from overdue."""
    through = await head_seq(ctx, session)
    builder = SlaReportBuilder(filters)
    async for events in approval_event_pages(ctx, session, through_seq=through, page=page):
        for event in events:
            builder.add(event)
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
