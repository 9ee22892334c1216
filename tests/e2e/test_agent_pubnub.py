"""The PubNub transport end to end, through the real `pubnub` SDK against the project's local
PubNub-protocol server (tests/servers/pubnub_server.py): a run dispatches to an agent (the agent
SDK's runner over PubNub) and finishes with its output; payloads on the wire are ciphertext; the
Access Manager token of an agent's session is scoped to its own channels (the server refuses the
rest with 403); a task lost on the way is published again until acknowledged; a task over 32 KiB
travels by reference and is fetched from the API by its own agent only."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from pubnub.endpoints.pubsub.subscribe import Subscribe
from pubnub.exceptions import PubNubException
from pubnub.pnconfiguration import PNConfiguration
from pubnub.pubnub import PubNub
from pubnub.pubnub_asyncio import PubNubAsyncio, SubscribeListener
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.agent import Agent, Task
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import Role
from blocks.infra.agents.pubnub_grants import PubNubKeys, configuration, crypto_for, open_sealed
from blocks.infra.db import session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.models.agents.tokens import revoke_agent_token
from tests.e2e.agent_stack import RegisteredAgent, agent_stack, register_agent
from tests.servers.pubnub_server import PubNubServer, running_pubnub_server
from tests.support import (
    Org,
    Stack,
    audit_actions,
    make_org,
    wait_for_status,
)

MARKER = "PLAINTEXT-MARKER-7c1e"


@pytest.fixture(scope="module")
def pubnub_server() -> Iterator[PubNubServer]:
    with running_pubnub_server(hold_seconds=5) as server:
        yield server


def pubnub_stack(
    *, engine: AsyncEngine, env: WorkflowEnvironment, database_url: str, server: PubNubServer
) -> AbstractAsyncContextManager[Stack]:
    """The agents' stack (API and a worker serving AgentTotals) with PubNub configured for the
    local server."""
    settings = {
        "pubnub_publish_key": server.publish_key,
        "pubnub_subscribe_key": server.subscribe_key,
        "pubnub_secret_key": server.secret_key,
        "pubnub_origin": server.origin,
        "pubnub_ssl": False,
    }
    return agent_stack(
        engine=engine, temporal=env.client, database_url=database_url, extra_settings=settings
    )


@pytest.fixture(scope="module")
async def stack(
    engine: AsyncEngine,
    temporal_env: WorkflowEnvironment,
    postgres: PostgresCredentials,
    pubnub_server: PubNubServer,
) -> AsyncIterator[Stack]:
    async with pubnub_stack(
        engine=engine, env=temporal_env, database_url=postgres.url(), server=pubnub_server
    ) as running:
        yield running


def totals_agent(seen: list[Task]) -> Agent:
    agent = Agent()

    @agent.skill("extract-totals")
    async def extract_totals(task: Task) -> dict[str, Any]:
        seen.append(task)
        return {"total": sum(int(line["amount"]) for line in task.input["lines"])}

    return agent


@asynccontextmanager
async def serving(
    stack: Stack, registered: RegisteredAgent, seen: list[Task]
) -> AsyncIterator[None]:
    """The agent SDK's runner for `registered`, over PubNub, until the block ends."""
    running = asyncio.create_task(
        totals_agent(seen).run(url=stack.base_url, token=registered.token)
    )
    try:
        yield
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def start_run(
    http: httpx.AsyncClient, org: Org, agent: RegisteredAgent, lines: list[dict[str, Any]]
) -> str:
    started = await http.post(
        "/v1/runs",
        json={"workflow": "tests_agent_totals", "input": {"agent": agent.name, "lines": lines}},
        headers=org["operator"].headers,
    )
    assert started.status_code == 201, started.text
    return str(started.json()["id"])


async def agent_session(http: httpx.AsyncClient, agent: RegisteredAgent) -> dict[str, Any]:
    answer = await http.get("/v1/agent/session", headers={"Authorization": f"Bearer {agent.token}"})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    assert body["transport"] == "pubnub"
    return body


async def server_hook(server: PubNubServer, method: str, path: str, **params: str) -> Any:
    """One of the local server's test hooks (not PubNub's API)."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        answer = await http.request(method, path, params=params)
    answer.raise_for_status()
    return answer.json()


def wire(server: PubNubServer, channel: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{server.url}/_messages", params={"channel": channel}).json())


async def task_row(engine: AsyncEngine, org: Org, run_id: str) -> Any:
    async with engine.connect() as connection:
        await connection.execute(
            text("SELECT set_config('app.org_id', :org, false)"), {"org": str(org.id)}
        )
        row = (
            await connection.execute(
                text("SELECT * FROM agent_tasks WHERE run_id = :run"), {"run": run_id}
            )
        ).one()
        await connection.execute(text("SELECT set_config('app.org_id', '', false)"))
    return row


async def test_a_run_dispatches_over_pubnub_and_the_wire_carries_only_ciphertext(
    stack: Stack, engine: AsyncEngine, pubnub_server: PubNubServer
) -> None:
    org = await make_org(engine)
    registered = await register_agent(engine, org.id, transport="pubnub")
    seen: list[Task] = []
    async with stack.http() as http, serving(stack, registered, seen):
        session = await agent_session(http, registered)
        lines = [{"amount": 40, "note": MARKER}, {"amount": 2}]
        run_id = await start_run(http, org, registered, lines)
        await wait_for_status(http, run_id, org["operator"].headers, status="completed")
        shown = await http.get(f"/v1/runs/{run_id}", headers=org["operator"].headers)
    assert shown.json()["result"] == {"status": "done", "total": 42}
    assert [t.input["lines"][0]["note"] for t in seen] == [MARKER]  # ran once
    block = session["pubnub"]
    tasks, results = (
        wire(pubnub_server, block["tasks_channel"]),
        wire(pubnub_server, block["results_channel"]),
    )
    assert tasks
    assert results
    for stored in tasks + results:
        assert MARKER not in str(stored["payload"])
        assert "extract-totals" not in str(stored["payload"])
    # Ciphertext under the agent's key: the task and the agent's result are in there.
    crypto = crypto_for(block["cipher_key"])
    opened = [open_sealed(crypto, m["payload"]) for m in tasks + results]
    assert {"task", "ack", "result"} <= {m["type"] for m in opened if m}
    assert any(m and m.get("input", {}).get("lines", [{}])[0].get("note") == MARKER for m in opened)
    # The agent published under the uuid its grant is bound to (its token id).
    assert any(m["publisher"].startswith("blocks-agent.") for m in results)


async def test_an_agents_token_reaches_only_its_own_channels(
    stack: Stack, engine: AsyncEngine, pubnub_server: PubNubServer
) -> None:
    org = await make_org(engine)
    a = await register_agent(engine, org.id, transport="pubnub")
    b = await register_agent(engine, org.id, transport="pubnub")
    async with stack.http() as http:
        a_block = (await agent_session(http, a))["pubnub"]
        b_block = (await agent_session(http, b))["pubnub"]
    parsed = PubNub(configuration_for(pubnub_server, "reader")).parse_token(a_block["auth_token"])
    assert parsed["ttl"] == a_block["ttl_minutes"]
    assert set(parsed["resources"]["channels"]) == {
        a_block["tasks_channel"],
        a_block["results_channel"],
    }
    pubnub = PubNubAsyncio(configuration_for(pubnub_server, parsed["authorized_uuid"]))
    pubnub.set_token(a_block["auth_token"])
    try:
        own = await Subscribe(pubnub).channels([a_block["tasks_channel"]]).timetoken(0).future()
        other_tasks = (
            await Subscribe(pubnub).channels([b_block["tasks_channel"]]).timetoken(0).future()
        )
        own_results = (
            await pubnub.publish().channel(a_block["results_channel"]).message("x").future()
        )
        other_results = (
            await pubnub.publish().channel(b_block["results_channel"]).message("x").future()
        )
        own_tasks_write = (
            await pubnub.publish().channel(a_block["tasks_channel"]).message("x").future()
        )
    finally:
        await pubnub.stop()
    assert own.status.status_code == 200
    assert own_results.status.status_code == 200
    assert other_tasks.status.status_code == 403  # cannot read B's tasks
    assert other_results.status.status_code == 403  # cannot answer for B
    assert own_tasks_write.status.status_code == 403  # nor forge tasks to itself
    # Under another uuid the same token is refused: a result's publisher names its token.
    impostor = PubNub(configuration_for(pubnub_server, "blocks-agent.someone-else"))
    impostor.set_token(a_block["auth_token"])
    with pytest.raises(PubNubException) as refused:
        impostor.publish().channel(a_block["results_channel"]).message("x").sync()
    assert refused.value.get_status_code() == 403


def configuration_for(server: PubNubServer, user_id: str) -> PNConfiguration:
    """A client's configuration for the local server, without the secret key."""
    return configuration(server_keys(server), user_id, with_secret=False)


def server_keys(server: PubNubServer) -> PubNubKeys:
    return PubNubKeys(
        server.publish_key, server.subscribe_key, server.secret_key, server.origin, False
    )


async def test_a_task_lost_on_the_way_is_published_again_until_acknowledged(
    stack: Stack, engine: AsyncEngine, pubnub_server: PubNubServer
) -> None:
    org = await make_org(engine)
    registered = await register_agent(engine, org.id, transport="pubnub")
    tasks_channel = f"blocks.{registered.id}.tasks"
    seen: list[Task] = []
    async with stack.http() as http, serving(stack, registered, seen):
        await agent_session(http, registered)
        # The next message on the agent's tasks channel is accepted by PubNub and never delivered.
        await server_hook(pubnub_server, "POST", "/_drop", channel=tasks_channel)
        run_id = await start_run(http, org, registered, [{"amount": 5}])
        await wait_for_status(http, run_id, org["operator"].headers, status="completed")
    row = await task_row(engine, org, run_id)
    assert row.deliveries >= 2
    assert row.attempt == 1
    assert len(seen) == 1
    assert (await server_hook(pubnub_server, "GET", "/_stats"))["dropped"] >= 1


async def test_a_task_over_32_kib_goes_by_reference_to_its_own_agent_only(
    stack: Stack, engine: AsyncEngine, pubnub_server: PubNubServer
) -> None:
    org = await make_org(engine)
    registered = await register_agent(engine, org.id, transport="pubnub")
    other = await register_agent(engine, org.id, transport="pubnub")
    lines = [{"amount": 1, "note": f"{MARKER}-{n}-" + "x" * 60} for n in range(600)]
    fetched_by_other: list[int] = []

    async def peek(task: Task) -> dict[str, Any]:
        # While the task is delivered and unacknowledged, another agent's token cannot read it.
        async with httpx.AsyncClient(base_url=stack.base_url) as http:
            answer = await http.get(
                f"/v1/agents/tasks/{task.id}/input",
                headers={"Authorization": f"Bearer {other.token}"},
            )
        fetched_by_other.append(answer.status_code)
        return {"total": len(task.input["lines"])}

    agent = Agent()
    agent.skill("extract-totals")(peek)
    async with stack.http() as http:
        session = await agent_session(http, registered)
        running = asyncio.create_task(agent.run(url=stack.base_url, token=registered.token))
        try:
            run_id = await start_run(http, org, registered, lines)
            await wait_for_status(http, run_id, org["operator"].headers, status="completed")
            shown = await http.get(f"/v1/runs/{run_id}", headers=org["operator"].headers)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
    assert shown.json()["result"] == {"status": "done", "total": 600}
    assert fetched_by_other == [403]
    block = session["pubnub"]
    crypto = crypto_for(block["cipher_key"])
    sent = [open_sealed(crypto, m["payload"]) for m in wire(pubnub_server, block["tasks_channel"])]
    tasks = [m for m in sent if m and m["type"] == "task"]
    assert tasks
    assert all("input" not in m and m["input_ref"].endswith("/input") for m in tasks)
    assert all(MARKER not in str(m["payload"]) for m in wire(pubnub_server, block["tasks_channel"]))
    # Acknowledged: the input is gone from the API too.
    async with stack.http() as http:
        gone = await http.get(
            tasks[0]["input_ref"], headers={"Authorization": f"Bearer {registered.token}"}
        )
    assert gone.status_code == 410


async def agent_status(http: httpx.AsyncClient, org: Org, agent: RegisteredAgent) -> str:
    answer = await http.get(f"/v1/agents/{agent.id}", headers=org["operator"].headers)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["status"])


async def forget_last_seen(engine: AsyncEngine, org: Org, agent: RegisteredAgent) -> None:
    """As if the agent had not been heard from in an hour: only presence can say it is online."""
    async with engine.begin() as connection:
        await connection.execute(
            text("SELECT set_config('app.org_id', :org, true)"), {"org": str(org.id)}
        )
        await connection.execute(
            text("UPDATE agents SET last_seen_at = now() - interval '1 hour' WHERE id = :id"),
            {"id": agent.id},
        )


async def until(check: Any, within: float = 30.0) -> None:
    """Wait for `check()` to hold: it is PubNub's presence, seen through the API."""
    for _ in range(int(within / 0.2)):
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{check.__name__} did not hold within {within} s")


async def test_presence_on_the_tasks_channel_says_whether_the_agent_is_online(
    stack: Stack, engine: AsyncEngine, pubnub_server: PubNubServer
) -> None:
    org = await make_org(engine)
    registered = await register_agent(engine, org.id, transport="pubnub")
    presence = f"blocks.{registered.id}.tasks-pnpres"

    async def joined() -> bool:
        events = await server_hook(pubnub_server, "GET", "/_messages", channel=presence)
        return any(e["payload"]["action"] == "join" for e in events)

    async with stack.http() as http:
        async with serving(stack, registered, []):
            await until(joined)
            await forget_last_seen(engine, org, registered)

            async def online() -> bool:
                return await agent_status(http, org, registered) == "online"

            await until(online)
        # The runner stopped: its transport left the channel.
        await forget_last_seen(engine, org, registered)

        async def offline() -> bool:
            return await agent_status(http, org, registered) == "offline"

        await until(offline)
    events = await server_hook(pubnub_server, "GET", "/_messages", channel=presence)
    assert [e["payload"]["action"] for e in events] == ["join", "leave"]


async def test_a_revoked_token_is_cut_off_while_its_pubnub_grant_lasts(
    stack: Stack, engine: AsyncEngine, pubnub_server: PubNubServer
) -> None:
    org = await make_org(engine)
    registered = await register_agent(engine, org.id, transport="pubnub")
    async with stack.http() as http:
        block = (await agent_session(http, registered))["pubnub"]
        # The agent's side spoken by hand with the SDK: its grant, its uuid, its payload key.
        holder = PubNub(configuration_for(pubnub_server, "x")).parse_token(block["auth_token"])
        config = configuration(
            server_keys(pubnub_server),
            holder["authorized_uuid"],
            with_secret=False,
            cipher_key=block["cipher_key"],
        )
        pubnub = PubNubAsyncio(config)
        pubnub.set_token(block["auth_token"])
        listener = SubscribeListener()
        pubnub.add_listener(listener)
        try:
            pubnub.subscribe().channels([block["tasks_channel"]]).execute()
            await asyncio.wait_for(listener.wait_for_connect(), 20)
            run_id = await start_run(http, org, registered, [{"amount": 1}])
            task = (await asyncio.wait_for(listener.message_queue.get(), 30)).message
            assert task["type"] == "task"
            token_id = uuid.UUID(holder["authorized_uuid"].removeprefix("blocks-agent."))
            ctx = OrgContext(
                org_id=OrgId(org.id), user_id=None, roles=(Role.ADMIN,), auth=AuthMethod.SYSTEM
            )
            async with session_factory(engine)() as session, session.begin():
                assert await revoke_agent_token(ctx, session, registered.id, token_id)
            forged = {
                "type": "result",
                "task_id": task["task_id"],
                "state": "TASK_STATE_COMPLETED",
                "output": {"total": -1},
            }
            sent = await pubnub.publish().channel(block["results_channel"]).message(forged).future()
            assert sent.status.status_code == 200  # PubNub still takes it: the grant lasts
            await until(lambda: denied(engine, org), within=30)
        finally:
            await pubnub.stop()
        shown = await http.get(f"/v1/runs/{run_id}", headers=org["operator"].headers)
    assert shown.json()["status"] == "running"  # the forged result was not taken
    row = await task_row(engine, org, run_id)
    assert row.state == "delivered"


async def denied(engine: AsyncEngine, org: Org) -> bool:
    return any(
        action == "agent.access_denied" and "PubNub" in (reason or "")
        for action, _, reason in await audit_actions(engine, org.id)
    )
