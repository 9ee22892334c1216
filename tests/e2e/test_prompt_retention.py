"""Prompts are not kept beyond the run: in Temporal history the LLM step's prompt, reply and failure
are sealed under the run's own key, destroyed a grace period after the run closes; in PostgreSQL
they are never written unless the organization turns prompt retention on (then sealed, readable
by auditors, and every read audited)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError

from blocks.infra.crypto.key_specs import parse_payload_keys
from blocks.infra.crypto.org_keys import OrgKeyUnavailable
from blocks.infra.db import session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.infra.temporal.payload_codec import SCOPE, EncryptionCodec, payload_org
from blocks.models.keys.org_keys import DatabaseOrgKeys
from blocks.workers.run_key_sweeper import RunKeySweeper
from tests.e2e.test_no_plaintext_at_rest import _org, _pg_dump, _run
from tests.support import PAYLOAD_KEYS, Org, Stack


def _fresh_codec(engine: AsyncEngine) -> EncryptionCodec:
    """A codec with no key cached, as a process starting now would have."""
    return EncryptionCodec(*parse_payload_keys(PAYLOAD_KEYS), org_keys=DatabaseOrgKeys(engine))


async def _history_payloads(stack: Stack, run_id: str) -> tuple[list[Payload], list[Payload]]:
    """(the LLM call's payloads: input, result, failure; every other payload of the run)."""
    history = await stack.temporal.get_workflow_handle(f"run-{run_id}").fetch_history()
    llm: list[Payload] = []
    other: list[Payload] = []
    scheduled_llm: set[int] = set()
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name == "blocks.llm.call":
                scheduled_llm.add(event.event_id)
                llm.extend(attrs.input.payloads)
                continue
        for name in ("activity_task_completed", "activity_task_failed"):
            field = f"{name}_event_attributes"
            if event.HasField(field) and getattr(event, field).scheduled_event_id in scheduled_llm:
                attrs = getattr(event, field)
                if name == "activity_task_completed":
                    llm.extend(attrs.result.payloads)
                else:
                    llm.append(attrs.failure.encoded_attributes)
                break
        else:
            if event.HasField("workflow_execution_started_event_attributes"):
                other.extend(event.workflow_execution_started_event_attributes.input.payloads)
    return llm, other


async def _sweep(engine: AsyncEngine, grace_seconds: float) -> int:
    sweeper = RunKeySweeper(
        session_factory(engine), grace_seconds=grace_seconds, interval_seconds=60
    )
    return await sweeper.sweep_once()


async def _run_key_state(engine: AsyncEngine, org: Org, run_id: str) -> tuple[bool, bool]:
    """(closed, destroyed) of the run's history key, read as the database owner."""
    async with engine.connect() as connection:
        await connection.execute(
            text("SELECT set_config('app.org_id', :org, false)"), {"org": str(org.id)}
        )
        row = (
            await connection.execute(
                text("SELECT closed_at, destroyed_at FROM run_data_keys WHERE run_id = :run"),
                {"run": run_id},
            )
        ).one()
        await connection.execute(text("SELECT set_config('app.org_id', '', false)"))
    return row.closed_at is not None, row.destroyed_at is not None


async def test_the_llm_calls_history_is_sealed_under_a_run_key_destroyed_after_the_run_closes(
    llm: Stack, engine: AsyncEngine, llm_server: str
) -> None:
    marker = f"MARKER-{uuid.uuid4().hex}"
    async with llm.http() as http:
        org = await _org(http, engine, llm_server)
        drafted = await _run(http, org, "completed", prompt=f"Summarize {marker}")
        refusing = await _org(http, engine, llm_server, key=f"sk-400-{uuid.uuid4().hex}")
        failed = await _run(http, refusing, "failed", prompt=f"Refuse {marker}")

    for owner, run_id in ((org, drafted), (refusing, failed)):
        llm_payloads, other = await _history_payloads(llm, run_id)
        assert llm_payloads, run_id
        assert other, run_id
        assert all(p.metadata[SCOPE] == b"run" for p in llm_payloads)
        assert all(payload_org(p) == owner.id for p in llm_payloads)
        assert all(SCOPE not in p.metadata for p in other)
        opened = await _fresh_codec(engine).decode(llm_payloads)
        assert any(marker.encode() in p.SerializeToString() for p in opened)
        # The run closed: its key is marked, and kept while the grace period lasts.
        assert await _run_key_state(engine, owner, run_id) == (True, False)

    # The step's failure names the HTTP status; the server's words (quoting the prompt) stay
    # with the model call, under the run's key.
    with pytest.raises(WorkflowFailureError) as failure:
        await llm.temporal.get_workflow_handle(f"run-{failed}").result()
    step_failure = failure.value.cause
    assert isinstance(step_failure, ApplicationError)
    assert "refused the call: HTTP 400" in step_failure.message
    assert marker not in step_failure.message
    call_failure = step_failure.cause
    assert isinstance(call_failure, ActivityError)
    assert isinstance(call_failure.cause, ApplicationError)
    assert marker in call_failure.cause.message

    assert await _sweep(engine, grace_seconds=3600) == 0
    assert await _sweep(engine, grace_seconds=0) >= 2
    for owner, run_id in ((org, drafted), (refusing, failed)):
        assert await _run_key_state(engine, owner, run_id) == (True, True)
        llm_payloads, other = await _history_payloads(llm, run_id)
        codec = _fresh_codec(engine)
        for payload in llm_payloads:
            with pytest.raises(OrgKeyUnavailable, match="destroyed after the run closed"):
                await codec.decode([payload])
        # The rest of the run (its input, here) still reads under the organization's key.
        assert await codec.decode(other)
    # The runs still read through the API: their results never held the prompt.
    async with llm.http() as http:
        shown = await http.get(f"/v1/runs/{drafted}", headers=org["operator"].headers)
        assert shown.status_code == 200, shown.text
        assert shown.json()["status"] == "completed"


async def _retention(http: httpx.AsyncClient, org: Org, on: bool) -> httpx.Response:
    return await http.put(
        "/v1/org/llm", json={"prompt_retention": on}, headers=org["admin"].headers
    )


async def test_prompt_retention_is_off_by_default_and_keeps_sealed_transcripts_when_on(
    llm: Stack, engine: AsyncEngine, llm_server: str, postgres: PostgresCredentials
) -> None:
    marker = f"MARKER-{uuid.uuid4().hex}"
    async with llm.http() as http:
        plain = await _org(http, engine, llm_server)
        shown = await http.get("/v1/org/llm", headers=plain["operator"].headers)
        assert shown.json() == {"prompt_retention": False}
        not_kept = await _run(http, plain, "completed", prompt=f"Forget {marker}")

        keeping = await _org(http, engine, llm_server)
        turned = await _retention(http, keeping, True)
        assert turned.status_code == 200, turned.text
        assert turned.json() == {"prompt_retention": True}
        kept = await _run(http, keeping, "completed", prompt=f"Keep {marker}")

        calls = await http.get(f"/v1/runs/{not_kept}/llm-calls", headers=plain["auditor"].headers)
        assert calls.status_code == 200, calls.text
        [call] = calls.json()["calls"]
        assert call["retained"] is False
        assert call["messages"] is None
        assert call["completion"] is None
        assert call["outcome"] == "ok"
        assert call["prompt_sha256"]

        calls = await http.get(f"/v1/runs/{kept}/llm-calls", headers=keeping["auditor"].headers)
        assert calls.status_code == 200, calls.text
        [call] = calls.json()["calls"]
        assert call["retained"] is True
        assert {"role": "user", "content": f"Keep {marker}"} in call["messages"]
        assert marker in call["completion"]  # the local server echoes the prompt

        # Another organization's run is not there; an operator may not read transcripts.
        elsewhere = await http.get(f"/v1/runs/{kept}/llm-calls", headers=plain["auditor"].headers)
        assert elsewhere.status_code == 404
        denied = await http.get(f"/v1/runs/{kept}/llm-calls", headers=keeping["operator"].headers)
        assert denied.status_code == 403

        events = (
            await http.get("/v1/audit-events?limit=1000", headers=keeping["auditor"].headers)
        ).json()["events"]
    [changed] = [e for e in events if e["action"] == "org.llm_retention_changed"]
    assert changed["data"]["prompt_retention"] == {"before": False, "after": True}
    [read] = [e for e in events if e["action"] == "llm.transcripts_read"]
    assert read["target_id"] == kept
    assert read["actor_id"] == str(keeping["auditor"].user_id)
    assert any(e["action"] == "access.denied" and e["outcome"] == "denied" for e in events)

    # Retained or not, no prompt is in the database in clear: kept ones are sealed.
    dump = await _pg_dump(postgres)
    assert marker.encode() not in dump


async def test_the_retention_setting_refuses_bad_input_and_non_admins(
    llm: Stack, engine: AsyncEngine, llm_server: str
) -> None:
    async with llm.http() as http:
        org = await _org(http, engine, llm_server)
        for body in ({"prompt_retention": "yes"}, {"prompt_retention": 1}, {}, {"other": True}):
            refused = await http.put("/v1/org/llm", json=body, headers=org["admin"].headers)
            assert refused.status_code == 422, body
            assert refused.headers["content-type"].startswith("application/problem+json")
        denied = await http.put(
            "/v1/org/llm", json={"prompt_retention": True}, headers=org["operator"].headers
        )
        assert denied.status_code == 403
        shown = await http.get("/v1/org/llm", headers=org["admin"].headers)
        assert shown.json() == {"prompt_retention": False}
