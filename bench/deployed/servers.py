"""The run's servers and processes: started once from the main thread, every one stopped at the end.

Each child is started with `blocks.infra.embedded.supervisor.spawn` (as `blocks dev` starts its
own): it gets a signal when the driver dies however it dies, and its output goes to a log file in
the run's temporary directory. The `ExitStack` given to `start_servers` stops them in reverse.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from blocks.infra.embedded.postgres import EmbeddedPostgres, PostgresCredentials
from blocks.infra.embedded.supervisor import port_open, spawn, terminate
from blocks.infra.embedded.temporal import temporal_cli_path
from blocks.infra.migrate import upgrade_database
from blocks.infra.temporal.search_attributes import dev_server_flags
from tests.support import (
    GENEROUS_RATE_LIMITS,
    SIGNING_KEY,
    Member,
    blocks_process_env,
    free_port,
)

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
DBOS_DATABASE = "bench_dbos"
READY_WITHIN = 120.0
# Names of the processes, as the probe and the report show them.
POSTGRES, TEMPORAL = "postgres", "temporal"
BLOCKS_API, BLOCKS_WORKER = "blocks_api", "blocks_worker"
BARE_WORKER, DBOS_APP = "bare_worker", "dbos_app"


class NotReady(RuntimeError):
    """A server did not come up (or died); its log is in the run's temporary directory."""


@dataclass
class Servers:
    """Where everything listens, and the processes (by name) to watch and stop."""

    tmp: Path
    credentials: PostgresCredentials
    temporal_address: str
    blocks_url: str
    blocks_queue: str
    bare_queue: str
    dbos_url: str
    processes: dict[str, subprocess.Popen[bytes]]
    logs: dict[str, Path]

    def alive(self, name: str) -> None:
        code = self.processes[name].poll()
        if code is not None:
            raise NotReady(f"{name} exited ({code}); see {self.logs.get(name)}")


def log_tails(tmp: Path, lines: int = 40) -> dict[str, str]:
    """The last lines each child wrote (shown when the bench fails, before the directory goes)."""
    tails: dict[str, str] = {}
    for path in sorted([*(tmp / "logs").glob("*.log"), tmp / "pg" / "postgres.log"]):
        if path.exists():
            text = path.read_text(errors="replace").splitlines()[-lines:]
            if text:
                tails[path.stem] = "\n".join(text)
    return tails


def _python_env(**extra: str) -> dict[str, str]:
    """The driver's environment with this checkout first on the path (for `bench.deployed.*`)."""
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **extra}


def start_servers(tmp: Path, stack: ExitStack, say: Callable[[str], None]) -> Servers:
    """PostgreSQL (migrated, plus DBOS's database), Temporal on its SQLite file, then the four
    application processes. Returns once the servers listen; `wait_ready` waits for the apps."""
    logs_dir = tmp / "logs"
    logs_dir.mkdir(parents=True)
    logs: dict[str, Path] = {}
    processes: dict[str, subprocess.Popen[bytes]] = {}

    def child(name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        logs[name] = logs_dir / f"{name}.log"
        with logs[name].open("ab") as log:
            processes[name] = spawn(args, log=log, env=env)
        stack.callback(terminate, processes[name])

    say("starting embedded PostgreSQL, applying migrations")
    postgres = EmbeddedPostgres(tmp / "pg", port=free_port(), host=HOST)
    processes[POSTGRES] = postgres.spawn()
    logs[POSTGRES] = postgres.log_file
    stack.callback(EmbeddedPostgres.stop_server, processes[POSTGRES])
    credentials = postgres.credentials()
    upgrade_database(credentials.url(owner=True))
    postgres.create_database(credentials, DBOS_DATABASE)

    say("starting the Temporal dev server on its SQLite file")
    temporal_port = free_port()
    child(
        TEMPORAL,
        [
            temporal_cli_path(), "server", "start-dev",
            "--ip", HOST, "--port", str(temporal_port), "--headless",
            "--db-filename", str(tmp / "temporal.db"), "--log-level", "warn",
            *dev_server_flags(),
        ],
    )  # fmt: skip
    deadline = time.monotonic() + READY_WITHIN
    while not port_open(HOST, temporal_port):
        if processes[TEMPORAL].poll() is not None or time.monotonic() > deadline:
            raise NotReady(f"the Temporal dev server did not listen; see {logs[TEMPORAL]}")
        time.sleep(0.2)
    address = f"{HOST}:{temporal_port}"

    say("starting `blocks api`, `blocks worker`, the bare worker and the DBOS app")
    suffix = uuid.uuid4().hex[:8]
    blocks_queue, bare_queue = f"bench-blocks-{suffix}", f"bench-bare-{suffix}"
    api_port, dbos_port = free_port(), free_port()
    blocks_env = blocks_process_env(
        credentials.url(),
        address,
        blocks_queue,
        BLOCKS_AUDIT_SIGNING_KEY=SIGNING_KEY,
        BLOCKS_API_HOST=HOST,
        BLOCKS_API_PORT=str(api_port),
        BLOCKS_DEMO_ORG="false",
        # The driver polls runs while they park: far more requests than a person would send.
        **{f"BLOCKS_{name.upper()}": value for name, value in GENEROUS_RATE_LIMITS.items()},
    )
    blocks_cli = [sys.executable, "-m", "blocks.cli"]
    child(BLOCKS_API, [*blocks_cli, "api"], blocks_env)
    child(BLOCKS_WORKER, [*blocks_cli, "worker", "--workflows", "blocks_examples"], blocks_env)
    child(
        BARE_WORKER,
        [
            *(sys.executable, "-m", "bench.deployed.bare_worker"),
            *("--address", address, "--task-queue", bare_queue),
        ],
        _python_env(),
    )
    dbos_url = credentials.url(database=DBOS_DATABASE, owner=True)
    child(
        DBOS_APP,
        [sys.executable, "-m", "bench.deployed.dbos_app", "--port", str(dbos_port)],
        _python_env(DBOS_SYSTEM_DATABASE_URL=dbos_url),
    )
    return Servers(
        tmp=tmp,
        credentials=credentials,
        temporal_address=address,
        blocks_url=f"http://{HOST}:{api_port}",
        blocks_queue=blocks_queue,
        bare_queue=bare_queue,
        dbos_url=f"http://{HOST}:{dbos_port}",
        processes=processes,
        logs=logs,
    )


async def _until(
    servers: Servers, name: str, what: str, check: Callable[[], Awaitable[bool]]
) -> None:
    deadline = asyncio.get_running_loop().time() + READY_WITHIN
    while True:
        servers.alive(name)
        try:
            if await check():
                return
        except httpx.TransportError:
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise NotReady(f"{what} within {READY_WITHIN:.0f}s; see {servers.logs[name]}")
        await asyncio.sleep(0.1)


async def _answers(url: str) -> bool:
    async with httpx.AsyncClient(timeout=5) as http:
        return (await http.get(url)).status_code == 200


async def _polled(client: Client, queue: str) -> bool:
    described = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(namespace=client.namespace, task_queue=TaskQueue(name=queue))
    )
    return len(described.pollers) > 0


async def _published(servers: Servers, member: Member) -> bool:
    """The worker has published `expense_approval` for this run's task queue (as `blocks dev`
    waits for before it says it is running)."""
    async with httpx.AsyncClient(base_url=servers.blocks_url, timeout=5) as http:
        response = await http.get("/v1/workflows", headers=member.headers)
    if response.status_code != 200:
        return False
    return any(
        workflow["name"] == "expense_approval"
        and any(s["task_queue"] == servers.blocks_queue for s in workflow["served_by"])
        for workflow in response.json()["workflows"]
    )


async def wait_ready(
    servers: Servers, client: Client, member: Member, say: Callable[[str], None]
) -> None:
    """Every application process answers and polls its task queue (`member` reads the catalogue)."""
    began = time.monotonic()
    await _until(
        servers,
        BLOCKS_API,
        "`blocks api` answered",
        lambda: _answers(f"{servers.blocks_url}/healthz"),
    )
    await _until(
        servers, DBOS_APP, "the DBOS app answered", lambda: _answers(f"{servers.dbos_url}/healthz")
    )
    await _until(
        servers, BLOCKS_WORKER, "the catalogue was published", lambda: _published(servers, member)
    )
    await _until(
        servers,
        BLOCKS_WORKER,
        "`blocks worker` polled",
        lambda: _polled(client, servers.blocks_queue),
    )
    await _until(
        servers, BARE_WORKER, "the bare worker polled", lambda: _polled(client, servers.bare_queue)
    )
    say(f"all processes ready after {time.monotonic() - began:.1f} s more")
