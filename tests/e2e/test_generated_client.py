"""A Python client generated from the running API's own `/openapi.json` by a real generator
(openapi-python-client, as a subprocess, with no network and no formatting step) works: with it
an operator starts an expense run, an approver approves its step, and the run completes. The
client is strict: an answer whose status the document does not list raises, and each body is
parsed into the model the document names."""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import EXPENSE, Stack, make_org

PACKAGE = "blocks_generated_client"
# No post-hooks: they would run ruff on the generated code, which is not ours to lint.
CONFIG = f"package_name_override: {PACKAGE}\npost_hooks: []\n"


@pytest.fixture
def generated(tmp_path: Path) -> Iterator[Path]:
    """Where the client is generated; importable from there, and forgotten afterwards."""
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
        del sys.modules[name]


def _generate(document: dict[str, Any], into: Path) -> None:
    (into / "openapi.json").write_text(json.dumps(document))
    (into / "config.yaml").write_text(CONFIG)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(into / "openapi.json"),
            "--config",
            str(into / "config.yaml"),
            "--meta",
            "none",
            "--output-path",
            str(into / PACKAGE),
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Any warning fails it: a client with an operation or model missing is not a client.
    assert done.returncode == 0, done.stdout + done.stderr


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


async def _run_when(client: Any, run_id: uuid.UUID, status: str, stage: str | None) -> Any:
    """Poll the run through the generated client until it has `status` (and `stage`)."""
    read_run = _module("api.approvals.read_run")
    run_out = _module("models.run_out").RunOut
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        run = await read_run.asyncio(run_id, client=client)
        assert isinstance(run, run_out), run
        if run.status == status and (stage is None or run.stage == stage):
            return run
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"run {run_id} stayed at {run.status}/{run.stage}")
        await asyncio.sleep(0.05)


async def test_a_generated_client_starts_and_decides_a_run(
    stack: Stack, engine: AsyncEngine, generated: Path
) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        document = (await http.get("/openapi.json")).json()
    await asyncio.to_thread(_generate, document, generated)
    importlib.invalidate_caches()

    client_module = importlib.import_module(PACKAGE)
    models = _module("models")
    start_run = _module("api.approvals.start_run")
    decide_step = _module("api.approvals.decide_step")

    def client(member: str) -> Any:
        return client_module.AuthenticatedClient(
            base_url=stack.base_url, token=org[member].key, raise_on_unexpected_status=True
        )

    async with client("operator") as operator, client("approver") as approver:
        body = models.StartRunIn(
            workflow="expense_approval", input_=models.StartRunInInput.from_dict(EXPENSE)
        )
        started = await start_run.asyncio_detailed(client=operator, body=body)
        assert started.status_code == 201
        assert isinstance(started.parsed, models.RunOut)
        run_id = started.parsed.id
        assert isinstance(run_id, uuid.UUID)

        pending = await _run_when(operator, run_id, "running", "awaiting_approval")
        [step] = pending.pending_steps
        assert isinstance(step, models.StepOut)
        assert step.step_id == "approve"
        assert step.title == "Expense of 120.50 EUR: Team lunch"

        decided = await decide_step.asyncio(
            run_id,
            "approve",
            client=approver,
            body=models.DecisionIn(
                decision=models.DecisionInDecision.APPROVE, comment="within budget"
            ),
        )
        assert isinstance(decided, models.DecisionOut), decided
        assert decided.state == "approved"
        assert decided.decided_by == str(org["approver"].user_id)

        done = await _run_when(operator, run_id, "completed", None)
        assert done.pending_steps == []
        assert done.result.to_dict() == {
            "status": "approved",
            "approved_by": str(org["approver"].user_id),
        }

        # A refusal is parsed too: the problem+json the document promises for a 403.
        async with client("auditor") as auditor:
            refused = await start_run.asyncio_detailed(client=auditor, body=body)
        assert refused.status_code == 403
        assert isinstance(refused.parsed, models.ProblemOut)
        assert refused.parsed.code == "forbidden"
