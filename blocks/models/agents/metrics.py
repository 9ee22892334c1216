"""Agent metrics, read from the metadata of `agent_tasks` rows (never their content).

Per skill (or per agent, for the agent list): calls (every task dispatched), how many ended
completed, failed, rejected or canceled, how many are still in flight, and the latency from
dispatch to the end (`latency_ms`, set when a task ends) at p50 and p99, computed by PostgreSQL
(`percentile_cont`) over the tasks that ended. `since` limits the tasks to those dispatched at
or after it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.infra.db import bind_org


@dataclass(frozen=True)
class TaskFigures:
    """What the tasks of one skill (or one agent) add up to."""

    calls: int = 0
    completed: int = 0
    failed: int = 0
    rejected: int = 0
    canceled: int = 0
    in_flight: int = 0
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    last_call_at: datetime | None = None


_FIGURES = """
    count(*) AS calls,
    count(*) FILTER (WHERE state = 'completed') AS completed,
    count(*) FILTER (WHERE state = 'failed') AS failed,
    count(*) FILTER (WHERE state = 'rejected') AS rejected,
    count(*) FILTER (WHERE state = 'canceled') AS canceled,
    count(*) FILTER (WHERE finished_at IS NULL) AS in_flight,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms)
        FILTER (WHERE latency_ms IS NOT NULL) AS p50,
    percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms)
        FILTER (WHERE latency_ms IS NOT NULL) AS p99,
    max(created_at) AS last_call_at
"""
_SINCE = "(CAST(:since AS timestamptz) IS NULL OR created_at >= CAST(:since AS timestamptz))"
_BY_SKILL = text(
    f"SELECT skill, {_FIGURES} FROM agent_tasks "  # noqa: S608 (module constants only)
    f"WHERE org_id = :org_id AND agent_id = :agent_id AND {_SINCE} GROUP BY skill"
)
_BY_AGENT = text(
    f"SELECT agent_id, {_FIGURES} FROM agent_tasks "  # noqa: S608 (module constants only)
    f"WHERE org_id = :org_id AND {_SINCE} "
    "AND (CAST(:agent_id AS uuid) IS NULL OR agent_id = CAST(:agent_id AS uuid)) GROUP BY agent_id"
)


def _figures(row: object) -> TaskFigures:
    def number(value: object) -> float | None:
        return round(float(value), 1) if value is not None else None  # type: ignore[arg-type]

    return TaskFigures(
        calls=int(row.calls),  # type: ignore[attr-defined]
        completed=int(row.completed),  # type: ignore[attr-defined]
        failed=int(row.failed),  # type: ignore[attr-defined]
        rejected=int(row.rejected),  # type: ignore[attr-defined]
        canceled=int(row.canceled),  # type: ignore[attr-defined]
        in_flight=int(row.in_flight),  # type: ignore[attr-defined]
        latency_p50_ms=number(row.p50),  # type: ignore[attr-defined]
        latency_p99_ms=number(row.p99),  # type: ignore[attr-defined]
        last_call_at=row.last_call_at,  # type: ignore[attr-defined]
    )


async def skill_figures(
    ctx: OrgContext, session: AsyncSession, agent_id: uuid.UUID, since: datetime | None = None
) -> dict[str, TaskFigures]:
    """Skill id -> its figures, for the skills the agent has been called for."""
    await bind_org(session, ctx.org_id)
    rows = await session.exec(  # type: ignore[call-overload]
        _BY_SKILL.bindparams(org_id=ctx.org_id, agent_id=agent_id, since=since)
    )
    return {row.skill: _figures(row) for row in rows.all()}


async def agent_figures(
    ctx: OrgContext,
    session: AsyncSession,
    since: datetime | None = None,
    agent_id: uuid.UUID | None = None,
) -> dict[uuid.UUID, TaskFigures]:
    """Agent id -> its figures over all its skills, for every agent of the organization (or
    only `agent_id`)."""
    await bind_org(session, ctx.org_id)
    rows = await session.exec(  # type: ignore[call-overload]
        _BY_AGENT.bindparams(org_id=ctx.org_id, since=since, agent_id=agent_id)
    )
    return {row.agent_id: _figures(row) for row in rows.all()}
