"""Durability: the worker process dies while a run waits; a new one finishes it once, audited once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from contextlib import AbstractContextManager

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.infra.embedded.postgres import PostgresCredentials
from tests.support import (
    EXPENSE,
    audit_actions,
    blocks_process_env,
    make_org,
    running_process,
    running_stack,
    wait_for_status,
)


def worker_process(
    database_url: str, temporal_address: str, task_queue: str
) -> AbstractContextManager[subprocess.Popen[bytes]]:
    env = blocks_process_env(database_url, temporal_address, task_queue)
    return running_process([sys.executable, "-m", "blocks.cli", "worker"], env=env)


async def test_worker_killed_while_waiting_then_decided_completes_once(
    engine: AsyncEngine, temporal_env: WorkflowEnvironment, postgres: PostgresCredentials
) -> None:
    org = await make_org(engine)
    queue = f"restart-{uuid.uuid4().hex[:8]}"
    address = temporal_env.client.service_client.config.target_host
    async with (
        running_stack(
            engine=engine,
            temporal=temporal_env.client,
            database_url=postgres.url(),
            task_queue=queue,
            with_worker=False,
        ) as stack,
        stack.http() as http,
    ):
        with worker_process(postgres.url(), address, queue) as first:
            started = await http.post(
                "/v1/runs",
                json={"workflow": "expense_approval", "input": EXPENSE},
                headers=org["operator"].headers,
            )
            assert started.status_code == 201, started.text
            run_id = started.json()["id"]
            await wait_for_status(
                http,
                run_id,
                org["operator"].headers,
                status="running",
                stage="awaiting_approval",
                within=60,
            )
            first.send_signal(signal.SIGKILL)
            first.wait()

        # The decision is sent while no worker runs; it lands once a new worker picks the run up.
        decision = asyncio.create_task(
            http.post(
                f"/v1/runs/{run_id}/steps/approve/decisions",
                json={"decision": "approve"},
                headers=org["approver"].headers,
                timeout=120,
            )
        )
        await asyncio.sleep(1)
        assert not decision.done()
        with worker_process(postgres.url(), address, queue):
            response = await decision
            assert response.status_code == 200, response.text
            done = await wait_for_status(
                http, run_id, org["operator"].headers, status="completed", within=60
            )
            assert done["result"]["status"] == "approved"  # type: ignore[index]
            # A retry of the same request after the restart is the same decision, not a second one.
            again = await http.post(
                f"/v1/runs/{run_id}/steps/approve/decisions",
                json={"decision": "approve"},
                headers=org["approver"].headers,
            )
            assert again.status_code == 200, again.text

    actions = [a[0] for a in await audit_actions(engine, org.id)]
    assert actions == ["run.started", "step.opened", "step.decided", "step.closed", "run.completed"]


async def test_a_decision_no_worker_answers_in_time_is_a_503_and_a_retry_decides_once(
    engine: AsyncEngine, temporal_env: WorkflowEnvironment, postgres: PostgresCredentials
) -> None:
    org = await make_org(engine)
    queue = f"busy-{uuid.uuid4().hex[:8]}"
    address = temporal_env.client.service_client.config.target_host
    async with (
        running_stack(
            engine=engine,
            temporal=temporal_env.client,
            database_url=postgres.url(),
            task_queue=queue,
            with_worker=False,
            extra_settings={"decision_wait_seconds": 2},
        ) as stack,
        stack.http() as http,
    ):
        with worker_process(postgres.url(), address, queue) as first:
            started = await http.post(
                "/v1/runs",
                json={"workflow": "expense_approval", "input": EXPENSE},
                headers=org["operator"].headers,
            )
            assert started.status_code == 201, started.text
            run_id = started.json()["id"]
            await wait_for_status(
                http,
                run_id,
                org["operator"].headers,
                status="running",
                stage="awaiting_approval",
                within=60,
            )
            first.send_signal(signal.SIGKILL)
            first.wait()

        decide = f"/v1/runs/{run_id}/steps/approve/decisions"
        busy = await http.post(
            decide, json={"decision": "approve"}, headers=org["approver"].headers
        )
        assert busy.status_code == 503, busy.text
        assert busy.json()["code"] == "run_busy"
        assert busy.headers["Retry-After"]
        with worker_process(postgres.url(), address, queue):
            done = await wait_for_status(
                http, run_id, org["operator"].headers, status="completed", within=60
            )
            assert done["result"]["status"] == "approved"  # type: ignore[index]
            again = await http.post(
                decide, json={"decision": "approve"}, headers=org["approver"].headers
            )
            assert again.status_code == 200, again.text

    actions = [a[0] for a in await audit_actions(engine, org.id)]
    assert actions.count("step.decided") == 1
