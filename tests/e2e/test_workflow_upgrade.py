"""Upgrading a workflow while its runs wait: runs of v1 parked on the manager's step, the worker
replaced by v2 (a second review behind `workflow.patched`); the old runs finish by v1's logic, a
new run by v2's, each recorded with its version; `blocks workflows check-replay` passes v2 against
those histories and fails v3 (two activities swapped without a patch), naming the run."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from blocks.infra.db import bind_org, session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from tests.authors import (
    ACME,
    ACME_MODULE,
    acme_imported,
    author_env,
    author_path,
    author_worker,
    wait_until_served,
)
from tests.support import Org, make_org, running_stack, wait_for_status


async def _start(http: httpx.AsyncClient, org: Org, item: str) -> str:
    started = await http.post(
        "/v1/runs",
        json={"workflow": ACME, "input": {"item": item, "amount": "80"}},
        headers=org["operator"].headers,
    )
    assert started.status_code == 201, started.text
    return str(started.json()["id"])


async def _waiting_on(http: httpx.AsyncClient, org: Org, run_id: str) -> list[str]:
    """The run's pending step ids once it waits for a decision."""
    body = await wait_for_status(
        http,
        run_id,
        org["operator"].headers,
        status="running",
        stage="awaiting_approval",
        within=60,
    )
    return [s["step_id"] for s in body["pending_steps"]]  # type: ignore[attr-defined]


async def _decide(http: httpx.AsyncClient, org: Org, who: str, run_id: str, step: str) -> None:
    decided = await http.post(
        f"/v1/runs/{run_id}/steps/{step}/decisions",
        json={"decision": "approve"},
        headers=org[who].headers,
        timeout=120,
    )
    assert decided.status_code == 200, decided.text


async def _started_version(http: httpx.AsyncClient, org: Org, run_id: str) -> Any:
    listed = await http.get(f"/v1/runs/{run_id}/audit-events", headers=org["auditor"].headers)
    assert listed.status_code == 200, listed.text
    [started] = [e for e in listed.json()["events"] if e["action"] == "run.started"]
    return started["data"]["workflow_version"]


async def _row_versions(engine: AsyncEngine, org: Org) -> dict[str, str | None]:
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org.id)
        rows = await session.exec(  # type: ignore[call-overload]
            text("SELECT id, workflow_version FROM runs")
        )
        return {str(r[0]): r[1] for r in rows.all()}


async def _until_listed_closed(client: Client, run_ids: list[str], within: float = 30) -> None:
    """Visibility catches up with history asynchronously: wait until check-replay would see
    every one of these runs as closed."""
    wanted = {f"run-{r}" for r in run_ids}
    deadline = asyncio.get_running_loop().time() + within
    while True:
        query = f'WorkflowType = "{ACME}" AND ExecutionStatus != "Running"'
        seen = {w.id async for w in client.list_workflows(query)}
        if wanted <= seen:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"runs not listed as closed: {sorted(wanted - seen)}")
        await asyncio.sleep(0.2)


async def _check_replay(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "blocks.cli",
        "workflows",
        "check-replay",
        *args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=180)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_runs_parked_on_v1_finish_by_v1_after_an_upgrade_and_replay_is_checked(
    engine: AsyncEngine, temporal_env: WorkflowEnvironment, postgres: PostgresCredentials
) -> None:
    org = await make_org(engine)
    queue = f"acme-upgrade-{uuid.uuid4().hex[:8]}"
    address = temporal_env.client.service_client.config.target_host
    operator = org["operator"].headers
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
        with author_worker(postgres.url(), address, queue, version=1) as v1:
            await wait_until_served(http, operator, v1, task_queue=queue, version="1")
            old = [await _start(http, org, "Chair"), await _start(http, org, "Lamp")]
            for run_id in old:
                assert await _waiting_on(http, org, run_id) == ["manager"]
            v1.send_signal(signal.SIGKILL)
            v1.wait()

        with author_worker(postgres.url(), address, queue, version=2) as v2:
            entry = await wait_until_served(http, operator, v2, task_queue=queue, version="2")
            assert entry["version"] == "2"
            new = await _start(http, org, "Desk")
            assert await _waiting_on(http, org, new) == ["manager"]

            for run_id in [*old, new]:
                await _decide(http, org, "approver", run_id, "manager")
            # The parked runs replay v1's history on v2's code: `workflow.patched` is False for
            # them, so they end after the one step v1 had.
            for run_id in old:
                done = await wait_for_status(http, run_id, operator, status="completed", within=60)
                assert done["result"]["steps"] == ["manager"]  # type: ignore[index]
            # The new run took v2's path: a second review, by someone other than the manager.
            assert await _waiting_on(http, org, new) == ["second_review"]
            await _decide(http, org, "approver2", new, "second_review")
            done = await wait_for_status(http, new, operator, status="completed", within=60)
            assert done["result"]["steps"] == ["manager", "second_review"]  # type: ignore[index]

            # Each run is recorded with the version the catalogue named when it started.
            assert await _row_versions(engine, org) == {old[0]: "1", old[1]: "1", new: "2"}
            for run_id in old:
                assert await _started_version(http, org, run_id) == "1"
            assert await _started_version(http, org, new) == "2"

    await _until_listed_closed(temporal_env.client, [*old, new])

    def env(version: int) -> dict[str, str]:
        return author_env(postgres.url(), address, queue, [author_path(version)])

    status, out, err = await _check_replay(env(2), "--workflows", ACME_MODULE, "--limit", "50")
    assert status == 0, out + err
    for run_id in [*old, new]:
        assert f"ok      {ACME}  run {run_id}" in out
    assert "FAILED" not in out

    status, out, err = await _check_replay(env(3), "--workflows", ACME_MODULE, "--workflow", ACME)
    assert status == 1, out + err
    failed = {
        line.split("  run ")[1].split(":")[0]: line
        for line in out.splitlines()
        if line.startswith("FAILED")
    }
    assert {*old, new} <= set(failed), out
    # The first error, as the SDK words it: which command the new code issued instead.
    assert (
        "Nondeterminism error: Activity type of scheduled event 'acme.price_check' does not match"
        " activity type of activity command 'acme.reserve_budget'"
    ) in failed[old[0]]

    # Nothing to load is told apart from a failed replay.
    status, _, err = await _check_replay(env(3), "--workflows", "acme_nowhere")
    assert status == 2
    assert "acme_nowhere" in err

    assert not acme_imported()
