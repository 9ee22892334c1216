"""An approval gate on model output, end to end: the drafted_reply example asks the local
OpenAI-compatible server for a draft, then waits in its `review` step with the draft as the
step's context. Only a member who may decide the step reads the draft in `GET /v1/runs/{id}`
(not an operator, an auditor, nor the requester who holds the approver role); the audit log keeps
only the context's SHA-256, sealed. Approving with an edited reply makes the edit the result;
approving as is sends the draft; rejecting finishes with no reply; without a credential the run
fails at its LLM step, naming what is missing."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import Any

import httpx
import rfc8785
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.core.audit.sealed_content import parse_content
from blocks.infra.db import bind_org, session_factory
from tests.support import Org, Stack, make_org, wait_for_audit, wait_for_status


async def _org_with_key(http: httpx.AsyncClient, engine: AsyncEngine, server: str) -> Org:
    org = await make_org(engine)
    created = await http.post(
        "/v1/llm/credentials",
        json={
            "name": "default",
            "provider": "openai-compatible",
            "base_url": server,
            "allowed_models": ["gpt-test"],
            "api_key": f"sk-ok-{uuid.uuid4().hex}",
        },
        headers=org["admin"].headers,
    )
    assert created.status_code == 201, created.text
    return org


async def _start(http: httpx.AsyncClient, org: Org, message: str, requester: str) -> str:
    started = await http.post(
        "/v1/runs",
        json={
            "workflow": "drafted_reply",
            "input": {"message": message, "customer": "Acme", "model": "gpt-test"},
        },
        headers=org[requester].headers,
    )
    assert started.status_code == 201, started.text
    # The requester holds no decision on their own run: the answer shows them no draft.
    assert message not in started.text
    return str(started.json()["id"])


async def _waiting(http: httpx.AsyncClient, org: Org, run_id: str) -> dict[str, Any]:
    """The run once its review step waits (after the model's answer), as the approver reads it."""
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        answer = await http.get(f"/v1/runs/{run_id}", headers=org["approver"].headers)
        if answer.status_code == 200 and answer.json()["pending_steps"]:
            return dict(answer.json())
        assert answer.status_code in (200, 503), answer.text
        assert answer.json().get("status") not in ("failed", "completed"), answer.text
        assert asyncio.get_running_loop().time() < deadline, answer.text
        await asyncio.sleep(0.1)


async def _opened_event(engine: AsyncEngine, org: Org, run_id: str) -> tuple[str, dict[str, Any]]:
    """The step.opened event of the run as PostgreSQL stores it: (row as JSON text, data)."""
    await wait_for_audit(engine, org.id, "step.opened", run_id=run_id)
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org.id)
        row = (
            await session.exec(  # type: ignore[call-overload]
                text(
                    "SELECT row_to_json(e)::text, data FROM audit_events e "
                    "WHERE action = 'step.opened' AND run_id = :run"
                ).bindparams(run=run_id)
            )
        ).one()
    return str(row[0]), dict(row[1])


async def test_the_approver_alone_sees_the_draft_and_their_edit_is_the_result(
    llm: Stack, engine: AsyncEngine, llm_server: str
) -> None:
    marker, edit_marker = uuid.uuid4().hex, uuid.uuid4().hex
    message = f"My order {marker} arrived broken"
    draft = "draft: " + message  # what the local server answers
    edited = f"We are sorry: a new one is on its way ({edit_marker})."
    async with llm.http() as http:
        org = await _org_with_key(http, engine, llm_server)
        # The requester holds the approver role too: separation of duties hides the draft.
        run_id = await _start(http, org, message, requester="operator_approver")
        body = await _waiting(http, org, run_id)
        [step] = body["pending_steps"]
        assert step["step_id"] == "review"
        context = {"message": message, "draft": draft, "model": "gpt-test-local"}
        assert step["context"] == context
        assert step["context_hidden"] is False
        # A second approver may decide too, so sees it as well.
        second = await http.get(f"/v1/runs/{run_id}", headers=org["approver2"].headers)
        assert second.json()["pending_steps"][0]["context"] == context

        for who in ("operator", "auditor", "operator_approver", "owner"):
            seen = await http.get(f"/v1/runs/{run_id}", headers=org[who].headers)
            assert seen.status_code == 200, seen.text
            [hidden] = seen.json()["pending_steps"]
            assert (hidden["context"], hidden["context_hidden"]) == (None, True), who
            assert marker not in seen.text, who

        # The log holds the context's hash alone, sealed like the title; the auditor opens it.
        stored, data = await _opened_event(engine, org, run_id)
        assert marker not in stored
        assert parse_content(data["context_sha256"]) is not None
        assert parse_content(data["title"]) is not None
        events = await http.get(f"/v1/runs/{run_id}/audit-events", headers=org["auditor"].headers)
        [opened] = [e for e in events.json()["events"] if e["action"] == "step.opened"]
        expected = hashlib.sha256(rfc8785.dumps(context)).hexdigest()
        assert opened["data"]["context_sha256"] == expected
        assert marker not in events.text

        # The form is checked as every decision form is: nothing is decided by a bad one.
        decisions = f"/v1/runs/{run_id}/steps/review/decisions"
        for form in ({"reply": ""}, {"reply": edited, "send_to": "everyone"}):
            refused = await http.post(
                decisions,
                json={"decision": "approve", "form": form},
                headers=org["approver"].headers,
            )
            assert refused.status_code == 422, refused.text
            assert refused.json()["code"] == "form_invalid"
        decided = await http.post(
            decisions,
            json={"decision": "approve", "form": {"reply": edited}},
            headers=org["approver"].headers,
        )
        assert decided.status_code == 200, decided.text
        done = await wait_for_status(
            http, run_id, org["operator"].headers, status="completed", within=60
        )
        assert done["result"] == {
            "status": "approved",
            "reply": edited,
            "edited": True,
            "approved_by": str(org["approver"].user_id),
        }
        closed = await http.get(f"/v1/runs/{run_id}", headers=org["approver"].headers)
        assert closed.json()["pending_steps"] == []
        # The edit is the decision record: sealed in the log like every decision form.
        await wait_for_audit(engine, org.id, "run.completed", run_id=run_id)
        async with session_factory(engine)() as session, session.begin():
            await bind_org(session, org.id)
            rows = await session.exec(  # type: ignore[call-overload]
                text(
                    "SELECT row_to_json(e)::text FROM audit_events e WHERE run_id = :run"
                ).bindparams(run=run_id)
            )
            log = "\n".join(r[0] for r in rows.all())
        assert marker not in log
        assert edit_marker not in log


async def test_approving_as_drafted_sends_the_draft_and_rejecting_sends_nothing(
    llm: Stack, engine: AsyncEngine, llm_server: str
) -> None:
    async with llm.http() as http:
        org = await _org_with_key(http, engine, llm_server)
        outcomes: dict[str, dict[str, Any]] = {}
        for decision in ("approve", "reject"):
            message = f"Where is my parcel {uuid.uuid4().hex}?"
            run_id = await _start(http, org, message, requester="operator")
            [step] = (await _waiting(http, org, run_id))["pending_steps"]
            assert step["context"]["draft"] == "draft: " + message
            decided = await http.post(
                f"/v1/runs/{run_id}/steps/review/decisions",
                json={"decision": decision},
                headers=org["approver"].headers,
            )
            assert decided.status_code == 200, decided.text
            done = await wait_for_status(
                http, run_id, org["operator"].headers, status="completed", within=60
            )
            outcomes[decision] = done["result"]
            if decision == "reject":
                assert message not in str(done)
    approver = str(org["approver"].user_id)
    assert outcomes["approve"]["reply"].startswith("draft: Where is my parcel")
    assert outcomes["approve"]["edited"] is False
    assert outcomes["reject"] == {"status": "rejected", "rejected_by": approver}


async def test_without_a_credential_the_run_fails_at_its_model_step(
    llm: Stack, engine: AsyncEngine
) -> None:
    async with llm.http() as http:
        org = await make_org(engine)
        run_id = await _start(http, org, "Hello?", requester="operator")
        await wait_for_status(http, run_id, org["operator"].headers, status="failed", within=60)
        await wait_for_audit(engine, org.id, "llm.called", run_id=run_id)
        events = await http.get(f"/v1/runs/{run_id}/audit-events", headers=org["auditor"].headers)
        [call] = [e for e in events.json()["events"] if e["action"] == "llm.called"]
        assert call["outcome"] == "failure"
        assert "no LLM credential named 'default'" in call["data"]["error"]
        # No step opened: nothing reached an approver.
        assert not [e for e in events.json()["events"] if e["action"] == "step.opened"]
