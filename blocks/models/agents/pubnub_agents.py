"""What the PubNub transport reads from the database: the agents it serves, the principal behind
a publisher's uuid, an agent's payload key, and a task's input fetched by reference.

PubNub agents of every organization are listed one organization at a time (row-level security
binds each read to one). A result's publisher uuid names the agent token whose Access Manager
grant it used (`pubnub_grants.agent_uuid`): the token must still be live and the agent's, so a
revoked token is cut off at its next message even while its PubNub grant lasts.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.agents.pubnub_grants import cipher_key
from blocks.infra.db import bind_org
from blocks.models.agents.registry import Agent, get_agent
from blocks.models.agents.tasks import DELIVERED, AgentTask, open_sealed
from blocks.models.agents.tokens import AgentPrincipal, AgentToken
from blocks.models.base import utcnow
from blocks.models.identity.orgs import Organization
from blocks.models.keys.org_keys import live_org_key, org_key_by_id

PUBNUB = "pubnub"
# How long after its (last) delivery a task's input may be fetched by reference: the agent
# fetches it at once; a later fetch waits for the next delivery.
INPUT_REF_SECONDS = 600


@dataclass(frozen=True)
class PubNubAgent:
    """A live agent of the `pubnub` transport: what its channels serve."""

    org_id: uuid.UUID
    agent_id: uuid.UUID
    name: str
    skills: frozenset[str]
    cipher: str


def system_context(org_id: uuid.UUID) -> OrgContext:
    return OrgContext(org_id=OrgId(org_id), user_id=None, roles=(), auth=AuthMethod.SYSTEM)


async def payload_cipher(ctx: OrgContext, session: AsyncSession, agent_id: uuid.UUID) -> str:
    """The agent's payload key, derived from its organization's live data key."""
    await bind_org(session, ctx.org_id)
    key = await live_org_key(session, ctx.org_id)
    return cipher_key(key.secret, agent_id)


async def pubnub_agent(
    ctx: OrgContext, session: AsyncSession, agent_id: uuid.UUID
) -> PubNubAgent | None:
    """The agent if it is live and reached over PubNub."""
    agent = await get_agent(ctx, session, agent_id)
    if agent is None or agent.transport != PUBNUB:
        return None
    return PubNubAgent(
        org_id=agent.org_id,
        agent_id=agent.id,
        name=agent.name,
        skills=frozenset(agent.skill_ids()),
        cipher=await payload_cipher(ctx, session, agent.id),
    )


async def all_pubnub_agents(sessions: async_sessionmaker[AsyncSession]) -> list[PubNubAgent]:
    """Every live PubNub agent of every open organization (one transaction per organization)."""
    async with sessions() as session:
        orgs: Sequence[uuid.UUID] = (
            await session.exec(select(Organization.id).where(col(Organization.closed_at).is_(None)))
        ).all()
    found: list[PubNubAgent] = []
    for org_id in orgs:
        ctx = system_context(org_id)
        async with sessions() as session, session.begin():
            await bind_org(session, org_id)
            agents = (
                await session.exec(
                    select(Agent).where(
                        Agent.org_id == org_id,
                        Agent.transport == PUBNUB,
                        col(Agent.deleted_at).is_(None),
                    )
                )
            ).all()
            for agent in agents:
                cipher = await payload_cipher(ctx, session, agent.id)
                skills = frozenset(agent.skill_ids())
                found.append(PubNubAgent(org_id, agent.id, agent.name, skills, cipher))
    return found


async def principal_of_token(
    ctx: OrgContext, session: AsyncSession, agent_id: uuid.UUID, token_id: uuid.UUID
) -> AgentPrincipal | None:
    """The principal of a live token of this live agent, else None (revoked, expired, other's)."""
    await bind_org(session, ctx.org_id)
    token = (
        await session.exec(
            select(AgentToken).where(
                AgentToken.org_id == ctx.org_id,
                AgentToken.agent_id == agent_id,
                AgentToken.id == token_id,
                col(AgentToken.revoked_at).is_(None),
            )
        )
    ).first()
    if token is None or (token.expires_at is not None and token.expires_at <= utcnow()):
        return None
    agent = await get_agent(ctx, session, agent_id)
    if agent is None:
        return None
    return AgentPrincipal(
        token_id=token.id,
        org_id=token.org_id,
        agent_id=agent.id,
        agent_name=agent.name,
        skills=frozenset(token.skills),
        transport=agent.transport,
    )


@dataclass(frozen=True)
class TaskInput:
    """A task's input fetched by reference, or why not: `unknown` (no such task in the
    organization), `other_agent` (another agent's: refused), `gone` (acknowledged or expired)."""

    input: dict[str, Any] | None = None
    refusal: str | None = None


async def task_input(
    ctx: OrgContext, session: AsyncSession, task_id: uuid.UUID, agent_id: uuid.UUID
) -> TaskInput:
    """A task's input for its own agent, while it is delivered and not yet acknowledged (the
    acknowledgement deletes it) and for INPUT_REF_SECONDS after its last delivery."""
    await bind_org(session, ctx.org_id)
    task = await session.get(AgentTask, task_id)
    if task is None or task.org_id != ctx.org_id:
        return TaskInput(refusal="unknown")
    if task.agent_id != agent_id:
        return TaskInput(refusal="other_agent")
    fresh = task.delivered_at is not None and utcnow() - task.delivered_at <= timedelta(
        seconds=INPUT_REF_SECONDS
    )
    if task.state != DELIVERED or task.input_sealed is None or task.content_key_id is None:
        return TaskInput(refusal="gone")
    if not fresh:
        return TaskInput(refusal="gone")
    key = await org_key_by_id(session, ctx.org_id, task.content_key_id)
    return TaskInput(input=open_sealed(key, task.id, "input", task.input_sealed))
