"""A decision's audit event carries what every API event carries: who (id and email), from where
(address, user agent), with which credential; the personal fields sealed in the table."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import text

from blocks.infra.db import bind_org, session_factory
from tests.support import (
    EXPENSE,
    Org,
    Stack,
    cookie_headers,
    make_org,
    start_test_session,
    wait_for_audit,
    wait_for_status,
)

UA = "DecisionEvents/2.0 (approver's laptop)"


async def _stored_decisions(stack: Stack, org_id: uuid.UUID) -> list[Any]:
    async with session_factory(stack.engine)() as session, session.begin():
        await bind_org(session, org_id)
        rows = await session.exec(  # type: ignore[call-overload]
            text(
                "SELECT actor_id, actor_email, ip, user_agent, data FROM audit_events "
                "WHERE action = 'step.decided' ORDER BY seq"
            )
        )
        return list(rows.all())


async def _key_id(stack: Stack, org_id: uuid.UUID, key: str) -> str:
    lookup = key.split("_")[1]
    async with session_factory(stack.engine)() as session, session.begin():
        await bind_org(session, org_id)
        row = await session.exec(  # type: ignore[call-overload]
            text("SELECT id FROM api_keys WHERE lookup = :lookup").bindparams(lookup=lookup)
        )
        return str(row.one()[0])


async def _awaiting_approval(http: httpx.AsyncClient, org: Org) -> str:
    started = await http.post(
        "/v1/runs",
        json={"workflow": "expense_approval", "input": EXPENSE},
        headers=org["operator"].headers,
    )
    run_id = str(started.json()["id"])
    await wait_for_status(
        http, run_id, org["operator"].headers, status="running", stage="awaiting_approval"
    )
    return run_id


async def test_a_decision_event_carries_every_field(stack: Stack) -> None:
    org = await make_org(stack.engine)
    approver = org["approver"]
    async with stack.http() as http:
        run_id = await _awaiting_approval(http, org)
        decided = await http.post(
            f"/v1/runs/{run_id}/steps/approve/decisions",
            json={"decision": "approve", "comment": "fine"},
            headers={**approver.headers, "User-Agent": UA},
        )
        assert decided.status_code == 200, decided.text
        await wait_for_audit(stack.engine, org.id, "step.decided", run_id=run_id)
        listed = await http.get(f"/v1/runs/{run_id}/audit-events", headers=org["auditor"].headers)
    assert listed.status_code == 200, listed.text
    [event] = [e for e in listed.json()["events"] if e["action"] == "step.decided"]
    assert event["actor_type"] == "user"
    assert event["actor_id"] == str(approver.user_id)
    assert event["actor_email"] == approver.email
    assert event["ip"] == "127.0.0.1"
    assert event["user_agent"] == UA
    assert event["data"]["credential"] == {
        "type": "api_key",
        "id": await _key_id(stack, org.id, approver.key),
    }
    assert event["data"]["channel"] == "api"

    # In the table the personal fields are ciphertext under the approver's key.
    [stored] = await _stored_decisions(stack, org.id)
    for value in (stored.actor_email, stored.ip, stored.user_agent):
        assert str(value).startswith("enc:v1:"), value
    assert approver.email not in str(tuple(stored))
    assert UA not in str(tuple(stored))


async def test_a_decision_by_session_names_the_session(stack: Stack) -> None:
    org = await make_org(stack.engine)
    approver = org["approver"]
    token = await start_test_session(stack.engine, approver.user_id, org.id)
    async with stack.http() as http:
        run_id = await _awaiting_approval(http, org)
        decided = await http.post(
            f"/v1/runs/{run_id}/steps/approve/decisions",
            json={"decision": "reject"},
            headers={**cookie_headers(stack.settings, token), "User-Agent": UA},
        )
        assert decided.status_code == 200, decided.text
        await wait_for_audit(stack.engine, org.id, "step.decided", run_id=run_id)
        listed = await http.get(f"/v1/runs/{run_id}/audit-events", headers=org["auditor"].headers)
    [event] = [e for e in listed.json()["events"] if e["action"] == "step.decided"]
    assert event["actor_email"] == approver.email
    assert event["user_agent"] == UA
    session_id = token.split("_")[1]
    assert event["data"]["credential"]["type"] == "session"
    assert event["data"]["credential"]["id"] is not None
    assert session_id not in str(event)  # the session's lookup (part of the secret) stays out
