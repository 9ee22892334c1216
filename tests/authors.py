"""An author's package in tests: the `acme_workflows` fixture at a version, served by a real
`blocks worker --workflows acme_workflows` process (never imported by the test process itself)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx

from tests.support import SIGNING_KEY, blocks_process_env, running_process

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ACME = "acme_procurement"
ACME_MODULE = "acme_workflows"


def author_path(version: int) -> Path:
    """The folder holding version `version` of the `acme_workflows` package."""
    return FIXTURES / f"author_v{version}"


def author_env(
    database_url: str, temporal_address: str, task_queue: str, paths: Sequence[Path]
) -> dict[str, str]:
    """A blocks process's environment with `paths` (author code) first on its PYTHONPATH, and
    the test session's keys, so the audit events it writes read back through the API here."""
    env = blocks_process_env(
        database_url,
        temporal_address,
        task_queue,
        BLOCKS_AUDIT_SIGNING_KEY=SIGNING_KEY,
    )
    env["PYTHONPATH"] = os.pathsep.join(
        [*map(str, paths), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env["BLOCKS_WORKFLOW_MODULES"] = ACME_MODULE
    return env


def worker_command(*modules: str) -> list[str]:
    args = [arg for module in modules for arg in ("--workflows", module)]
    return [sys.executable, "-m", "blocks.cli", "worker", *args]


def author_worker(
    database_url: str, temporal_address: str, task_queue: str, *, version: int
) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """`blocks worker --workflows acme_workflows` with version `version` of the package."""
    env = author_env(database_url, temporal_address, task_queue, [author_path(version)])
    return running_process(worker_command(ACME_MODULE), env=env)


async def wait_until_served(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    worker: subprocess.Popen[bytes],
    *,
    task_queue: str,
    version: str,
    within: float = 60,
) -> dict[str, Any]:
    """The catalogue's entry for the Acme workflow once `worker` has published `version` on
    `task_queue` (its Temporal identity is `<pid>@<host>`)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        assert worker.poll() is None, f"the worker exited with {worker.returncode}"
        listed = await http.get("/v1/workflows", headers=headers)
        assert listed.status_code == 200, listed.text
        for entry in listed.json()["workflows"]:
            if entry["name"] != ACME:
                continue
            if any(
                s["task_queue"] == task_queue
                and s["version"] == version
                and s["worker"].startswith(f"{worker.pid}@")
                for s in entry["served_by"]
            ):
                return dict(entry)
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no worker published {ACME} v{version} on {task_queue}")
        await asyncio.sleep(0.2)


def acme_imported() -> bool:
    return any(m == ACME_MODULE or m.startswith(f"{ACME_MODULE}.") for m in sys.modules)
