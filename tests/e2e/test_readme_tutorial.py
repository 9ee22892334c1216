"""The README's "Write your first workflow" runs as written: its files, its test, its worker command
and the body of its curl start are taken from the README itself."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.workers.workflow_modules import load_workflows
from blocks.workflows.catalogue import workflow_name
from tests.support import (
    blocks_process_env,
    make_org,
    running_process,
    running_stack,
    wait_for_status,
)

README = Path(__file__).resolve().parents[2] / "README.md"
# A marker comment, then the fenced block it names: `<!-- tutorial-file: invoices/approval.py -->`.
_MARKED_BLOCK = re.compile(
    r"<!-- tutorial-(?P<kind>[\w-]+)(?::\s*(?P<name>\S+))?\s*-->\s*\n```\w*\n(?P<body>.*?)^```",
    re.DOTALL | re.MULTILINE,
)


@dataclass(frozen=True)
class Tutorial:
    files: dict[str, str]
    serve: str
    start_run: str


def _tutorial() -> Tutorial:
    files: dict[str, str] = {}
    blocks: dict[str, str] = {}
    for match in _MARKED_BLOCK.finditer(README.read_text()):
        if match["kind"] == "file":
            files[match["name"]] = match["body"]
        else:
            blocks[match["kind"]] = match["body"]
    return Tutorial(files, blocks["serve"], blocks["start-run"])


TUTORIAL = _tutorial()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The tutorial's files, written where an author would keep them."""
    for name, body in TUTORIAL.files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    return tmp_path


@pytest.fixture
def imported_from(project: Path) -> Iterator[Path]:
    """The project on this process's path, forgotten again afterwards."""
    sys.path.insert(0, str(project))
    try:
        yield project
    finally:
        sys.path.remove(str(project))
        for name in [m for m in sys.modules if m == "invoices" or m.startswith("invoices.")]:
            del sys.modules[name]


def _command(line_with: str) -> list[str]:
    """The README's command line containing `line_with`, without its env assignments."""
    line = next(
        line
        for line in TUTORIAL.serve.splitlines()
        if line_with in line and not line.startswith("#")
    )
    return [word for word in shlex.split(line) if "=" not in word or word.startswith("-")]


def _start_body() -> dict[str, object]:
    """The JSON the README's `curl -X POST .../v1/runs` sends."""
    words = shlex.split(TUTORIAL.start_run.replace("\\\n", " "), comments=True)
    post = words.index("POST")
    data = words.index("-d", post)
    body: dict[str, object] = json.loads(words[data + 1])
    return body


def test_the_tutorial_names_what_the_suite_runs() -> None:
    assert set(TUTORIAL.files) == {"invoices/approval.py", "test_invoice_approval.py"}
    assert _command("blocks worker") == ["blocks", "worker", "--workflows", "invoices.approval"]
    assert _command("blocks dev") == ["blocks", "dev", "--workflows", "invoices.approval"]
    assert _start_body()["workflow"] == "invoice_approval"


def test_the_tutorials_own_test_passes(project: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(project)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "test_invoice_approval.py",
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout, result.stdout


def test_the_worker_loads_the_tutorials_module(imported_from: Path) -> None:
    workflows = load_workflows(["invoices.approval"])
    assert [workflow_name(cls) for cls in workflows] == ["invoice_approval"]
    assert workflows[0].INPUT is not None
    assert set(workflows[0].INPUT.model_json_schema()["required"]) == {"vendor", "amount"}


async def test_served_by_the_readmes_worker_command_and_started_with_its_body(
    project: Path,
    engine: AsyncEngine,
    temporal_env: WorkflowEnvironment,
    postgres: PostgresCredentials,
) -> None:
    org = await make_org(engine)
    queue = f"tutorial-{uuid.uuid4().hex[:8]}"
    address = temporal_env.client.service_client.config.target_host
    env = blocks_process_env(postgres.url(), address, queue, PYTHONPATH=str(project))
    _, *args = _command("blocks worker")
    with running_process([sys.executable, "-m", "blocks.cli", *args], env=env, cwd=project):
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
            listed = await _published(http, org["operator"].headers, queue)
            assert listed["input_schema"]["required"] == ["vendor", "amount"]  # type: ignore[index]

            started = await http.post(
                "/v1/runs", json=_start_body(), headers=org["operator"].headers
            )
            assert started.status_code == 201, started.text
            run_id = started.json()["id"]
            await wait_for_status(
                http, run_id, org["operator"].headers, status="running", stage="awaiting_approval"
            )
            decided = await http.post(
                f"/v1/runs/{run_id}/steps/approve/decisions",
                json={"decision": "approve"},
                headers=org["approver"].headers,
            )
            assert decided.status_code == 200, decided.text
            done = await wait_for_status(http, run_id, org["operator"].headers, status="completed")
            assert done["result"] == {
                "status": "approved",
                "approved_by": str(org["approver"].user_id),
            }


async def _published(
    http: httpx.AsyncClient, headers: dict[str, str], queue: str
) -> dict[str, object]:
    """`GET /v1/workflows`' entry for invoice_approval once this test's worker has published it."""
    for _ in range(600):
        response = await http.get("/v1/workflows", headers=headers)
        assert response.status_code == 200, response.text
        for entry in response.json()["workflows"]:
            if entry["name"] == "invoice_approval" and any(
                s["task_queue"] == queue for s in entry["served_by"]
            ):
                return dict(entry)
        await asyncio.sleep(0.1)
    raise AssertionError("the worker never published invoice_approval")
