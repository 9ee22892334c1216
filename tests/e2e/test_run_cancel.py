"""Cancelling a run through the API: the steps that wait close as cancelled (parallel ones each
once), later decisions are refused, the run ends canceled, and the request, the closings and the
run's end are in the run's chain of custody, wherever the cancel lands (a step's wait, or the
author's own activity or timer); only roles with `run:cancel` may ask."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from blocks.infra.embedded.postgres import PostgresCredentials
from tests.support import (
    DATA_CONVERTER,
    EXPENSE,
    Org,
    Stack,
    audit_actions,
    free_port,
    make_org,
    running_stack,
    wait_for_audit,
    wait_for_status,
)

# The steps that wait once a run of each workflow has started.
_FIRST_STEPS = {"expense_approval": ["approve"], "contract_review": ["legal", "security"]}
REASON = "Duplicate of another request; the supplier withdrew"


def _contract(org: Org) -> dict[str, Any]:
    return {
        "workflow": "contract_review",
        "input": {
            "counterparty": "Initech",
            "legal": [str(org["approver"].user_id)],
            "security": [str(org["approver2"].user_id)],
        },
    }


async def _start(http: httpx.AsyncClient, org: Org, body: dict[str, Any]) -> str:
    response = await http.post("/v1/runs", json=body, headers=org["operator"].headers)
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    await wait_for_status(
        http, run_id, org["operator"].headers, status="running", stage="awaiting_approval"
    )
    await _wait_for_pending(http, org, run_id, set(_FIRST_STEPS[body["workflow"]]))
    return run_id


async def _wait_for_pending(
    http: httpx.AsyncClient, org: Org, run_id: str, steps: set[str]
) -> dict[str, Any]:
    """The run once exactly `steps` wait and their openings are in the log (parallel steps
    open one after the other)."""
    for _ in range(400):
        body: dict[str, Any] = (
            await http.get(f"/v1/runs/{run_id}", headers=org["operator"].headers)
        ).json()
        waiting = {s["step_id"] for s in body["pending_steps"]}
        logged = {s["step_id"] for s in body["steps"]}
        if waiting == steps and steps <= logged:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} never had exactly {steps} pending: {body}")


async def _cancel(
    http: httpx.AsyncClient, org: Org, run_id: str, who: str = "operator", **body: Any
) -> httpx.Response:
    return await http.post(
        f"/v1/runs/{run_id}/cancel", json=body or {"reason": REASON}, headers=org[who].headers
    )


async def _run_events(http: httpx.AsyncClient, org: Org, run_id: str) -> list[dict[str, Any]]:
    response = await http.get(f"/v1/runs/{run_id}/audit-events", headers=org["auditor"].headers)
    assert response.status_code == 200, response.text
    return response.json()["events"]  # type: ignore[no-any-return]


async def _custody(http: httpx.AsyncClient, org: Org, run_id: str) -> dict[str, Any]:
    response = await http.get(f"/v1/runs/{run_id}/custody", headers=org["auditor"].headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _decide(
    http: httpx.AsyncClient, org: Org, run_id: str, step: str, who: str
) -> Any:  # a coroutine of httpx.Response
    return http.post(
        f"/v1/runs/{run_id}/steps/{step}/decisions",
        json={"decision": "approve"},
        headers=org[who].headers,
    )


async def test_cancelling_a_waiting_expense_run(stack: Stack, engine: AsyncEngine) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        run_id = await _start(http, org, {"workflow": "expense_approval", "input": EXPENSE})

        # An approver may decide, not cancel: 403, and the refusal is audited.
        refused = await _cancel(http, org, run_id, who="approver")
        assert refused.status_code == 403, refused.text
        assert ("access.denied", "denied", "missing permission run:cancel") in await audit_actions(
            engine, org.id
        )

        cancelled = await _cancel(http, org, run_id)
        assert cancelled.status_code == 202, cancelled.text
        assert cancelled.json() == {"id": run_id, "status": "cancel_requested", "reason": REASON}

        body = await wait_for_status(http, run_id, org["operator"].headers, status="canceled")
        assert body["pending_steps"] == []
        [step] = body["steps"]
        assert step["step_id"] == "approve"
        assert step["state"] == "cancelled"
        assert [h["event"] for h in step["history"]] == ["opened", "closed"]
        assert step["history"][-1]["state"] == "cancelled"
        assert step["closed_at"] is not None

        # The step is closed: a decision now is a conflict, not a vote.
        late = await _decide(http, org, run_id, "approve", "approver")
        assert late.status_code == 409, late.text
        assert late.json()["code"] == "step_closed"
        # So is a second cancellation of the ended run.
        again = await _cancel(http, org, run_id)
        assert again.status_code == 409, again.text
        assert again.json()["code"] == "run_closed"

        await wait_for_audit(engine, org.id, "run.completed", run_id=run_id)
        events = await _run_events(http, org, run_id)
        custody = await _custody(http, org, run_id)
        report = await http.get("/v1/reports/sla", headers=org["auditor"].headers)
        assert report.status_code == 200, report.text

    # The SLA report judges a cancelled step neither met nor breached.
    [row] = report.json()["steps"]
    assert (row["state"], row["outcome"], row["decided_at"]) == ("cancelled", "cancelled", None)
    overall = report.json()["overall"]
    assert (overall["cancelled"], overall["met"], overall["compliance_percent"]) == (1, 0, None)
    actions = [e["action"] for e in events]
    assert actions == [
        "run.started",
        "step.opened",
        "run.cancel_requested",
        "step.closed",
        "run.completed",
    ]
    request = events[2]
    assert request["actor_id"] == str(org["operator"].user_id)
    assert request["reason"] == REASON
    assert request["data"]["credential"]["type"] == "api_key"
    assert request["ip"] == "127.0.0.1"
    assert events[3]["data"]["state"] == "cancelled"
    assert events[4]["data"]["status"] == "cancelled"
    # The workflow records which request ended it (the request's event, not its words).
    assert events[4]["data"]["cancel_request"] == request["id"]
    # The request is in the run's chain of custody, which verifies.
    assert custody["intact"] is True
    assert [e["action"] for e in custody["events"]] == actions


async def test_cancelling_a_run_with_two_parallel_steps_closes_each_once(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        run_id = await _start(http, org, _contract(org))
        await _wait_for_pending(http, org, run_id, {"legal", "security"})

        assert (await _cancel(http, org, run_id)).status_code == 202
        body = await wait_for_status(http, run_id, org["operator"].headers, status="canceled")
        assert {s["step_id"]: s["state"] for s in body["steps"]} == {
            "legal": "cancelled",
            "security": "cancelled",
        }
        for step, who in (("legal", "approver"), ("security", "approver2")):
            late = await _decide(http, org, run_id, step, who)
            assert late.status_code == 409, late.text

        await wait_for_audit(engine, org.id, "run.completed", run_id=run_id)
        events = await _run_events(http, org, run_id)

    counts = Counter(e["action"] for e in events)
    assert counts["run.cancel_requested"] == 1
    assert counts["run.completed"] == 1
    closings = [e for e in events if e["action"] == "step.closed"]
    assert sorted(e["target_id"] for e in closings) == ["legal", "security"]
    assert {e["data"]["state"] for e in closings} == {"cancelled"}
    [completed] = [e for e in events if e["action"] == "run.completed"]
    assert completed["data"]["status"] == "cancelled"
    # The request comes first in the chain, then the workflow's closings, then the run's end.
    assert [e["action"] for e in events][-4:] == [
        "run.cancel_requested",
        "step.closed",
        "step.closed",
        "run.completed",
    ]


async def test_a_step_decided_before_the_cancellation_keeps_its_decision(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        run_id = await _start(http, org, _contract(org))
        await _wait_for_pending(http, org, run_id, {"legal", "security"})
        decided = await _decide(http, org, run_id, "legal", "approver")
        assert decided.status_code == 200, decided.text
        await _wait_for_pending(http, org, run_id, {"security"})

        assert (await _cancel(http, org, run_id)).status_code == 202
        body = await wait_for_status(http, run_id, org["operator"].headers, status="canceled")
        steps = {s["step_id"]: s for s in body["steps"]}
        assert steps["legal"]["state"] == "approved"
        assert steps["security"]["state"] == "cancelled"
        # The step's history: opened, the vote with its channel and who cast it, the closing.
        legal = steps["legal"]["history"]
        assert [h["event"] for h in legal] == ["opened", "decided", "closed"]
        assert legal[0]["approvers"] == [f"user:{org['approver'].user_id}"]
        assert legal[1]["channel"] == "api"
        assert legal[1]["decision"] == "approve"
        assert legal[1]["actor_id"] == str(org["approver"].user_id)
        assert legal[1]["on_behalf_of"] is None
        assert legal[2]["state"] == "approved"
        assert [h["event"] for h in steps["security"]["history"]] == ["opened", "closed"]

        await wait_for_audit(engine, org.id, "run.completed", run_id=run_id)
        events = await _run_events(http, org, run_id)
    closings = Counter(e["target_id"] for e in events if e["action"] == "step.closed")
    assert closings == {"legal": 1, "security": 1}


async def test_what_cannot_be_cancelled(stack: Stack, engine: AsyncEngine) -> None:
    org = await make_org(engine)
    other = await make_org(engine)
    async with stack.http() as http:
        run_id = await _start(http, org, {"workflow": "expense_approval", "input": EXPENSE})
        approved = await _decide(http, org, run_id, "approve", "approver")
        assert approved.status_code == 200, approved.text
        await wait_for_status(http, run_id, org["operator"].headers, status="completed")

        closed = await _cancel(http, org, run_id)
        assert closed.status_code == 409, closed.text
        assert closed.json()["code"] == "run_closed"
        # Another organization's run, and no run at all, are not found.
        assert (await _cancel(http, other, run_id)).status_code == 404
        unknown = "00000000-0000-4000-8000-000000000000"
        assert (await _cancel(http, org, unknown)).status_code == 404
        # A reason is required, and bounded.
        for bad in ({}, {"reason": ""}, {"reason": "   "}, {"reason": "x" * 501}):
            response = await http.post(
                f"/v1/runs/{run_id}/cancel", json=bad, headers=org["operator"].headers
            )
            assert response.status_code == 422, (bad, response.text)
            assert response.json()["errors"][0]["field"] == "reason"
        events = await _run_events(http, org, run_id)
    assert "run.cancel_requested" not in {e["action"] for e in events}


async def test_engine_unreachable_is_a_503_and_records_nothing(
    stack: Stack, engine: AsyncEngine, postgres: PostgresCredentials
) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        run_id = await _start(http, org, {"workflow": "expense_approval", "input": EXPENSE})
    # A second API on the same database whose Temporal does not answer (nothing listens there).
    unreachable = await Client.connect(
        f"127.0.0.1:{free_port()}", data_converter=DATA_CONVERTER, lazy=True
    )
    async with (
        running_stack(
            engine=engine,
            temporal=unreachable,
            database_url=postgres.url(),
            task_queue=f"down-{uuid.uuid4().hex[:8]}",
            with_worker=False,
        ) as down,
        down.http() as http,
    ):
        refused = await _cancel(http, org, run_id)
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "engine_unavailable"
    assert "run.cancel_requested" not in [a[0] for a in await audit_actions(engine, org.id)]
    async with stack.http() as http:
        body = await wait_for_status(
            http, run_id, org["operator"].headers, status="running", stage="awaiting_approval"
        )
    assert body["pending_steps"][0]["state"] == "pending"
