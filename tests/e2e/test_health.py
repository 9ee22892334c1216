"""Liveness and readiness: ready only when both PostgreSQL and Temporal answer."""

from __future__ import annotations

import uuid

from temporalio.testing import WorkflowEnvironment

from blocks.infra.db import create_engine
from tests.support import Stack, free_port, running_stack


async def test_ready_when_both_answer(stack: Stack) -> None:
    async with stack.http() as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"postgres": "ok", "temporal": "ok"}}


async def test_not_ready_when_postgres_is_down(temporal_env: WorkflowEnvironment) -> None:
    dead_url = f"postgresql://blocks:x@127.0.0.1:{free_port()}/blocks"
    dead_engine = create_engine(dead_url, pool_size=1)
    try:
        async with (
            running_stack(
                engine=dead_engine,
                temporal=temporal_env.client,
                database_url=dead_url,
                task_queue=f"health-{uuid.uuid4().hex[:6]}",
                with_worker=False,
                publish=False,
            ) as stack,
            stack.http() as http,
        ):
            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
    finally:
        await dead_engine.dispose()
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["temporal"] == "ok"
    assert body["checks"]["postgres"].startswith("error")
