"""The agent registry: each organization's agents, their A2A agent cards and how they are reached.

A live agent's name is unique in its organization (workflows name agents by it). The card is
stored as the A2A v1.0 JSON that was checked on registration (`infra.agents.cards`); `public`
serves it at the agent's well-known URL. `transport` says how tasks reach the agent: `relay` (its
WebSocket to the API, the default) or `pubnub`. A deleted agent keeps its row (tasks and tokens
name it) and stops receiving anything.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Column, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import OrgContext
from blocks.infra.db import bind_org
from blocks.models.agents.tokens import notify_revoked
from blocks.models.base import new_id, org_fk_column, timestamp_column, utcnow
from blocks.models.identity.orgs import Organization

TRANSPORTS = ("relay", "pubnub")


class Agent(SQLModel, table=True):
    __tablename__ = "agents"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    name: str = Field(max_length=100)
    card: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    public: bool = False
    transport: str = Field(default="relay", max_length=16)
    created_by: uuid.UUID | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    deleted_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    last_seen_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))

    def skill_ids(self) -> list[str]:
        """The ids of the skills its card declares."""
        skills = self.card.get("skills") or []
        return [s["id"] for s in skills if isinstance(s, dict) and isinstance(s.get("id"), str)]


async def create_agent(
    ctx: OrgContext,
    session: AsyncSession,
    *,
    name: str,
    card: dict[str, Any],
    public: bool = False,
    transport: str = "relay",
) -> Agent:
    """A new agent (the caller checked the card); the live-name index refuses a duplicate."""
    await bind_org(session, ctx.org_id)
    agent = Agent(
        org_id=ctx.org_id,
        name=name,
        card=card,
        public=public,
        transport=transport,
        created_by=ctx.user_id,
    )
    session.add(agent)
    await session.flush()
    return agent


async def get_agent(ctx: OrgContext, session: AsyncSession, agent_id: uuid.UUID) -> Agent | None:
    """A live agent of the organization by id."""
    await bind_org(session, ctx.org_id)
    statement = select(Agent).where(
        Agent.org_id == ctx.org_id, Agent.id == agent_id, col(Agent.deleted_at).is_(None)
    )
    return (await session.exec(statement)).first()


async def agent_by_name(ctx: OrgContext, session: AsyncSession, name: str) -> Agent | None:
    """A live agent of the organization by name (how workflows name agents)."""
    await bind_org(session, ctx.org_id)
    statement = select(Agent).where(
        Agent.org_id == ctx.org_id, Agent.name == name, col(Agent.deleted_at).is_(None)
    )
    return (await session.exec(statement)).first()


async def list_agents(ctx: OrgContext, session: AsyncSession) -> list[Agent]:
    await bind_org(session, ctx.org_id)
    statement = (
        select(Agent)
        .where(Agent.org_id == ctx.org_id, col(Agent.deleted_at).is_(None))
        .order_by(col(Agent.name))
    )
    return list((await session.exec(statement)).all())


async def mark_seen(ctx: OrgContext, session: AsyncSession, agent_id: uuid.UUID) -> None:
    """The agent was heard from now (connected, acknowledged, answered)."""
    await bind_org(session, ctx.org_id)
    await session.exec(  # type: ignore[call-overload]
        # Written at most every few seconds: one hot row per agent otherwise, at every message.
        text(
            "UPDATE agents SET last_seen_at = now() WHERE org_id = :org_id AND id = :agent_id"
            " AND (last_seen_at IS NULL OR last_seen_at < now() - interval '5 seconds')"
        ).bindparams(org_id=ctx.org_id, agent_id=agent_id)
    )


class AgentNameTaken(Exception):
    """Another live agent of the organization has this name."""


async def register_agent(
    ctx: OrgContext,
    session: AsyncSession,
    *,
    name: str,
    card: dict[str, Any],
    public: bool = False,
    transport: str = "relay",
) -> Agent:
    """`create_agent`, with a duplicate live name as AgentNameTaken (checked first, and the
    unique index still decides a race: its refusal is caught in a savepoint)."""
    if await agent_by_name(ctx, session, name) is not None:
        raise AgentNameTaken(name)
    try:
        async with session.begin_nested():
            return await create_agent(
                ctx, session, name=name, card=card, public=public, transport=transport
            )
    except IntegrityError:
        raise AgentNameTaken(name) from None


async def update_agent(
    ctx: OrgContext,
    session: AsyncSession,
    agent: Agent,
    *,
    card: dict[str, Any] | None = None,
    public: bool | None = None,
    transport: str | None = None,
) -> Agent:
    """Change what is given (the caller checked the card)."""
    await bind_org(session, ctx.org_id)
    if card is not None:
        agent.card = card
    if public is not None:
        agent.public = public
    if transport is not None:
        agent.transport = transport
    agent.updated_at = utcnow()
    session.add(agent)
    await session.flush()
    return agent


async def delete_agent(ctx: OrgContext, session: AsyncSession, agent: Agent) -> Agent:
    """Soft delete: the row stays (tasks and tokens name it); its name is free again."""
    await bind_org(session, ctx.org_id)
    agent.deleted_at = utcnow()
    agent.updated_at = agent.deleted_at
    session.add(agent)
    await session.flush()
    # Its open connections close at commit, whatever credential they hold.
    await notify_revoked(session, agent.id, "*")
    return agent


async def public_agent(session: AsyncSession, org_slug: str, name: str) -> Agent | None:
    """Pre-tenant: the live agent `name` of the open organization `org_slug`, only if its card
    is public (the well-known URL, which anyone may read); the session is then bound to it."""
    org_id = (
        await session.exec(
            select(Organization.id).where(
                Organization.slug == org_slug, col(Organization.closed_at).is_(None)
            )
        )
    ).first()
    if org_id is None:
        return None
    await bind_org(session, org_id)
    statement = select(Agent).where(
        Agent.org_id == org_id,
        Agent.name == name,
        col(Agent.public).is_(True),
        col(Agent.deleted_at).is_(None),
    )
    return (await session.exec(statement)).first()
