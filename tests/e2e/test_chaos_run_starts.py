"""Chaos: the API process is SIGKILLed during a burst of 50 starts. After the reconciler's bound
every run is started (and completes when approved) or abandoned with its audit event; none is
left `starting`; no run is recorded twice; the organization's chain verifies."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from collections import Counter

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.infra.db import bind_org, session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.workers.run_start_reconciler import RunStartReconciler
from tests.support import (
    EXPENSE,
    GENEROUS_RATE_LIMITS,
    MASTER_KEYS,
    SIGNING_KEY,
    audit_actions,
    blocks_process_env,
    free_port,
    make_org,
    publish_examples,
    running_stack,
    wait_for_status,
)

BURST = 50
BOUND_SECONDS = 2.0


def _api_process(
    database_url: str, temporal_address: str, task_queue: str, port: int
) -> subprocess.Popen[bytes]:
    env = blocks_process_env(
        database_url,
        temporal_address,
        task_queue,
        BLOCKS_MASTER_KEYS=MASTER_KEYS,
        BLOCKS_AUDIT_SIGNING_KEY=SIGNING_KEY,
        BLOCKS_API_PORT=str(port),
        BLOCKS_DEMO_ORG="false",
        **{f"BLOCKS_{name.upper()}": value for name, value in GENEROUS_RATE_LIMITS.items()},
    )
    return subprocess.Popen([sys.executable, "-m", "blocks.cli", "api"], env=env)


async def _wait_ready(base_url: str, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(base_url=base_url) as http:
        for _ in range(600):
            assert process.poll() is None, "the API process exited"
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("the API process never answered")


async def _states(engine: AsyncEngine, org_id: uuid.UUID) -> dict[str, str]:
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org_id)
        rows = await session.exec(text("SELECT id, start_state FROM runs"))  # type: ignore[call-overload]
        return {str(r[0]): str(r[1]) for r in rows.all()}


async def _run_events(engine: AsyncEngine, org_id: uuid.UUID) -> Counter[tuple[str, str]]:
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org_id)
        rows = await session.exec(  # type: ignore[call-overload]
            text("SELECT action, run_id FROM audit_events WHERE run_id IS NOT NULL")
        )
        return Counter((str(r[0]), str(r[1])) for r in rows.all())


async def test_api_killed_during_a_burst_of_starts_leaves_no_run_unsettled(
    engine: AsyncEngine, temporal_env: WorkflowEnvironment, postgres: PostgresCredentials
) -> None:
    org = await make_org(engine)
    queue = f"chaos-{uuid.uuid4().hex[:8]}"
    address = temporal_env.client.service_client.config.target_host
    port = free_port()
    # The worker that settles these runs later serves this queue: the catalogue says so now.
    await publish_examples(engine, queue)
    victim = _api_process(postgres.url(), address, queue, port)
    answered: dict[str, str] = {}
    try:
        await _wait_ready(f"http://127.0.0.1:{port}", victim)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:

            async def start(n: int) -> None:
                try:
                    response = await http.post(
                        "/v1/runs",
                        json={"workflow": "expense_approval", "input": EXPENSE},
                        headers={**org["operator"].headers, "Idempotency-Key": f"chaos-{n}"},
                    )
                except httpx.TransportError:
                    return  # the process died under this request: no answer
                if response.status_code == 201:
                    answered[f"chaos-{n}"] = response.json()["id"]

            burst = [asyncio.create_task(start(n)) for n in range(BURST)]
            # Kill once some starts have been answered and others are in flight: rows exist
            # whose answer has not come back.
            for _ in range(1000):
                if len(answered) >= 5 and len(await _states(engine, org.id)) >= len(answered) + 3:
                    break
                await asyncio.sleep(0.005)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            await asyncio.gather(*burst)
    finally:
        if victim.poll() is None:
            victim.kill()
        victim.wait()
    assert answered, "the API was killed before it answered anything; the test proved nothing"
    assert len(await _states(engine, org.id)) > len(answered), "no start was interrupted"

    async with running_stack(
        engine=engine, temporal=temporal_env.client, database_url=postgres.url(), task_queue=queue
    ) as stack:
        await asyncio.sleep(BOUND_SECONDS + 0.2)
        reconciler = RunStartReconciler(
            session_factory(engine),
            temporal_env.client,
            bound_seconds=BOUND_SECONDS,
            interval_seconds=0.1,
        )
        await reconciler.reconcile_once()
        states = await _states(engine, org.id)
        assert states, "no run row was made"
        assert "starting" not in states.values(), states
        assert set(states.values()) <= {"started", "abandoned"}
        # Every answered start is a started run.
        assert all(states[run_id] == "started" for run_id in answered.values())

        async with stack.http() as http:
            for run_id, state in states.items():
                if state != "started":
                    continue
                await wait_for_status(
                    http,
                    run_id,
                    org["operator"].headers,
                    status="running",
                    stage="awaiting_approval",
                    within=60,
                )
                decided = await http.post(
                    f"/v1/runs/{run_id}/steps/approve/decisions",
                    json={"decision": "approve"},
                    headers=org["approver"].headers,
                )
                assert decided.status_code == 200, decided.text
            for run_id, state in states.items():
                if state == "started":
                    await wait_for_status(
                        http, run_id, org["operator"].headers, status="completed", within=60
                    )
            verified = await http.get("/v1/audit/verify", headers=org["auditor"].headers)
        assert verified.status_code == 200, verified.text
        assert verified.json()["ok"] is True, verified.json()

    events = await _run_events(engine, org.id)
    for run_id, state in states.items():
        if state == "started":
            assert events[("run.started", run_id)] == 1, run_id
            assert events[("run.completed", run_id)] == 1, run_id
            assert events[("run.start_abandoned", run_id)] == 0, run_id
        else:
            assert events[("run.start_abandoned", run_id)] == 1, run_id
            assert events[("run.started", run_id)] == 0, run_id
    assert all(count == 1 for count in events.values()), events.most_common(3)
    assert await audit_actions(engine, org.id)
