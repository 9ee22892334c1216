"""Route of an agent's metrics: per skill, calls and how they ended, latency p50/p99, and the
agent's last seen time and status; computed by PostgreSQL from the tasks' metadata
(models.agents.metrics), never their content. Needs `run:read`, as the agent list."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from blocks.api.agents.registry import (
    AGENT_ID,
    AgentFiguresOut,
    agent_or_404,
    figures_out,
    online_ids,
    status,
)
from blocks.api.deps import CanReadRuns, DbSession
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.core.agents.cards import skill_ids
from blocks.models.agents.metrics import agent_figures, skill_figures

router = APIRouter(prefix="/v1/agents", tags=["integrations"])

_FIGURES = AgentFiguresOut.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]


class SkillMetricsOut(AgentFiguresOut):
    model_config = example(skill="extract", declared=True, **_FIGURES)

    skill: str
    declared: bool = Field(description="Whether the agent's card declares it now")


class AgentMetricsOut(BaseModel):
    model_config = example(
        agent_id=AGENT_ID,
        name="invoice-reader",
        status="online",
        last_seen_at=ex.DECIDED,
        since=None,
        total=_FIGURES,
        skills=[{"skill": "extract", "declared": True, **_FIGURES}],
    )

    agent_id: uuid.UUID
    name: str
    status: Literal["online", "offline"]
    last_seen_at: datetime | None
    since: datetime | None = Field(description="Only tasks dispatched from then on; null: all")
    total: AgentFiguresOut
    skills: list[SkillMetricsOut] = Field(
        description="Each skill the card declares, then any other the agent was called for"
    )


@router.get("/{agent_id}/metrics", response_model=AgentMetricsOut, summary="Read agent metrics")
async def agent_metrics(
    agent_id: uuid.UUID,
    request: Request,
    ctx: CanReadRuns,
    session: DbSession,
    since: datetime | None = Query(
        default=None, description="Count only tasks dispatched at or after this time"
    ),
) -> AgentMetricsOut:
    agent = await agent_or_404(ctx, session, agent_id)
    per_skill = await skill_figures(ctx, session, agent.id, since)
    total = (await agent_figures(ctx, session, since, agent_id=agent.id)).get(agent.id)
    declared = skill_ids(agent.card)
    ordered = declared + sorted(set(per_skill) - set(declared))
    return AgentMetricsOut(
        agent_id=agent.id,
        name=agent.name,
        status=status(agent, online_ids(request)),
        last_seen_at=agent.last_seen_at,
        since=since,
        total=figures_out(total),
        skills=[
            SkillMetricsOut(
                skill=skill,
                declared=skill in declared,
                **figures_out(per_skill.get(skill)).model_dump(),
            )
            for skill in ordered
        ],
    )
