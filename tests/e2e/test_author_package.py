"""An author's own package end to end: served by `blocks worker --workflows acme_workflows` (a
process of its own), listed by the catalogue, started through the API (checked against the
published schema only: the API process never imports the package), decided and completed; and a
worker refusing to start on a module that fails to import or a workflow name defined twice."""

from __future__ import annotations

import subprocess
import textwrap
import uuid
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.infra.embedded.postgres import PostgresCredentials
from tests.authors import (
    ACME,
    acme_imported,
    author_env,
    author_path,
    author_worker,
    wait_until_served,
    worker_command,
)
from tests.support import audit_actions, make_org, row_counts, running_stack, wait_for_status

PURCHASE = {"item": "Standing desk", "amount": "450.00"}


async def test_an_author_package_is_served_listed_started_and_decided(
    engine: AsyncEngine, temporal_env: WorkflowEnvironment, postgres: PostgresCredentials
) -> None:
    org = await make_org(engine)
    queue = f"acme-{uuid.uuid4().hex[:8]}"
    address = temporal_env.client.service_client.config.target_host
    operator = org["operator"].headers
    # The API prefers its own task queue (settings.task_queue, which `task_queue` sets) when it
    # picks where a published workflow is served: here, the author worker's queue.
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
        assert stack.settings.task_queue == queue
        with author_worker(postgres.url(), address, queue, version=1) as worker:
            entry = await wait_until_served(http, operator, worker, task_queue=queue, version="1")
            assert entry["version"] == "1"
            assert entry["description"].startswith("Acme buys an item")
            schema = entry["input_schema"]
            assert set(schema["required"]) == {"item", "amount"}
            assert schema["additionalProperties"] is False
            assert schema["properties"]["item"]["minLength"] == 1
            [ours] = [s for s in entry["served_by"] if s["task_queue"] == queue]
            assert ours["worker"].startswith(f"{worker.pid}@")

            refused = await http.post(
                "/v1/runs",
                json={"workflow": ACME, "input": {"item": "", "amount": "-5", "colour": "red"}},
                headers=operator,
            )
            assert refused.status_code == 422, refused.text
            assert refused.json()["code"] == "validation_error"
            fields = {e["field"] for e in refused.json()["errors"]}
            assert fields == {"input.item", "input.amount", "input.colour"}
            assert await row_counts(engine, org.id) == (0, 0)

            started = await http.post(
                "/v1/runs", json={"workflow": ACME, "input": PURCHASE}, headers=operator
            )
            assert started.status_code == 201, started.text
            run_id = started.json()["id"]
            waiting = await wait_for_status(
                http, run_id, operator, status="running", stage="awaiting_approval", within=60
            )
            [step] = waiting["pending_steps"]  # type: ignore[misc]
            assert step["step_id"] == "manager"
            assert step["title"] == "Buy Standing desk for 450.00 (within_list_price)"

            decided = await http.post(
                f"/v1/runs/{run_id}/steps/manager/decisions",
                json={"decision": "approve"},
                headers=org["approver"].headers,
            )
            assert decided.status_code == 200, decided.text
            done = await wait_for_status(http, run_id, operator, status="completed", within=60)
            assert done["result"] == {
                "status": "approved",
                "steps": ["manager"],
                "price": "within_list_price",
                "reservation": "reservation:standing-desk:450.00",
            }

    actions = [a for a, _, _ in await audit_actions(engine, org.id)]
    assert actions == ["run.started", "step.opened", "step.decided", "step.closed", "run.completed"]
    # The API ran in this process and validated the start from the published schema alone.
    assert not acme_imported()


_DUPLICATE = """
from temporalio import workflow
from blocks.workflows.sdk import BlocksWorkflow, RunInput, RunOutcome

@workflow.defn(name="acme_procurement")
class AnotherProcurement(BlocksWorkflow):
    @workflow.run
    async def run(self, run_input: RunInput) -> RunOutcome:
        self.begin(run_input)
        return await self.finish("done")
"""


def _start_worker(env: dict[str, str], *modules: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        worker_command(*modules), env=env, capture_output=True, text=True, timeout=120
    )


def test_a_worker_refuses_to_start_naming_the_module_and_the_cause(
    postgres: PostgresCredentials, temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    (tmp_path / "acme_broken.py").write_text("import acme_missing_dependency\n")
    (tmp_path / "acme_copy.py").write_text(textwrap.dedent(_DUPLICATE))
    address = temporal_env.client.service_client.config.target_host
    queue = f"acme-refused-{uuid.uuid4().hex[:8]}"
    env = author_env(postgres.url(), address, queue, [author_path(1), tmp_path])

    broken = _start_worker(env, "acme_workflows", "acme_broken")
    assert broken.returncode != 0
    assert "workflow module 'acme_broken' failed to import" in broken.stderr
    assert "ModuleNotFoundError" in broken.stderr
    assert "acme_missing_dependency" in broken.stderr

    twice = _start_worker(env, "acme_workflows", "acme_copy")
    assert twice.returncode != 0
    assert "workflow module 'acme_copy'" in twice.stderr
    assert "two workflows are named 'acme_procurement'" in twice.stderr
    assert "acme_workflows.procurement.AcmeProcurement" in twice.stderr
    assert "acme_copy.AnotherProcurement" in twice.stderr
