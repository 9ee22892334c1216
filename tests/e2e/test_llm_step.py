"""LLM steps end to end: a workflow of the tests' own calls `self.llm(...)`, the worker's activity
opens the organization's key and calls the local OpenAI-compatible server through the real
`openai` SDK. A reply completes the step with its usage recorded (readable in the usage report,
JSON and CSV) and audited as metadata; a refused key fails the step at once (one request); a 500
and a timeout are retried by Temporal until an answer comes; a model the credential does not
allow is refused before any request. The key is in no raw history event and no API answer, and
the prompt's text is in no audit event and no usage row."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError

from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.db import bind_org, session_factory
from blocks.models.llm.usage import UsageCall, record_usage
from tests.support import Org, Stack, make_org, wait_for_audit, wait_for_status


def _key(kind: str) -> str:
    return f"sk-{kind}-{uuid.uuid4().hex}"


async def _org_with_key(http: httpx.AsyncClient, engine: AsyncEngine, server: str, key: str) -> Org:
    org = await make_org(engine)
    created = await http.post(
        "/v1/llm/credentials",
        json={
            "name": "default",
            "provider": "openai-compatible",
            "base_url": server,
            "allowed_models": ["gpt-test"],
            "api_key": key,
        },
        headers=org["admin"].headers,
    )
    assert created.status_code == 201, created.text
    return org


async def _run(
    http: httpx.AsyncClient, org: Org, *, status: str, **params: Any
) -> tuple[str, dict[str, Any]]:
    started = await http.post(
        "/v1/runs",
        json={"workflow": "tests_llm_draft", "input": params},
        headers=org["operator"].headers,
    )
    assert started.status_code == 201, started.text
    run_id = started.json()["id"]
    body = await wait_for_status(http, run_id, org["operator"].headers, status=status, within=90)
    return run_id, body


def _seen(server: str, marker: str) -> list[dict[str, Any]]:
    """What the model server received for prompts carrying `marker`."""
    answer = httpx.get(server.removesuffix("/v1") + "/_requests", timeout=5)
    return [entry for entry in answer.json() if marker in entry["text"]]


async def _llm_events(http: httpx.AsyncClient, org: Org, run_id: str) -> list[dict[str, Any]]:
    response = await http.get(f"/v1/runs/{run_id}/audit-events", headers=org["auditor"].headers)
    assert response.status_code == 200, response.text
    return [e for e in response.json()["events"] if e["action"] == "llm.called"]


async def _stored_text(engine: AsyncEngine, org: Org) -> str:
    """Every audit event and usage row of the organization as stored, as JSON text."""
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org.id)
        rows = await session.exec(  # type: ignore[call-overload]
            text(
                "SELECT row_to_json(e)::text FROM audit_events e "
                "UNION ALL SELECT row_to_json(u)::text FROM llm_usage u"
            )
        )
        return "\n".join(r[0] for r in rows.all())


async def _raw_history(llm: Stack, run_id: str) -> bytes:
    """The run's history events as Temporal stores them: nothing decoded."""
    history = await llm.temporal.get_workflow_handle(f"run-{run_id}").fetch_history()
    return b"".join(event.SerializeToString() for event in history.events)


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_a_reply_completes_the_step_with_usage_recorded_and_reported(
    llm: Stack, engine: AsyncEngine, llm_server: str, api: str
) -> None:
    marker, key = uuid.uuid4().hex, _key("ok")
    prompt = f"Summarize expense {marker} for the approver"
    answers: list[httpx.Response] = []
    async with llm.http() as http:
        org = await _org_with_key(http, engine, llm_server, key)
        run_id, body = await _run(
            http, org, status="completed", prompt=prompt, api=api, step="=HYPERLINK(1)"
        )
        assert body["result"]["status"] == "drafted", body
        seen = _seen(llm_server, marker)
        assert len(seen) == 1
        assert seen[0]["model"] == "gpt-test"
        assert seen[0]["path"] == ("/v1/chat/completions" if api == "chat" else "/v1/responses")
        assert seen[0]["key"] == key[-4:]

        await wait_for_audit(engine, org.id, "llm.called", run_id=run_id)
        [event] = await _llm_events(http, org, run_id)
        data = event["data"]
        assert event["outcome"] == "success"
        assert data["credential"] == "default"
        assert data["model"] == "gpt-test"
        assert data["served_model"] == "gpt-test-local"
        reply = "draft: " + prompt
        assert data["completion_sha256"] == hashlib.sha256(reply.encode()).hexdigest()
        assert data["output_tokens"] == len(reply.split())
        # The system line and the prompt, counted in words by the server.
        assert data["input_tokens"] == len(["Answer", "in", "one", "line."]) + len(prompt.split())

        report = await http.get(
            "/v1/reports/llm-usage", params={"run_id": run_id}, headers=org["auditor"].headers
        )
        answers.append(report)
        assert report.status_code == 200, report.text
        [call] = report.json()["calls"]
        assert call["outcome"] == "ok"
        assert call["step"] == "=HYPERLINK(1)"
        assert call["credential"] == "default"
        assert call["input_tokens"] == data["input_tokens"]
        assert call["output_tokens"] == data["output_tokens"]
        assert call["prompt_sha256"] == data["prompt_sha256"]
        assert call["completion_sha256"] == data["completion_sha256"]
        [total] = report.json()["totals"]
        assert total["model"] == "gpt-test"
        assert (total["calls"], total["failed_calls"]) == (1, 0)
        assert total["output_tokens"] == data["output_tokens"]

        for ask in ({"headers": {"Accept": "text/csv"}}, {"params": {"format": "csv"}}):
            headers = {**org["auditor"].headers, **ask.get("headers", {})}
            csv = await http.get("/v1/reports/llm-usage", params=ask.get("params"), headers=headers)
            answers.append(csv)
            assert csv.status_code == 200, csv.text
            assert csv.headers["content-type"].startswith("text/csv")
            header, row = csv.text.strip().splitlines()
            assert header.startswith("created_at,run_id,step,credential,model")
            assert f",{run_id},'=HYPERLINK(1),default,gpt-test," in row  # the formula defused

        auditor = org["auditor"].headers
        for params in (
            {"run_id": run_id, "model": "gpt-other"},
            {"run_id": run_id, "from": "2999-01-01T00:00:00Z"},
            {"run_id": run_id, "to": "2000-01-01T00:00:00Z"},
            {"run_id": str(uuid.uuid4())},
        ):
            empty = await http.get("/v1/reports/llm-usage", params=params, headers=auditor)
            assert empty.status_code == 200, empty.text
            assert (empty.json()["calls"], empty.json()["totals"]) == ([], []), params
        window = await http.get(
            "/v1/reports/llm-usage",
            params={"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
            headers=auditor,
        )
        assert window.status_code == 422
        assert window.json()["errors"][0]["field"] == "to"
        # Another organization's auditor does not see this organization's calls.
        other = await make_org(engine)
        foreign = await http.get(
            "/v1/reports/llm-usage", params={"run_id": run_id}, headers=other["auditor"].headers
        )
        assert foreign.json()["calls"] == []
        answers.append(await http.get(f"/v1/runs/{run_id}", headers=org["operator"].headers))
        answers.append(
            await http.get(f"/v1/runs/{run_id}/audit-events", headers=org["auditor"].headers)
        )
        answers.append(await http.get("/v1/llm/credentials", headers=org["admin"].headers))
        # The operator cannot read the usage report (audit:read).
        refused = await http.get("/v1/reports/llm-usage", headers=org["operator"].headers)
        assert refused.status_code == 403

    raw = await _raw_history(llm, run_id)
    assert b"blocks.llm.call" in raw  # the activity is in this history, under its name
    assert key.encode() not in raw
    for answer in answers:
        assert key not in answer.text
    # Only hashes of the prompt and the reply reach PostgreSQL.
    assert marker not in await _stored_text(engine, org)


async def test_a_refused_key_fails_the_step_at_once_with_the_reason(
    llm: Stack, engine: AsyncEngine, llm_server: str
) -> None:
    marker, key = uuid.uuid4().hex, _key("401")
    async with llm.http() as http:
        org = await _org_with_key(http, engine, llm_server, key)
        run_id, _ = await _run(http, org, status="failed", prompt=f"hello {marker}")
        # One request: a 401 is not retried (the test server echoes the key in its message).
        assert [entry["status"] for entry in _seen(llm_server, marker)] == [401]
        await wait_for_audit(engine, org.id, "llm.called", run_id=run_id)
        [event] = await _llm_events(http, org, run_id)
        assert event["outcome"] == "failure"
        # The message is in the event's sealed data (shown to the auditor), not its reason.
        assert event["reason"] == "the model call failed"
        assert "refused the call: HTTP 401" in event["data"]["error"]
        answers = [
            await http.get(f"/v1/runs/{run_id}/audit-events", headers=org["auditor"].headers),
            await http.get(f"/v1/runs/{run_id}", headers=org["operator"].headers),
            await http.get(
                "/v1/reports/llm-usage", params={"run_id": run_id}, headers=org["auditor"].headers
            ),
        ]
        [call] = answers[2].json()["calls"]
        assert call["outcome"] == "refused"
        assert call["input_tokens"] == call["output_tokens"] == 0

    with pytest.raises(WorkflowFailureError) as failed:
        await llm.temporal.get_workflow_handle(f"run-{run_id}").result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "LlmStepFailed"
    assert "LLM step 'draft' failed: the model server refused the call: HTTP 401" in cause.message
    activity_failure = cause.cause
    assert isinstance(activity_failure, ActivityError)
    assert isinstance(activity_failure.cause, ApplicationError)
    assert activity_failure.cause.type == "LlmCallRefused"
    assert activity_failure.cause.non_retryable

    raw = await _raw_history(llm, run_id)
    assert key.encode() not in raw
    assert key[3:].encode() not in raw  # nor the key's body without its prefix
    for answer in answers:
        assert key not in answer.text
    assert key not in cause.message
    assert key not in await _stored_text(engine, org)


async def test_server_errors_are_retried_until_the_model_answers(
    llm: Stack, engine: AsyncEngine, llm_server: str
) -> None:
    marker, key = uuid.uuid4().hex, _key("500x2")
    async with llm.http() as http:
        org = await _org_with_key(http, engine, llm_server, key)
        run_id, _ = await _run(http, org, status="completed", prompt=f"retry {marker}")
        assert [entry["status"] for entry in _seen(llm_server, marker)] == [500, 500, 200]
        report = await http.get(
            "/v1/reports/llm-usage", params={"run_id": run_id}, headers=org["auditor"].headers
        )
        outcomes = [call["outcome"] for call in report.json()["calls"]]
        assert sorted(outcomes) == ["failed", "failed", "ok"]
        [total] = report.json()["totals"]
        assert (total["calls"], total["failed_calls"]) == (3, 2)
        await wait_for_audit(engine, org.id, "llm.called", run_id=run_id)
        [event] = await _llm_events(http, org, run_id)
        assert event["outcome"] == "success"
    assert key.encode() not in await _raw_history(llm, run_id)


async def test_a_slow_answer_times_out_and_is_retried(
    llm: Stack, engine: AsyncEngine, llm_server: str
) -> None:
    marker, key = uuid.uuid4().hex, _key("slowx1")
    async with llm.http() as http:
        org = await _org_with_key(http, engine, llm_server, key)
        await _run(http, org, status="completed", prompt=f"slow {marker}", timeout_seconds=2)
    # The first attempt was given up on (its status stays as received), the second answered.
    seen = _seen(llm_server, marker)
    assert len(seen) == 2
    # Each attempt is the SDK's first try: Temporal retried, not the SDK.
    assert [entry["attempt"] for entry in seen] == [0, 0]


async def test_a_model_the_credential_does_not_allow_is_refused_without_a_request(
    llm: Stack, engine: AsyncEngine, llm_server: str
) -> None:
    marker, key = uuid.uuid4().hex, _key("ok")
    async with llm.http() as http:
        org = await _org_with_key(http, engine, llm_server, key)
        run_id, _ = await _run(
            http, org, status="failed", prompt=f"other {marker}", model="gpt-unlisted"
        )
        await wait_for_audit(engine, org.id, "llm.called", run_id=run_id)
        [event] = await _llm_events(http, org, run_id)
    assert _seen(llm_server, marker) == []
    assert event["outcome"] == "failure"
    assert event["data"]["error"] == (
        "model 'gpt-unlisted' is not allowed for LLM credential 'default' (allowed: gpt-test)"
    )
    assert json.dumps(event).count(key) == 0


async def test_a_call_recorded_twice_counts_once(
    llm: Stack, engine: AsyncEngine, llm_server: str
) -> None:
    """What a retried activity that had already recorded its reply writes: nothing more."""
    async with llm.http() as http:
        org = await _org_with_key(http, engine, llm_server, _key("ok"))
        [credential] = (await http.get("/v1/llm/credentials", headers=org["admin"].headers)).json()
    ctx = OrgContext(org_id=OrgId(org.id), user_id=None, roles=(), auth=AuthMethod.WORKFLOW)
    call = UsageCall(
        run_id=str(uuid.uuid4()),
        step="draft",
        call_id="wf-run:1",
        credential_id=uuid.UUID(credential["id"]),
        credential_name="default",
        model="gpt-test",
        outcome="ok",
        prompt_sha256="0" * 64,
        input_tokens=7,
        output_tokens=3,
    )
    recorded = []
    for _ in range(2):
        async with session_factory(engine)() as session, session.begin():
            recorded.append(await record_usage(ctx, session, call))
    assert recorded == [True, False]
    async with llm.http() as http:
        report = await http.get(
            "/v1/reports/llm-usage", params={"run_id": call.run_id}, headers=org["auditor"].headers
        )
    [total] = report.json()["totals"]
    assert (total["calls"], total["input_tokens"], total["output_tokens"]) == (1, 7, 3)
