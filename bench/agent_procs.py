"""The agent relay benchmark's processes: `blocks api` (the relay) and agents run with the agent
SDK's `blocks agent run`, each a process of its own, its output in the run's directory, stopped on
the way out (also when the bench fails)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path

import httpx
import psutil

from blocks.infra.embedded.supervisor import spawn, terminate
from tests.support import GENEROUS_RATE_LIMITS, SIGNING_KEY, blocks_process_env, free_port

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
READY_WITHIN = 60.0
AGENT_TARGET = "bench.agent_echo:agent"


class BenchError(RuntimeError):
    """A run did not end as the benchmark expects, or a process did not come up."""


def _child(
    stack: ExitStack, tmp: Path, name: str, args: list[str], env: dict[str, str]
) -> psutil.Process:
    log = tmp / f"{name}.log"
    with log.open("ab") as out:
        process = spawn(args, log=out, env=env)
    stack.callback(terminate, process)
    return psutil.Process(process.pid)


async def wait_until(
    what: str, process: psutil.Process, log: Path, check: Callable[[], Awaitable[bool]]
) -> None:
    """Until `check` answers True; BenchError with the log's end if the process dies first."""
    deadline = asyncio.get_running_loop().time() + READY_WITHIN
    while True:
        if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
            tail = (await asyncio.to_thread(log.read_text))[-3000:]
            raise BenchError(f"{what}: the process exited; its log ends:\n{tail}")
        try:
            if await check():
                return
        except httpx.TransportError:
            pass
        if asyncio.get_running_loop().time() > deadline:
            tail = (await asyncio.to_thread(log.read_text))[-3000:]
            raise BenchError(f"{what} within {READY_WITHIN:.0f} s; its log ends:\n{tail}")
        await asyncio.sleep(0.2)


async def start_api(
    stack: ExitStack, tmp: Path, database_url: str, temporal_address: str, task_queue: str
) -> tuple[psutil.Process, str]:
    """`blocks api` on a free loopback port, once it answers; the process and its base URL."""
    port = free_port()
    base_url = f"http://{HOST}:{port}"
    env = blocks_process_env(
        database_url,
        temporal_address,
        task_queue,
        BLOCKS_AUDIT_SIGNING_KEY=SIGNING_KEY,
        BLOCKS_API_HOST=HOST,
        BLOCKS_API_PORT=str(port),
        BLOCKS_DEMO_ORG="false",
        **{f"BLOCKS_{k.upper()}": v for k, v in GENEROUS_RATE_LIMITS.items()},
    )
    api = _child(stack, tmp, "api", [sys.executable, "-m", "blocks.cli", "api"], env)

    async def healthy() -> bool:
        async with httpx.AsyncClient(timeout=5) as http:
            return (await http.get(f"{base_url}/healthz")).status_code == 200

    await wait_until("the API answered", api, tmp / "api.log", healthy)
    return api, base_url


async def start_agent(
    stack: ExitStack, tmp: Path, name: str, base_url: str, token: str
) -> psutil.Process:
    """`blocks agent run --url base_url bench.agent_echo:agent` (the token in
    BLOCKS_AGENT_TOKEN), once its log says it is connected to the relay."""
    python_path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    # Wide enough that rich never wraps the "connected to" line this waits for.
    env = {**os.environ, "PYTHONPATH": python_path, "BLOCKS_AGENT_TOKEN": token, "COLUMNS": "400"}
    args = [
        *(sys.executable, "-m", "blocks.cli", "agent", "run"),
        *("--url", base_url, "--app-dir", str(ROOT), AGENT_TARGET),
    ]
    agent = _child(stack, tmp, name, args, env)
    log = tmp / f"{name}.log"

    async def connected() -> bool:
        return "connected to" in await asyncio.to_thread(log.read_text, errors="replace")

    await wait_until(f"agent {name} connected", agent, log, connected)
    return agent
