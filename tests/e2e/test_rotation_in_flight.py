"""Master key rotation with runs in flight, as an operator does it: runs park (an expense awaiting
approval, a model's draft awaiting review) under processes holding master key A; the API and the
worker restart with `B,A`; `blocks keys rotate` re-wraps everything under B; they restart with B
alone. The parked runs are decided through the API and complete, their history (input, earlier
payloads, sealed step titles and personal fields) still reads, a member's second factor still
proves them, A wraps nothing and is retired, the audit chain verifies. An API or worker started
with a wrong key under id B refuses to start, naming the key.

A PostgreSQL of its own (rotation re-wraps every organization's keys, which on the session's
database would move keys other tests read); the session's Temporal dev server, never restarted.
Every stage's API and worker are new `blocks api` / `blocks worker` processes, so no unwrapped
key cached by an earlier process (KEY_CACHE_SECONDS) can carry a run across the rotation.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.core.audit.sealed_content import parse_content
from blocks.infra.crypto.field_crypto import MasterKeys, current_master_keys, install_master_keys
from blocks.infra.crypto.key_specs import new_payload_key_spec
from blocks.infra.db import bind_org, session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.models.keys.rotation import key_status
from tests.e2e.rotation_stack import (
    PASSWORD,
    Deployment,
    decide,
    draft_waiting,
    enable_two_factor,
    history_decodes,
    processes,
    start,
    status_rows,
)
from tests.support import (
    EXPENSE,
    Org,
    free_port,
    make_org,
    migrated_database,
    publish_examples,
    wait_for_status,
)

OLD = new_payload_key_spec("A")
NEW = new_payload_key_spec("B")


@pytest.fixture(scope="module")
async def own_database(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[PostgresCredentials, AsyncEngine]]:
    async with migrated_database(tmp_path_factory.mktemp("rotation-pg")) as database:
        yield database


@pytest.fixture
def master_keys_restored() -> Iterator[None]:
    """This test seals with key A in-process (make_org); the session's keys go back afterwards."""
    session_keys = current_master_keys()
    yield
    install_master_keys(session_keys)


async def _stored_titles(engine: AsyncEngine, org: Org, run_id: str) -> list[str]:
    """The step titles of a run's step.opened events as PostgreSQL holds them."""
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org.id)
        rows = await session.exec(  # type: ignore[call-overload]
            text(
                "SELECT data->>'title' FROM audit_events"
                " WHERE action = 'step.opened' AND run_id = :run"
            ).bindparams(run=run_id)
        )
        return [str(r[0]) for r in rows.all()]


async def test_runs_parked_across_a_master_key_rotation_complete_on_the_new_key_alone(
    own_database: tuple[PostgresCredentials, AsyncEngine],
    temporal_env: WorkflowEnvironment,
    llm_server: str,
    master_keys_restored: None,
) -> None:
    credentials, engine = own_database
    deployment = Deployment(
        credentials.url(), temporal_env.client, f"rotate-{uuid.uuid4().hex[:8]}", llm_server
    )
    await publish_examples(engine, deployment.task_queue)
    expense_marker = f"lunch-{uuid.uuid4().hex[:10]}"
    draft_marker = f"parcel-{uuid.uuid4().hex[:10]}"

    # Stage 1: the processes hold A alone. Runs park; personal fields and keys wrap under A.
    async with processes(deployment, OLD) as first:
        install_master_keys(MasterKeys.parse(OLD))
        org = await make_org(engine)
        http = first.http
        credential = await http.post(
            "/v1/llm/credentials",
            json={
                "name": "default",
                "provider": "openai-compatible",
                "base_url": llm_server,
                "allowed_models": ["gpt-test"],
                "api_key": f"sk-ok-{uuid.uuid4().hex}",
            },
            headers=org["admin"].headers,
        )
        assert credential.status_code == 201, credential.text
        browser, authenticator = await enable_two_factor(http, engine, org, "approver2")
        expense = await start(
            http, org, "expense_approval", {**EXPENSE, "description": expense_marker}
        )
        draft = await start(
            http,
            org,
            "drafted_reply",
            {"message": f"Where is {draft_marker}?", "customer": "Acme", "model": "gpt-test"},
        )
        await wait_for_status(
            http, expense, org["operator"].headers, status="running", stage="awaiting_approval"
        )
        [review] = (await draft_waiting(http, org, draft))["pending_steps"]
        assert review["context"]["draft"] == f"draft: Where is {draft_marker}?"
    status = deployment.cli(OLD, "keys", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    # A wraps the organization's key and the audit data keys of the people the log names.
    wrapped_by_old = status_rows(status.stdout)["A"]
    assert wrapped_by_old[1] == "active", status.stdout
    assert wrapped_by_old[2] == "1", status.stdout
    people = int(wrapped_by_old[3])
    assert people > 0, status.stdout
    # ...and the secrets sealed under it: the member's TOTP secret.
    assert wrapped_by_old[4] == "1", status.stdout

    # Stage 2: the new key first, the old after it; new processes; then the rotation, with the
    # runs still parked and these processes serving them.
    async with processes(deployment, f"{NEW},{OLD}") as second:
        await wait_for_status(
            second.http,
            expense,
            org["operator"].headers,
            status="running",
            stage="awaiting_approval",
        )
        rotated = deployment.cli(f"{NEW},{OLD}", "keys", "rotate")
        assert rotated.returncode == 0, rotated.stdout + rotated.stderr
        summary = " ".join(rotated.stdout.split())
        assert f"1 organization keys, {people} person keys, 1 secrets" in summary, summary
        assert "Retired (may now leave BLOCKS_MASTER_KEYS): A." in summary, summary
        # A run started between the rotation and the last restart is in flight too.
        late = await start(second.http, org, "expense_approval", EXPENSE)
        await wait_for_status(
            second.http, late, org["operator"].headers, status="running", stage="awaiting_approval"
        )

    # A is gone for good: status from the new key alone, and the model's view of it.
    status = deployment.cli(NEW, "keys", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    rows = status_rows(status.stdout)
    assert rows["A"][1:] == ["missing, retired", "0", "0", "0", "yes"], status.stdout
    assert rows["B"][1:5] == ["active", "1", str(people), "1"], status.stdout
    usages = {u.key_id: u for u in await key_status(engine, MasterKeys.parse(NEW))}
    assert usages["A"].retired, usages
    assert usages["A"].retirable, usages

    # Stage 3: processes on B alone, truly new ones. The parked runs are decided and complete.
    async with processes(deployment, NEW) as third:
        assert not set(third.pids) & set(first.pids + second.pids)
        http = third.http
        read = await http.get(f"/v1/runs/{expense}", headers=org["operator"].headers)
        assert read.status_code == 200, read.text
        assert (
            read.json()["pending_steps"][0]["title"] == f"Expense of 120.50 EUR: {expense_marker}"
        )
        done = await decide(http, org, expense, "approve", "approve")
        assert done["result"] == {"status": "approved", "approved_by": str(org["approver"].user_id)}
        assert [s["state"] for s in done["steps"]] == ["approved"]
        late_done = await decide(http, org, late, "approve", "approve")
        assert late_done["result"]["status"] == "approved"
        drafted = await decide(http, org, draft, "review", "approve")
        assert drafted["result"]["reply"] == f"draft: Where is {draft_marker}?"

        # The second factor sealed under A still proves who the member is: a later step's code
        # renews their backup codes.
        renewed = await http.post(
            "/v1/me/2fa/backup-codes",
            json={"password": PASSWORD, "code": authenticator.at(time.time() + 30)},
            headers=browser,
        )
        assert renewed.status_code == 200, renewed.text

        # The LLM credential (sealed under the organization's key) opens for a new run too.
        fresh = await start(
            http,
            org,
            "drafted_reply",
            {"message": "After the rotation?", "customer": "Acme", "model": "gpt-test"},
        )
        [again] = (await draft_waiting(http, org, fresh))["pending_steps"]
        assert again["context"]["draft"] == "draft: After the rotation?"

        # History from before the rotation still reads: Temporal's payloads through the codec...
        await history_decodes(http, temporal_env.client, org, expense, expense_marker)
        await history_decodes(http, temporal_env.client, org, draft, draft_marker)
        # ...and the audit log's sealed content (the step title) and personal fields.
        assert all(parse_content(t) is not None for t in await _stored_titles(engine, org, expense))
        events = await http.get(f"/v1/runs/{expense}/audit-events", headers=org["auditor"].headers)
        assert events.status_code == 200, events.text
        by_action = {e["action"]: e for e in events.json()["events"]}
        assert list(by_action) == [
            "run.started",
            "step.opened",
            "step.decided",
            "step.closed",
            "run.completed",
        ]
        assert (
            by_action["step.opened"]["data"]["title"] == f"Expense of 120.50 EUR: {expense_marker}"
        )
        assert by_action["run.started"]["actor_email"] == org["operator"].email
        assert by_action["step.decided"]["actor_email"] == org["approver"].email

        verified = await http.get("/v1/audit/verify", headers=org["auditor"].headers)
        assert verified.status_code == 200, verified.text
        assert verified.json()["ok"] is True, verified.json()
        assert verified.json()["problem"] is None


@pytest.mark.parametrize("command", ["api", "worker"])
async def test_a_process_with_a_wrong_key_under_a_known_id_refuses_tostart(
    own_database: tuple[PostgresCredentials, AsyncEngine],
    temporal_env: WorkflowEnvironment,
    llm_server: str,
    command: str,
) -> None:
    credentials, _ = own_database
    deployment = Deployment(
        credentials.url(), temporal_env.client, f"impostor-{uuid.uuid4().hex[:8]}", llm_server
    )
    # B is known to this database (the test above recorded it; recorded here if run alone).
    known = deployment.cli(NEW, "keys", "status")
    assert known.returncode == 0, known.stdout + known.stderr
    impostor = new_payload_key_spec("B")  # the same id, other bytes
    env = deployment.env(impostor, BLOCKS_API_PORT=str(free_port()))
    refused = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "blocks.cli", command],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode != 0
    output = " ".join((refused.stdout + refused.stderr).split())
    assert "key 'B' is not the key this database knows by that id" in output, output
    assert "Traceback" not in output, output  # the reason, on its own
    # The message names the key, never its bytes.
    assert impostor.partition(":")[2] not in output
