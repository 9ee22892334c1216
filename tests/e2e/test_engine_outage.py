"""Temporal unreachable: the API still starts, reads and starts that need the engine answer 503
problem+json with Retry-After, /readyz names the engine, and what needs only PostgreSQL serves.
When Temporal comes up, the same API serves again, and the interrupted start completes with a
retry of its Idempotency-Key."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from blocks.core.approvals.search_attributes import ALL_KEYS
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.infra.embedded.temporal import temporal_cli_path
from tests.support import DATA_CONVERTER, EXPENSE, audit_actions, free_port, make_org, running_stack


async def test_engine_down_answers_503_and_leaves_no_half_started_run(
    engine: AsyncEngine, postgres: PostgresCredentials
) -> None:
    # A lazy client, as the API makes its own: nothing listens on this port.
    port = free_port()
    unreachable = await Client.connect(
        f"127.0.0.1:{port}", data_converter=DATA_CONVERTER, lazy=True
    )
    org = await make_org(engine)
    operator = org["operator"].headers
    async with (
        running_stack(
            engine=engine,
            temporal=unreachable,
            database_url=postgres.url(),
            task_queue=f"down-{uuid.uuid4().hex[:8]}",
            with_worker=False,
        ) as stack,
        stack.http() as http,
    ):
        listed = await http.get("/v1/runs", headers=operator)
        started = await http.post(
            "/v1/runs",
            json={"workflow": "expense_approval", "input": EXPENSE},
            headers={**operator, "Idempotency-Key": "while-down"},
        )
        ready = await http.get("/readyz")
        events = await http.get("/v1/audit-events", headers=org["auditor"].headers)
        for answer in (listed, started):
            assert answer.status_code == 503, answer.text
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["code"] == "engine_unavailable"
            assert int(answer.headers["Retry-After"]) > 0
        assert ready.status_code == 503
        assert ready.json()["checks"]["postgres"] == "ok"
        assert ready.json()["checks"]["temporal"] != "ok"
        # The audit log needs no workflow engine.
        assert events.status_code == 200
        # The start is neither recorded as started nor lost: its row waits, `starting`, for a
        # retry with the same key or for the reconciler.
        assert "run.started" not in [a[0] for a in await audit_actions(engine, org.id)]

        # Temporal comes up where the API expects it; nothing is restarted on the API's side.
        engine_up = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_cli_path(),
            port=port,
            search_attributes=ALL_KEYS,
            data_converter=DATA_CONVERTER,
        )
        try:
            # The API's client reconnects on its own; a client retries on 503 as Retry-After says.
            for _ in range(100):
                if (await http.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            retried = await http.post(
                "/v1/runs",
                json={"workflow": "expense_approval", "input": EXPENSE},
                headers={**operator, "Idempotency-Key": "while-down"},
                timeout=60,
            )
            assert retried.status_code == 200, retried.text  # the same run, now started
            assert retried.json()["id"] == started_row_id(started, retried)
            assert retried.json()["status"] == "running"
            assert (await http.get("/v1/runs", headers=operator)).status_code == 200
            assert (await http.get("/readyz")).status_code == 200
            # No worker serves this queue: the run's steps cannot be read, and the API says so
            # instead of waiting on a query nobody answers.
            unread = await http.get(f"/v1/runs/{retried.json()['id']}", headers=operator)
            assert unread.status_code == 503, unread.text
            assert unread.json()["code"] == "worker_unavailable"
        finally:
            await engine_up.shutdown()


def started_row_id(first: httpx.Response, retry: httpx.Response) -> str:
    """The first answer was a 503 with no body to name the run; the retry names it."""
    assert first.status_code == 503
    return str(retry.json()["id"])
