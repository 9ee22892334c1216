"""The built-in relay end to end, with the agent's side spoken by hand over a real WebSocket: a run
dispatches a task, the agent acknowledges, heartbeats and answers, and the run finishes with the
output; deliveries repeat until acknowledged; a lost agent's task is sent again and completes
once; a token reaches only its own agent's tasks; a revoked token is cut off; an agent's question
becomes an approval step whose decision goes back to it; cancelling the run cancels the task."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import Role
from blocks.infra.db import session_factory
from blocks.models.agents.tokens import revoke_agent_token
from tests.e2e.agent_stack import RegisteredAgent, register_agent
from tests.support import Org, Stack, make_org, wait_for_status


@asynccontextmanager
async def _socket(stack: Stack, token: str) -> AsyncIterator[ClientConnection]:
    url = stack.base_url.replace("http://", "ws://") + "/v1/agents/connect"
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        yield ws


async def _next(ws: ClientConnection, kind: str, within: float = 30) -> dict[str, Any]:
    """The next message of `kind` (others, e.g. acks of earlier messages, are skipped)."""
    async with asyncio.timeout(within):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == kind:
                return message


async def _ack(ws: ClientConnection, task_id: str) -> None:
    await ws.send(json.dumps({"type": "ack", "task_id": task_id}))


async def _complete(ws: ClientConnection, task_id: str, output: dict[str, Any]) -> None:
    """The agent's answer: the task completed with `output`."""
    result = {"type": "result", "task_id": task_id, "state": "TASK_STATE_COMPLETED"}
    await ws.send(json.dumps({**result, "output": output}))


async def _start(http: httpx.AsyncClient, org: Org, agent: RegisteredAgent, **params: Any) -> str:
    started = await http.post(
        "/v1/runs",
        json={
            "workflow": "tests_agent_totals",
            "input": {"agent": agent.name, "lines": [{"amount": 40}, {"amount": 2}], **params},
        },
        headers=org["operator"].headers,
    )
    assert started.status_code == 201, started.text
    return str(started.json()["id"])


async def _events(http: httpx.AsyncClient, org: Org, run_id: str) -> list[dict[str, Any]]:
    answer = await http.get(f"/v1/runs/{run_id}/audit-events", headers=org["auditor"].headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["events"]


async def _task_row(engine: AsyncEngine, org: Org, task_id: str) -> Any:
    async with engine.connect() as connection:
        await connection.execute(
            text("SELECT set_config('app.org_id', :org, false)"), {"org": str(org.id)}
        )
        row = (
            await connection.execute(
                text("SELECT * FROM agent_tasks WHERE id = :id"), {"id": uuid.UUID(task_id)}
            )
        ).one()
        await connection.execute(text("SELECT set_config('app.org_id', '', false)"))
    return row


def _sum(task: dict[str, Any]) -> int:
    return sum(int(line["amount"]) for line in task["input"]["lines"])


async def test_a_run_hands_a_task_to_an_agent_and_finishes_with_its_output(
    agents: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    agent = await register_agent(engine, org.id)
    async with agents.http() as http, _socket(agents, agent.token) as ws:
        run_id = await _start(http, org, agent)
        task = await _next(ws, "task")
        assert task["skill"] == "extract-totals"
        assert task["run_id"] == run_id
        assert task["step"] == "totals"
        await _ack(ws, task["task_id"])
        await ws.send(
            json.dumps({"type": "status", "task_id": task["task_id"], "message": "adding"})
        )
        await _complete(ws, task["task_id"], {"total": _sum(task)})
        assert (await _next(ws, "ack"))["task_id"] == task["task_id"]
        await wait_for_status(http, run_id, org["operator"].headers, status="completed")
        shown = await http.get(f"/v1/runs/{run_id}", headers=org["operator"].headers)
        assert shown.json()["result"] == {"status": "done", "total": 42}
        actions = [e["action"] for e in await _events(http, org, run_id)]
    for action in ("agent.task_dispatched", "agent.task_delivered", "agent.task_completed"):
        assert actions.count(action) == 1, (action, actions)
    row = await _task_row(engine, org, task["task_id"])
    assert row.state == "completed"
    assert row.input_sealed is None  # transient: gone once the agent had it
    assert row.task_token is None
    assert row.latency_ms is not None


async def test_a_delivery_repeats_until_acknowledged_and_a_lost_agent_gets_the_task_again(
    agents: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    agent = await register_agent(engine, org.id)
    async with agents.http() as http:
        # Acknowledgements are awaited 10 s; the agent must report every 15 s.
        run_id = await _start(http, org, agent, heartbeat_seconds=15)
        async with _socket(agents, agent.token) as ws:
            first = await _next(ws, "task")
            again = await _next(ws, "task", within=30)  # not acknowledged: sent again
            assert again["task_id"] == first["task_id"]
            assert again["attempt"] == first["attempt"] == 1
            await ws.send(json.dumps({"type": "ack", "task_id": first["task_id"]}))
        # The agent is gone mid-task (no heartbeat): the attempt times out, the task comes back.
        async with _socket(agents, agent.token) as ws:
            redelivered = await _next(ws, "task", within=60)
            assert redelivered["task_id"] == first["task_id"]
            assert redelivered["attempt"] >= 2
            await ws.send(json.dumps({"type": "ack", "task_id": first["task_id"]}))
            result = {
                "type": "result",
                "task_id": first["task_id"],
                "state": "TASK_STATE_COMPLETED",
                "output": {"total": _sum(redelivered)},
            }
            await ws.send(json.dumps(result))
            await _next(ws, "ack")
            await ws.send(json.dumps(result))  # a duplicate changes nothing
            await _next(ws, "ack")
        await wait_for_status(http, run_id, org["operator"].headers, status="completed")
        actions = [e["action"] for e in await _events(http, org, run_id)]
    assert actions.count("agent.task_completed") == 1
    assert actions.count("agent.task_dispatched") >= 2  # one per attempt


async def test_a_token_reaches_only_its_own_agents_tasks_and_a_revoked_one_is_cut_off(
    agents: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    mine = await register_agent(engine, org.id)
    other = await register_agent(engine, org.id)
    async with agents.http() as http:
        run_id = await _start(http, org, mine)
        async with _socket(agents, other.token) as intruder, _socket(agents, mine.token) as ws:
            task = await _next(ws, "task")
            # The other agent never receives it, and cannot answer it.
            forged = {
                "type": "result",
                "task_id": task["task_id"],
                "state": "TASK_STATE_COMPLETED",
                "output": {"total": -1},
            }
            await intruder.send(json.dumps(forged))
            with pytest.raises(TimeoutError):
                await _next(intruder, "task", within=3)
            ctx = OrgContext(
                org_id=OrgId(org.id), user_id=None, roles=(Role.ADMIN,), auth=AuthMethod.SYSTEM
            )
            async with session_factory(engine)() as session, session.begin():
                await revoke_agent_token(
                    ctx, session, other.id, await _token_id(engine, org, other)
                )
            # Revoked: the connection is closed, even though it stays silent.
            with pytest.raises(ConnectionClosed):
                await _next(intruder, "task", within=15)
            await _ack(ws, task["task_id"])
            await ws.send(json.dumps({**forged, "output": {"total": 42}}))
            await _next(ws, "ack")
        await wait_for_status(http, run_id, org["operator"].headers, status="completed")
        shown = await http.get(f"/v1/runs/{run_id}", headers=org["operator"].headers)
        assert shown.json()["result"]["total"] == 42
        events = (
            await http.get("/v1/audit-events?limit=1000", headers=org["auditor"].headers)
        ).json()["events"]
    denied = [e for e in events if e["action"] == "agent.access_denied"]
    assert denied
    assert denied[0]["actor_id"] == str(other.id)
    assert denied[0]["outcome"] == "denied"
    # A revoked token is refused at the handshake too.
    with pytest.raises(InvalidStatus):
        async with _socket(agents, other.token):
            pass


async def _token_id(engine: AsyncEngine, org: Org, agent: RegisteredAgent) -> uuid.UUID:
    lookup = agent.token.split("_")[1]
    async with engine.connect() as connection:
        await connection.execute(
            text("SELECT set_config('app.org_id', :org, false)"), {"org": str(org.id)}
        )
        token_id = (
            await connection.execute(
                text("SELECT id FROM agent_tokens WHERE lookup = :lookup"), {"lookup": lookup}
            )
        ).scalar_one()
        await connection.execute(text("SELECT set_config('app.org_id', '', false)"))
    return token_id


async def test_an_agents_question_becomes_an_approval_step_and_the_decision_goes_back(
    agents: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    agent = await register_agent(engine, org.id)
    async with agents.http() as http, _socket(agents, agent.token) as ws:
        run_id = await _start(http, org, agent)
        task = await _next(ws, "task")
        await _ack(ws, task["task_id"])
        await ws.send(
            json.dumps(
                {
                    "type": "status",
                    "task_id": task["task_id"],
                    "state": "TASK_STATE_INPUT_REQUIRED",
                    "question": {"title": "Vendor ACME is unknown: pay anyway?"},
                }
            )
        )
        await _next(ws, "ack")
        await wait_for_status(
            http, run_id, org["operator"].headers, status="running", stage="awaiting_approval"
        )
        shown = (await http.get(f"/v1/runs/{run_id}", headers=org["approver"].headers)).json()
        [step] = shown["pending_steps"]
        assert step["step_id"] == "totals-input-1"
        assert step["title"] == "Vendor ACME is unknown: pay anyway?"
        assert step["context"]["question"]["title"].startswith("Vendor ACME")
        decided = await http.post(
            f"/v1/runs/{run_id}/steps/totals-input-1/decisions",
            json={"decision": "approve", "comment": "known vendor"},
            headers=org["approver"].headers,
        )
        assert decided.status_code == 200, decided.text
        answer = await _next(ws, "input")
        assert answer["task_id"] == task["task_id"]
        assert answer["answer"]["approved"] is True
        assert answer["answer"]["comment"] == "known vendor"
        await _ack(ws, task["task_id"])
        await _complete(ws, task["task_id"], {"total": 42})
        await _next(ws, "ack")
        await wait_for_status(http, run_id, org["operator"].headers, status="completed")
        actions = [e["action"] for e in await _events(http, org, run_id)]
        custody = await http.get(f"/v1/runs/{run_id}/custody", headers=org["auditor"].headers)
    assert "agent.input_requested" in actions
    assert "agent.input_answered" in actions
    assert "step.opened" in actions
    assert "step.decided" in actions
    assert custody.status_code == 200, custody.text


async def test_cancelling_the_run_cancels_the_task_at_the_agent(
    agents: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    agent = await register_agent(engine, org.id)
    async with agents.http() as http, _socket(agents, agent.token) as ws:
        run_id = await _start(http, org, agent)
        task = await _next(ws, "task")
        await _ack(ws, task["task_id"])
        cancelled = await http.post(
            f"/v1/runs/{run_id}/cancel",
            json={"reason": "not needed"},
            headers=org["operator"].headers,
        )
        assert cancelled.status_code in (200, 202), cancelled.text
        cancel = await _next(ws, "cancel")
        assert cancel["task_id"] == task["task_id"]
    row = await _task_row(engine, org, task["task_id"])
    assert row.state == "canceled"


async def test_an_agent_step_behind_an_approval_step_sends_nothing_until_approved(
    agents: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    agent = await register_agent(engine, org.id)
    async with agents.http() as http, _socket(agents, agent.token) as ws:
        refused = await _start(http, org, agent, approve_first=True)
        await wait_for_status(
            http, refused, org["operator"].headers, status="running", stage="awaiting_approval"
        )
        shown = (await http.get(f"/v1/runs/{refused}", headers=org["approver"].headers)).json()
        [gate] = shown["pending_steps"]
        assert gate["step_id"] == "totals-approval"
        # The approver sees what would be sent, and to which agent and skill.
        assert gate["context"] == {
            "agent": agent.name,
            "skill": "extract-totals",
            "input": {"lines": [{"amount": 40}, {"amount": 2}]},
        }
        rejected = await http.post(
            f"/v1/runs/{refused}/steps/totals-approval/decisions",
            json={"decision": "reject", "comment": "not this vendor"},
            headers=org["approver"].headers,
        )
        assert rejected.status_code == 200, rejected.text
        await wait_for_status(http, refused, org["operator"].headers, status="failed")
        with pytest.raises(TimeoutError):
            await _next(ws, "task", within=3)  # nothing was sent

        approved = await _start(http, org, agent, approve_first=True)
        await wait_for_status(
            http, approved, org["operator"].headers, status="running", stage="awaiting_approval"
        )
        decided = await http.post(
            f"/v1/runs/{approved}/steps/totals-approval/decisions",
            json={"decision": "approve"},
            headers=org["approver"].headers,
        )
        assert decided.status_code == 200, decided.text
        task = await _next(ws, "task")
        assert task["run_id"] == approved
        await _ack(ws, task["task_id"])
        await _complete(ws, task["task_id"], {"total": 42})
        await wait_for_status(http, approved, org["operator"].headers, status="completed")
        refused_actions = [e["action"] for e in await _events(http, org, refused)]
    assert "agent.task_dispatched" not in refused_actions
