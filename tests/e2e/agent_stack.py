"""The agent tests' stack: the API (with the relay) and a worker serving the AgentTotals test
workflow; and an agent registered in an organization with a token, as an admin would make them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import Role
from blocks.infra.crypto.signing import parse_signing_key
from blocks.infra.db import session_factory
from blocks.models.agents.registry import create_agent
from blocks.models.agents.tokens import issue_agent_token
from blocks.models.approvals.catalogue import publish
from blocks.workers.main import build_worker, catalogue_entries
from tests.e2e.agent_workflows import AgentTotals
from tests.support import SIGNING_KEY, Stack, running_stack

SKILLS = ("extract-totals", "check-vendor")


def card(name: str, skills: tuple[str, ...] = SKILLS) -> dict[str, object]:
    """An A2A v1.0 agent card declaring `skills`."""
    return {
        "name": name,
        "description": f"{name}, an agent of the tests",
        "version": "1.0.0",
        "supportedInterfaces": [
            {
                "url": "https://agents.example.test/a2a",
                "protocolBinding": "JSONRPC",
                "protocolVersion": "1.0",
            }
        ],
        "capabilities": {"streaming": False},
        "defaultInputModes": ["application/json"],
        "defaultOutputModes": ["application/json"],
        "skills": [
            {"id": s, "name": s, "description": f"does {s}", "tags": ["tests"]} for s in skills
        ],
    }


@dataclass(frozen=True)
class RegisteredAgent:
    id: uuid.UUID
    name: str
    token: str


async def register_agent(
    engine: AsyncEngine,
    org_id: uuid.UUID,
    *,
    skills: tuple[str, ...] = SKILLS,
    transport: str = "relay",
) -> RegisteredAgent:
    ctx = OrgContext(
        org_id=OrgId(org_id), user_id=None, roles=(Role.ADMIN,), auth=AuthMethod.SYSTEM
    )
    name = f"agent-{uuid.uuid4().hex[:8]}"
    async with session_factory(engine)() as session, session.begin():
        agent = await create_agent(
            ctx, session, name=name, card=card(name, skills), transport=transport
        )
        _, token = await issue_agent_token(
            ctx, session, agent_id=agent.id, name="tests", skills=list(skills)
        )
    return RegisteredAgent(agent.id, name, token)


@asynccontextmanager
async def agent_stack(
    *,
    engine: AsyncEngine,
    temporal: Client,
    database_url: str,
    extra_settings: Mapping[str, Any] | None = None,
) -> AsyncIterator[Stack]:
    """The API and a worker serving AgentTotals on a task queue of their own (`extra_settings`:
    further Settings fields of the API)."""
    task_queue = f"blocks-agents-{uuid.uuid4().hex[:8]}"
    async with running_stack(
        engine=engine,
        temporal=temporal,
        database_url=database_url,
        task_queue=task_queue,
        with_worker=False,
        extra_settings=extra_settings,
    ) as stack:
        async with session_factory(engine)() as session, session.begin():
            entries = catalogue_entries([AgentTotals], task_queue=task_queue)
            await publish(session, entries, worker=f"tests@{task_queue}")
        worker = build_worker(
            temporal,
            engine,
            task_queue=task_queue,
            signer=parse_signing_key(SIGNING_KEY),
            workflows=[AgentTotals],
        )
        running = asyncio.create_task(worker.run())
        try:
            yield stack
        finally:
            await worker.shutdown()
            await running
