"""Agents in dev mode without authentication, through the real API on 127.0.0.1: with
BLOCKS_ENV=dev and BLOCKS_AGENT_DEV_NO_AUTH, an agent named by `X-Blocks-Dev-Agent` (no token)
opens its session (`dev_mode: true`), connects to the relay, serves a run of the demo
organization, and its audit events say dev_mode; it is re-resolved by name on every check, so
deleting it cuts it off. Without the flag the same header is refused (401 at the session, the
relay's handshake closed) and audited, as is an unknown name with the flag on."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from blocks.agent import Agent, Backoff, Task
from blocks.core.context import PLATFORM_ORG, AuthMethod, OrgContext, OrgId
from blocks.core.roles import Role
from blocks.infra.db import bind_org, session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.models.agents.registry import delete_agent, get_agent
from blocks.models.demo import DEMO_SLUG
from blocks.models.identity.api_keys import create_api_key
from blocks.models.identity.orgs import add_member, create_org_with_owner, get_org_by_slug
from tests.e2e.agent_stack import RegisteredAgent, agent_stack, register_agent
from tests.support import Member, Org, Stack, wait_for_status

FAST = Backoff(base=0.05, cap=0.5)
DEV_HEADER = "X-Blocks-Dev-Agent"


@pytest.fixture(scope="module")
async def dev_agents(
    engine: AsyncEngine, temporal_env: WorkflowEnvironment, postgres: PostgresCredentials
) -> AsyncIterator[Stack]:
    """The agents' stack (API on 127.0.0.1, worker serving AgentTotals) in dev mode, with agents
    allowed to connect without a token."""
    async with agent_stack(
        engine=engine,
        temporal=temporal_env.client,
        database_url=postgres.url(),
        extra_settings={"env": "dev", "agent_dev_no_auth": True},
    ) as stack:
        yield stack


async def _demo_org(engine: AsyncEngine) -> Org:
    """The demo organization (made here if this database has none), with an operator and an
    auditor of this test's own."""
    suffix = uuid.uuid4().hex[:8]
    async with session_factory(engine)() as session, session.begin():
        org = await get_org_by_slug(session, DEMO_SLUG)
        if org is None:
            org, _, _ = await create_org_with_owner(
                session,
                slug=DEMO_SLUG,
                name="Demo Org",
                owner_email=f"owner-{suffix}@demo.test",
                owner_name="Demo Owner",
            )
        ctx = OrgContext(
            org_id=OrgId(org.id), user_id=None, roles=(Role.OWNER,), auth=AuthMethod.SYSTEM
        )
        result = Org(id=org.id, slug=DEMO_SLUG)
        for name, roles in {"operator": [Role.OPERATOR], "auditor": [Role.AUDITOR]}.items():
            user, _ = await add_member(
                ctx, session, email=f"{name}-{suffix}@demo.test", display_name=name, roles=roles
            )
            _, key = await create_api_key(ctx, session, user_id=user.id, name=name, roles=roles)
            result.members[name] = Member(user.id, user.email, key)
    return result


async def _start(http: httpx.AsyncClient, org: Org, agent: RegisteredAgent) -> str:
    started = await http.post(
        "/v1/runs",
        json={
            "workflow": "tests_agent_totals",
            "input": {"agent": agent.name, "lines": [{"amount": 40}, {"amount": 2}]},
        },
        headers=org["operator"].headers,
    )
    assert started.status_code == 201, started.text
    return str(started.json()["id"])


async def _denials(engine: AsyncEngine) -> list[dict[str, Any]]:
    """The platform chain's `agent.access_denied` events, oldest first."""
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, PLATFORM_ORG)
        rows = await session.exec(  # type: ignore[call-overload]
            text(
                "SELECT row_to_json(e)::text FROM audit_events e "
                "WHERE action = 'agent.access_denied' ORDER BY seq"
            )
        )
        return [json.loads(r[0]) for r in rows.all()]


@asynccontextmanager
async def _dev_socket(stack: Stack, name: str) -> AsyncIterator[ClientConnection]:
    url = stack.base_url.replace("http://", "ws://") + "/v1/agents/connect"
    async with connect(url, additional_headers={DEV_HEADER: name}) as ws:
        yield ws


async def _drain(ws: ClientConnection) -> None:
    """Read until the relay closes the socket (ConnectionClosed), within 30 s."""
    async with asyncio.timeout(30):
        while True:
            await ws.recv()


def _totals_agent() -> Agent:
    agent = Agent()

    @agent.skill("extract-totals")
    async def totals(task: Task) -> dict[str, Any]:
        return {"total": sum(int(line["amount"]) for line in task.input["lines"])}

    @agent.skill("check-vendor")
    async def vendor(task: Task) -> dict[str, Any]:
        return {"approved": True}

    return agent


async def test_a_dev_agent_serves_a_demo_run_without_a_token(
    dev_agents: Stack, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    org = await _demo_org(engine)
    registered = await register_agent(engine, org.id)  # its token is never used here
    caplog.set_level(logging.WARNING)
    async with dev_agents.http() as http:
        session = await http.get("/v1/agent/session", headers={DEV_HEADER: registered.name})
        assert session.status_code == 200, session.text
        body = session.json()
        assert body["dev_mode"] is True
        assert body["agent"] == registered.name
        assert body["org_id"] == str(org.id)
        assert body["skills"] == ["check-vendor", "extract-totals"]  # all its card declares
        assert body["transport"] == "relay"

        run = asyncio.create_task(
            _totals_agent().run(url=dev_agents.base_url, dev_agent=registered.name, backoff=FAST)
        )
        try:
            run_id = await _start(http, org, registered)
            await wait_for_status(http, run_id, org["operator"].headers, status="completed")
        finally:
            run.cancel()
            with suppress(asyncio.CancelledError):
                await run
        shown = (await http.get(f"/v1/runs/{run_id}", headers=org["operator"].headers)).json()
        events = (
            await http.get(f"/v1/runs/{run_id}/audit-events", headers=org["auditor"].headers)
        ).json()["events"]
    assert shown["result"] == {"status": "done", "total": 42}
    by_agent = {e["action"]: e for e in events if e["actor_type"] == "agent"}
    for action in ("agent.task_delivered", "agent.task_completed"):
        assert by_agent[action]["data"]["dev_mode"] is True, by_agent[action]
        assert by_agent[action]["data"]["agent"] == registered.name
    # Loud: the API warned at the session and the relay's handshake; the SDK warned too.
    server = [r.getMessage() for r in caplog.records if r.name == "blocks.agents"]
    assert any(
        "WITHOUT a token" in m and "/v1/agent/session" in m and registered.name in m for m in server
    ), server
    assert any("WITHOUT a token" in m and "/v1/agents/connect" in m for m in server), server
    sdk_logs = [r for r in caplog.records if r.name == "blocks.agent"]
    assert any(getattr(r, "dev_mode", False) for r in sdk_logs)


async def test_a_dev_agent_is_resolved_again_by_name_and_cut_off_when_deleted(
    dev_agents: Stack, engine: AsyncEngine
) -> None:
    org = await _demo_org(engine)
    registered = await register_agent(engine, org.id)
    async with dev_agents.http() as http, _dev_socket(dev_agents, registered.name) as ws:
        run_id = await _start(http, org, registered)
        async with asyncio.timeout(30):
            task = json.loads(await ws.recv())
        assert task["type"] == "task"
        assert task["run_id"] == run_id
        ctx = OrgContext(
            org_id=OrgId(org.id), user_id=None, roles=(Role.ADMIN,), auth=AuthMethod.SYSTEM
        )
        async with session_factory(engine)() as session, session.begin():
            agent = await get_agent(ctx, session, registered.id)
            assert agent is not None
            await delete_agent(ctx, session, agent)
        # Its next message is checked by name again: no such agent any more, the socket closes.
        await ws.send(json.dumps({"type": "ack", "task_id": task["task_id"]}))
        with pytest.raises(ConnectionClosed) as closed:
            await _drain(ws)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008
    reasons = [e["reason"] for e in await _denials(engine) if e["data"].get("dev_mode")]
    assert "no such agent in the demo organization" in reasons


async def test_an_unknown_dev_agent_is_refused_and_audited(
    dev_agents: Stack, engine: AsyncEngine
) -> None:
    await _demo_org(engine)
    name = f"nobody-{uuid.uuid4().hex[:8]}"
    async with dev_agents.http() as http:
        refused = await http.get("/v1/agent/session", headers={DEV_HEADER: name})
    assert refused.status_code == 401
    [denied] = [e for e in await _denials(engine) if e["data"].get("agent") == name]
    assert denied["reason"] == "no such agent in the demo organization"
    assert denied["data"]["dev_mode"] is True


async def test_without_the_flag_the_dev_header_is_refused_and_audited(
    agents: Stack, engine: AsyncEngine
) -> None:
    """The ordinary stack (BLOCKS_ENV=test, no flag): the same header opens nothing."""
    org = await _demo_org(engine)
    registered = await register_agent(engine, org.id)
    async with agents.http() as http:
        session = await http.get("/v1/agent/session", headers={DEV_HEADER: registered.name})
        assert session.status_code == 401
        assert session.headers["content-type"].startswith("application/problem+json")
        # With a token the session answers as before, dev_mode false.
        with_token = await http.get(
            "/v1/agent/session", headers={"Authorization": f"Bearer {registered.token}"}
        )
        assert with_token.status_code == 200
        assert with_token.json()["dev_mode"] is False
    # The relay refuses the handshake (closed with 1008 before it is accepted: HTTP 403).
    with pytest.raises(InvalidStatus) as refused:
        async with _dev_socket(agents, registered.name):
            pass
    assert refused.value.response.status_code == 403
    denied = [e for e in await _denials(engine) if e["data"].get("agent") == registered.name]
    assert [(e["target_id"], e["reason"]) for e in denied] == [
        ("GET /v1/agent/session", "agent dev mode is off (BLOCKS_AGENT_DEV_NO_AUTH)"),
        ("WEBSOCKET /v1/agents/connect", "agent dev mode is off (BLOCKS_AGENT_DEV_NO_AUTH)"),
    ]
    assert all(e["data"]["dev_mode"] is True for e in denied)
