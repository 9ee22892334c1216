"""Fixtures the LLM and agent tests share: the local OpenAI-compatible server, a stack whose
worker serves the LLM test workflow with that server's port allowed, and a stack with the agents'
relay serving the agent test workflow (one of each per test module)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.infra.embedded.postgres import PostgresCredentials
from tests.e2e.agent_stack import agent_stack
from tests.e2e.llm_stack import llm_stack
from tests.servers.openai_compatible import running_openai_server
from tests.support import Stack


@pytest.fixture(scope="module")
def llm_server() -> Iterator[str]:
    with running_openai_server() as base_url:
        yield base_url


@pytest.fixture(scope="module")
async def llm(
    engine: AsyncEngine,
    temporal_env: WorkflowEnvironment,
    postgres: PostgresCredentials,
    llm_server: str,
) -> AsyncIterator[Stack]:
    async with llm_stack(
        engine=engine,
        temporal=temporal_env.client,
        database_url=postgres.url(),
        llm_base_url=llm_server,
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
async def agents(
    engine: AsyncEngine, temporal_env: WorkflowEnvironment, postgres: PostgresCredentials
) -> AsyncIterator[Stack]:
    """The API with its relay and a worker serving the agent tests' workflow (AgentTotals)."""
    async with agent_stack(
        engine=engine, temporal=temporal_env.client, database_url=postgres.url()
    ) as stack:
        yield stack
