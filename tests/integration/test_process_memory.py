"""What `blocks api` and `blocks worker` load and hold at once.

Each loads only its own side, and neither loads the libraries loaded on first use (zxcvbn's word
lists, aiohttp under Slack's client; infra.lazy_modules): each process is started as a deployment
starts it (`python -m blocks.cli ...`) with `-X importtime`, which writes every module it imports
to stderr, and the test reads that list once the process serves. A worker works on Blocks' number
of workflow tasks at once, not the SDK's 100. Memory itself is measured by `python -m
bench.deployed`: RSS depends on the machine, so no test asserts it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from blocks import __version__
from blocks.infra.crypto.signing import parse_signing_key
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.infra.settings import WORKER_TASKS_DEFAULT, Settings
from blocks.workers.main import build_id_of, build_worker
from tests.support import EXAMPLE_WORKFLOWS, SIGNING_KEY, blocks_process_env, free_port, make_org

READY_WITHIN = 90.0
# Loaded on first use only: no process loads them by starting and serving.
LOADED_ON_FIRST_USE = (
    "zxcvbn",
    "aiohttp",
    "slack_sdk.web.async_client",
    "openai",
    # Single sign-on: pysaml2's XML schemas, dnspython's resolver (infra/identity).
    "saml2.client",
    "dns.resolver",
)
# (The API serves the agents' relay, a WebSocket: `websockets` is its own side now.)
API_NEVER = ("blocks.workers", "blocks.cli.worker", "temporalio.worker")
WORKER_NEVER = ("blocks.api", "blocks.cli.api", "fastapi", "starlette", "uvicorn")


@contextmanager
def blocks_process(
    command: Sequence[str], env: Mapping[str, str], imports: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -X importtime -m blocks.cli <command>`, its stderr (the import list) in `imports`;
    stopped at the end as a supervisor stops it."""
    with imports.open("wb") as log:
        args = [sys.executable, "-X", "importtime", "-m", "blocks.cli", *command]
        process = subprocess.Popen(args, env=dict(env), stderr=log)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def imported(imports: Path) -> set[str]:
    """The modules a process imported, from its `-X importtime` lines (`... | cumulative | name`)."""
    names: set[str] = set()
    for line in imports.read_text(errors="replace").splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip())
    names.discard("package")  # the header line
    return names


def among(names: set[str], packages: Sequence[str]) -> list[str]:
    """The names that are one of `packages` or inside one."""
    return sorted(n for n in names if any(n == p or n.startswith(p + ".") for p in packages))


async def until(
    process: subprocess.Popen[bytes], what: str, check: Callable[[], Awaitable[bool]]
) -> None:
    deadline = time.monotonic() + READY_WITHIN
    while True:
        assert process.poll() is None, f"the process exited ({process.returncode}) before {what}"
        try:
            if await check():
                return
        # Not answering yet: a refused connection, or the frontend cancelling a call under load
        # (seen in CI as RPCError "operation was canceled" while the worker was starting).
        except (httpx.TransportError, RPCError):
            pass
        assert time.monotonic() < deadline, f"not {what} within {READY_WITHIN:.0f} s"
        await asyncio.sleep(0.2)


async def test_the_api_and_the_worker_load_only_their_own_side(
    tmp_path: Path,
    engine: AsyncEngine,
    temporal_env: WorkflowEnvironment,
    postgres: PostgresCredentials,
) -> None:
    org = await make_org(engine)
    client: Client = temporal_env.client
    queue = f"memory-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = blocks_process_env(
        postgres.url(),
        client.service_client.config.target_host,
        queue,
        BLOCKS_AUDIT_SIGNING_KEY=SIGNING_KEY,
        BLOCKS_API_PORT=str(port),
        BLOCKS_DEMO_ORG="false",
    )
    api_imports, worker_imports = tmp_path / "api.imports", tmp_path / "worker.imports"

    async def answers() -> bool:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            # A member's request: the key, the organization and the catalogue are read.
            response = await http.get("/v1/workflows", headers=org["operator"].headers)
            return response.status_code == 200

    async def polled() -> bool:
        described = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(namespace=client.namespace, task_queue=TaskQueue(name=queue)),
            timeout=timedelta(seconds=10),
        )
        return len(described.pollers) > 0

    with (
        blocks_process(["api"], env, api_imports) as api,
        blocks_process(["worker"], env, worker_imports) as worker,
    ):
        await until(api, "`blocks api` answered", answers)
        await until(worker, "`blocks worker` polled its task queue", polled)

    api_loaded, worker_loaded = imported(api_imports), imported(worker_imports)
    # The list is read right: each process's own side is on it.
    assert {"blocks.api.app", "temporalio.client"} <= api_loaded
    assert {"blocks.workers.main", "temporalio.worker"} <= worker_loaded
    assert among(api_loaded, API_NEVER) == []
    assert among(worker_loaded, WORKER_NEVER) == []
    # The worker's build id is Blocks' own: the SDK's would load every lazily loaded module.
    assert among(api_loaded, LOADED_ON_FIRST_USE) == []
    assert among(worker_loaded, LOADED_ON_FIRST_USE) == []


def a_worker(temporal_env: WorkflowEnvironment, engine: AsyncEngine, **options: int) -> Worker:
    return build_worker(
        temporal_env.client,
        engine,
        # Each its own queue: the SDK refuses two workers of one queue in one process.
        task_queue=f"memory-{uuid.uuid4().hex[:8]}",
        signer=parse_signing_key(SIGNING_KEY),
        workflows=EXAMPLE_WORKFLOWS,
        **options,
    )


def test_the_tasks_a_worker_runs_at_once_are_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("BLOCKS_")]:
        monkeypatch.delenv(name)
    assert Settings().worker_max_concurrent_workflow_tasks == WORKER_TASKS_DEFAULT
    monkeypatch.setenv("BLOCKS_WORKER_MAX_CONCURRENT_WORKFLOW_TASKS", "8")
    assert Settings().worker_max_concurrent_workflow_tasks == 8
    monkeypatch.setenv("BLOCKS_WORKER_MAX_CONCURRENT_WORKFLOW_TASKS", "1")  # the SDK's floor is 2
    with pytest.raises(ValidationError, match="worker_max_concurrent_workflow_tasks"):
        Settings()


async def test_a_worker_runs_blocks_number_of_tasks_at_once_not_the_sdks(
    temporal_env: WorkflowEnvironment, engine: AsyncEngine
) -> None:
    config = a_worker(temporal_env, engine).config()
    assert config.get("max_concurrent_workflow_tasks") == WORKER_TASKS_DEFAULT < 100
    assert config.get("max_concurrent_local_activities") == WORKER_TASKS_DEFAULT
    config = a_worker(temporal_env, engine, max_concurrent_workflow_tasks=7).config()
    assert config.get("max_concurrent_workflow_tasks") == 7
    assert config.get("max_concurrent_local_activities") == 7


async def test_a_worker_names_its_build_by_blocks_version_and_the_authors_code(
    temporal_env: WorkflowEnvironment, engine: AsyncEngine
) -> None:
    build_id = a_worker(temporal_env, engine).config().get("build_id")
    assert build_id == build_id_of(EXAMPLE_WORKFLOWS)
    assert build_id.startswith(f"blocks-{__version__}-")
    # Another set of author code is another build.
    assert build_id_of(EXAMPLE_WORKFLOWS[:1]) != build_id_of(EXAMPLE_WORKFLOWS)
