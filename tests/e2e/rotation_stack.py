"""The master-key rotation tests' deployment: `blocks api` and `blocks worker` processes on one
database and Temporal, started anew for each master key configuration, and what the tests do
through them (runs that park and are decided, two-factor sign-in, `blocks keys`, the codec)."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pyotp
from google.protobuf import json_format
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from blocks.api.identity.sessions import SESSION_COOKIE
from blocks.infra.crypto.passwords import hash_password
from tests.e2e.llm_stack import allowed_pair
from tests.support import (
    GENEROUS_RATE_LIMITS,
    SIGNING_KEY,
    Org,
    blocks_process_env,
    free_port,
    history_payloads,
    run_sql,
    running_process,
    start_test_session,
    wait_for_status,
)

PASSWORD = "correct horse battery staple violet quarry"
PUBLIC_URL = "https://blocks.test"


@dataclass
class Deployment:
    """What every stage's processes share: the database, Temporal, the queue, the model server."""

    database_url: str
    temporal: Client
    task_queue: str
    llm_server: str

    def env(self, master_spec: str, **extra: str) -> dict[str, str]:
        address = self.temporal.service_client.config.target_host
        return blocks_process_env(
            self.database_url,
            address,
            self.task_queue,
            BLOCKS_MASTER_KEYS=master_spec,
            BLOCKS_AUDIT_SIGNING_KEY=SIGNING_KEY,
            BLOCKS_DEMO_ORG="false",
            BLOCKS_PUBLIC_URL=PUBLIC_URL,
            BLOCKS_OUTBOUND_ALLOW_PRIVATE=allowed_pair(self.llm_server),
            # A table as wide as its rows: `blocks keys status` stays one line per key.
            COLUMNS="200",
            **{f"BLOCKS_{name.upper()}": value for name, value in GENEROUS_RATE_LIMITS.items()},
            **extra,
        )

    def cli(self, master_spec: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "blocks.cli", *args],
            env=self.env(master_spec),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@dataclass
class Processes:
    http: httpx.AsyncClient
    pids: tuple[int, int]


@asynccontextmanager
async def processes(deployment: Deployment, master_spec: str) -> AsyncIterator[Processes]:
    """A new `blocks api` and `blocks worker` on `master_spec`, stopped (SIGTERM) at the end."""
    port = free_port()
    env = deployment.env(master_spec, BLOCKS_API_PORT=str(port))
    with (
        running_process([sys.executable, "-m", "blocks.cli", "api"], env=env) as api,
        running_process([sys.executable, "-m", "blocks.cli", "worker"], env=env) as worker,
    ):
        base_url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
            for _ in range(1200):
                assert api.poll() is None, "the API process exited"
                assert worker.poll() is None, "the worker process exited"
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the API process never answered")
            yield Processes(http, (api.pid, worker.pid))
        for process in (api, worker):
            process.terminate()
        for process in (api, worker):
            await asyncio.to_thread(process.wait, 30)


async def start(http: httpx.AsyncClient, org: Org, workflow: str, run_input: Any) -> str:
    started = await http.post(
        "/v1/runs", json={"workflow": workflow, "input": run_input}, headers=org["operator"].headers
    )
    assert started.status_code == 201, started.text
    return str(started.json()["id"])


async def draft_waiting(http: httpx.AsyncClient, org: Org, run_id: str) -> dict[str, Any]:
    """The drafted_reply run once its review step waits, as the approver reads it."""
    deadline = asyncio.get_running_loop().time() + 90
    while True:
        answer = await http.get(f"/v1/runs/{run_id}", headers=org["approver"].headers)
        if answer.status_code == 200 and answer.json()["pending_steps"]:
            return dict(answer.json())
        assert answer.status_code in (200, 503), answer.text
        assert answer.json().get("status") not in ("failed", "completed"), answer.text
        assert asyncio.get_running_loop().time() < deadline, answer.text
        await asyncio.sleep(0.1)


async def decide(
    http: httpx.AsyncClient, org: Org, run_id: str, step: str, decision: str
) -> dict[str, Any]:
    """Decide a step as the approver (a 503 while the new worker starts is retried, as a client
    would) and wait for the run to complete; its last body."""
    for _ in range(10):
        decided = await http.post(
            f"/v1/runs/{run_id}/steps/{step}/decisions",
            json={"decision": decision},
            headers=org["approver"].headers,
        )
        if decided.status_code != 503:
            break
        await asyncio.sleep(1)
    assert decided.status_code == 200, decided.text
    return await wait_for_status(
        http, run_id, org["operator"].headers, status="completed", within=90
    )


async def history_decodes(
    http: httpx.AsyncClient, temporal: Client, org: Org, run_id: str, marker: str
) -> None:
    """Every payload of the run's Temporal history, sealed before and after the rotation, decodes
    through the codec endpoint; the input's marker is among them."""
    history = await temporal.get_workflow_handle(f"run-{run_id}").fetch_history()
    payloads = [p for event in history.events for p in history_payloads(event)]
    assert not any(marker.encode() in p.data for p in payloads)
    decoded = await http.post(
        "/v1/codec/decode",
        json={"payloads": [json_format.MessageToDict(p) for p in payloads]},
        headers=org["auditor"].headers,
    )
    assert decoded.status_code == 200, decoded.text
    plain = b"".join(base64.b64decode(p.get("data", "")) for p in decoded.json()["payloads"])
    assert marker.encode() in plain


async def enable_two_factor(
    http: httpx.AsyncClient, engine: AsyncEngine, org: Org, name: str
) -> tuple[dict[str, str], pyotp.TOTP]:
    """Two-factor sign-in turned on for a member (its TOTP secret sealed under the master key):
    their browser session's headers and their authenticator."""
    member = org[name]
    await run_sql(
        engine,
        "UPDATE users SET password_hash = :hash WHERE id = :id",
        hash=hash_password(PASSWORD),
        id=member.user_id,
    )
    token = await start_test_session(engine, member.user_id, org.id)
    headers = {"Cookie": f"{SESSION_COOKIE}={token}", "Origin": PUBLIC_URL}
    setup = await http.post("/v1/me/2fa/setup", json={"password": PASSWORD}, headers=headers)
    assert setup.status_code == 200, setup.text
    totp = pyotp.TOTP(setup.json()["secret"])
    enabled = await http.post("/v1/me/2fa/enable", json={"code": totp.now()}, headers=headers)
    assert enabled.status_code == 200, enabled.text
    return headers, totp


def status_rows(output: str) -> dict[str, list[str]]:
    """`blocks keys status`'s table: key id -> its cells."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").split("│")]
        if len(cells) >= 6 and cells[0] in ("A", "B"):
            rows[cells[0]] = cells
    return rows
