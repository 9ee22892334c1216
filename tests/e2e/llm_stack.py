"""The LLM tests' stack: the API (and a worker serving the LlmDraft test workflow and the
drafted_reply example, an approval gate on a model's draft) allowing the
local OpenAI-compatible server's loopback port (BLOCKS_OUTBOUND_ALLOW_PRIVATE), as an operator
would allow a model server on the LAN."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from blocks_examples.drafted_reply import DraftedReply
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from blocks.infra.crypto.signing import parse_signing_key
from blocks.infra.db import session_factory
from blocks.infra.integrations.outbound_http import OutboundPolicy
from blocks.models.approvals.catalogue import publish
from blocks.workers.main import build_worker, catalogue_entries
from tests.e2e.llm_workflows import LlmDraft
from tests.support import SIGNING_KEY, Stack, running_stack


def allowed_pair(base_url: str) -> str:
    """The `host:port` of the local server, as BLOCKS_OUTBOUND_ALLOW_PRIVATE names it."""
    parts = urlsplit(base_url)
    return f"{parts.hostname}:{parts.port}"


@asynccontextmanager
async def llm_stack(
    *,
    engine: AsyncEngine,
    temporal: Client,
    database_url: str,
    llm_base_url: str,
    with_worker: bool = True,
) -> AsyncIterator[Stack]:
    """The API (and a worker serving LlmDraft) allowing the local model server's port."""
    task_queue = f"blocks-llm-{uuid.uuid4().hex[:8]}"
    pair = allowed_pair(llm_base_url)
    async with running_stack(
        engine=engine,
        temporal=temporal,
        database_url=database_url,
        task_queue=task_queue,
        with_worker=False,
        extra_settings={"outbound_allow_private": pair},
    ) as stack:
        if not with_worker:
            yield stack
            return
        async with session_factory(engine)() as session, session.begin():
            entries = catalogue_entries([LlmDraft, DraftedReply], task_queue=task_queue)
            await publish(session, entries, worker=f"tests@{task_queue}")
        worker = build_worker(
            temporal,
            engine,
            task_queue=task_queue,
            signer=parse_signing_key(SIGNING_KEY),
            workflows=[LlmDraft, DraftedReply],
            outbound_policy=OutboundPolicy.from_settings(stack.settings),
        )
        running = asyncio.create_task(worker.run())
        try:
            yield stack
        finally:
            await worker.shutdown()
            await running
