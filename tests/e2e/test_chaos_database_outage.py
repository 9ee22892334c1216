"""Chaos: PostgreSQL stopped for 10 s. Requests get 503 problem+json with Retry-After and
/readyz names the database; then everything recovers without restarting the API or the worker,
and no accepted decision is lost.

This test stops its own PostgreSQL server (the session's shared one keeps serving other tests).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from blocks.infra.db import create_engine
from blocks.infra.embedded.postgres import EmbeddedPostgres
from blocks.infra.migrate import upgrade_database
from tests.support import (
    EXPENSE,
    audit_actions,
    free_port,
    make_org,
    running_stack,
    wait_for_status,
)

OUTAGE_SECONDS = 10.0


async def test_database_outage_answers_503_then_recovers_losing_nothing(
    tmp_path: Path, temporal_env: WorkflowEnvironment
) -> None:
    server = EmbeddedPostgres(tmp_path / "pg", port=free_port())
    credentials = server.start()
    upgrade_database(credentials.url(owner=True))
    engine = create_engine(credentials.url(), pool_size=5)
    try:
        org = await make_org(engine)
        operator, approver = org["operator"].headers, org["approver"].headers
        async with (
            running_stack(
                engine=engine,
                temporal=temporal_env.client,
                database_url=credentials.url(),
                task_queue=f"outage-{uuid.uuid4().hex[:8]}",
            ) as stack,
            stack.http() as http,
        ):
            runs = []
            for _ in range(2):
                started = await http.post(
                    "/v1/runs",
                    json={"workflow": "expense_approval", "input": EXPENSE},
                    headers=operator,
                )
                assert started.status_code == 201, started.text
                runs.append(started.json()["id"])
            for run_id in runs:
                await wait_for_status(
                    http, run_id, operator, status="running", stage="awaiting_approval"
                )
            # Accepted just before the outage: the workflow's audit write after it meets the
            # stopped database and must be retried, not lost.
            accepted = await http.post(
                f"/v1/runs/{runs[0]}/steps/approve/decisions",
                json={"decision": "approve"},
                headers=approver,
            )
            assert accepted.status_code == 200, accepted.text

            server.stop()
            down_since = time.monotonic()
            read = await http.get(f"/v1/runs/{runs[1]}", headers=operator)
            decide = await http.post(
                f"/v1/runs/{runs[1]}/steps/approve/decisions",
                json={"decision": "approve"},
                headers=approver,
            )
            start = await http.post(
                "/v1/runs",
                json={"workflow": "expense_approval", "input": EXPENSE},
                headers=operator,
            )
            ready = await http.get("/readyz")
            for answer in (read, decide, start):
                assert answer.status_code == 503, answer.text
                assert answer.headers["content-type"] == "application/problem+json"
                assert answer.json()["code"] == "database_unavailable"
                assert int(answer.headers["Retry-After"]) > 0
            assert ready.status_code == 503
            assert ready.json()["checks"]["postgres"] != "ok"
            assert ready.json()["checks"]["temporal"] == "ok"
            assert "Retry-After" in ready.headers
            await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_since)))
            server.start()

            # Same API, same worker: they reconnect by themselves.
            for _ in range(300):
                if (await http.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the API never became ready again")
            await wait_for_status(http, runs[0], operator, status="completed", within=60)
            decided = await http.post(
                f"/v1/runs/{runs[1]}/steps/approve/decisions",
                json={"decision": "approve"},
                headers=approver,
            )
            assert decided.status_code == 200, decided.text
            await wait_for_status(http, runs[1], operator, status="completed", within=60)
            verified = await http.get("/v1/audit/verify", headers=org["auditor"].headers)
            assert verified.json()["ok"] is True, verified.json()
        actions = [a[0] for a in await audit_actions(engine, org.id)]
        per_run = ["run.started", "step.opened", "step.decided", "step.closed", "run.completed"]
        for action in per_run:
            assert actions.count(action) == 2, (action, actions)
    finally:
        await engine.dispose()
        server.stop()
