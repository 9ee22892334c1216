"""The agent registry through the real API: agents registered with cards the a2a-sdk builds (and
refused, naming the field, with cards its types reject, leaving nothing behind), a duplicate name
refused; tokens issued (shown once, scoped to the card's skills), listed without secrets, rotated
and revoked, a revoked token cut off at GET /v1/agent/session and audited; the public card read by
the a2a-sdk's own card resolver, a private one a 404; metrics from task rows; and another
organization sees and uses none of it."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from a2a.client.card_resolver import A2ACardResolver
from a2a.client.errors import AgentCardResolutionError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.core.context import PLATFORM_ORG
from blocks.infra.db import bind_org, session_factory
from blocks.models.agents.tasks import AgentTask, finish
from blocks.models.base import utcnow
from tests.support import Org, Stack, make_org
from tests.unit.test_agent_cards import sdk_card


async def _events(engine: AsyncEngine, org_id: uuid.UUID, prefix: str) -> list[dict[str, Any]]:
    """The organization's audit events whose action starts with `prefix`, as stored."""
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org_id)
        rows = await session.exec(  # type: ignore[call-overload]
            text("SELECT row_to_json(e)::text FROM audit_events e ORDER BY seq")
        )
        found = [json.loads(r[0]) for r in rows.all()]
    return [e for e in found if e["action"].startswith(prefix)]


async def _register(
    http: httpx.AsyncClient, org: Org, name: str, *skills: str, **extra: Any
) -> dict[str, Any]:
    response = await http.post(
        "/v1/agents",
        json={"name": name, "card": sdk_card(*skills), **extra},
        headers=org["admin"].headers,
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def _issue(http: httpx.AsyncClient, org: Org, agent_id: str, **body: Any) -> dict[str, Any]:
    response = await http.post(
        f"/v1/agents/{agent_id}/tokens",
        json={"name": "host-7", **body},
        headers=org["admin"].headers,
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_an_agent_is_registered_read_changed_and_deleted(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    card = sdk_card("extract", "summarize")
    async with stack.http() as http:
        response = await http.post(
            "/v1/agents",
            json={"name": "invoice-reader", "card": card},
            headers=org["admin"].headers,
        )
        assert response.status_code == 201, response.text
        agent = response.json()
        assert agent["card"] == card  # as the SDK wrote it
        assert agent["skills"] == ["extract", "summarize"]
        assert (agent["public"], agent["transport"], agent["status"]) == (False, "relay", "offline")
        assert agent["card_url"] is None
        assert agent["metrics"]["calls"] == 0

        again = await http.post(
            "/v1/agents",
            json={"name": "invoice-reader", "card": card},
            headers=org["owner"].headers,
        )
        assert again.status_code == 409, again.text
        assert again.json()["code"] == "agent_exists"

        # Whoever reads runs sees the agents; only integration:manage changes them.
        listed = await http.get("/v1/agents", headers=org["operator"].headers)
        assert [a["name"] for a in listed.json()] == ["invoice-reader"]
        read = await http.get(f"/v1/agents/{agent['id']}", headers=org["auditor"].headers)
        assert read.json()["id"] == agent["id"]

        changed = await http.patch(
            f"/v1/agents/{agent['id']}",
            json={"public": True, "card": sdk_card("extract")},
            headers=org["admin"].headers,
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["skills"] == ["extract"]
        url = changed.json()["card_url"]
        assert url.endswith(
            f"/v1/orgs/{org.slug}/agents/invoice-reader/.well-known/agent-card.json"
        )

        token = await _issue(http, org, agent["id"])
        deleted = await http.delete(f"/v1/agents/{agent['id']}", headers=org["admin"].headers)
        assert deleted.status_code == 200
        assert deleted.json()["deleted_at"] is not None
        assert (
            await http.get(f"/v1/agents/{agent['id']}", headers=org["admin"].headers)
        ).status_code == 404
        assert (await http.get("/v1/agents", headers=org["admin"].headers)).json() == []
        # Its token went with it; the name is free again.
        session = await http.get("/v1/agent/session", headers=_bearer(token["token"]))
        assert session.status_code == 401, session.text
        await _register(http, org, "invoice-reader")

    actions = [e["action"] for e in await _events(engine, org.id, "agent.")]
    assert actions == [
        "agent.registered",
        "agent.updated",
        "agent.token_issued",
        "agent.token_revoked",
        "agent.deleted",
        "agent.access_denied",
        "agent.registered",
    ]
    updated = (await _events(engine, org.id, "agent.updated"))[0]
    assert sorted(updated["data"]["changed"]) == ["card", "public", "skills"]
    assert updated["data"]["before"]["skills"] == ["extract", "summarize"]


async def test_a_card_the_sdk_rejects_is_refused_naming_the_field_and_leaves_nothing(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    cards = [
        ({**sdk_card(), "url": "https://old.example"}, "card.url"),
        (
            sdk_card() | {"skills": [{**sdk_card()["skills"][0], "tags": "x"}]},
            "card.skills[0].tags",
        ),
        ({k: v for k, v in sdk_card().items() if k != "version"}, "card.version"),
        (sdk_card() | {"skills": sdk_card()["skills"] * 2}, "card.skills[1].id"),
    ]
    async with stack.http() as http:
        for card, field in cards:
            response = await http.post(
                "/v1/agents", json={"name": "bad", "card": card}, headers=org["admin"].headers
            )
            assert response.status_code == 422, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["errors"][0]["field"] == field, response.text
        # A bad card in a change is refused the same way, and changes nothing.
        agent = await _register(http, org, "good")
        response = await http.patch(
            f"/v1/agents/{agent['id']}", json={"card": cards[0][0]}, headers=org["admin"].headers
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "card.url"
        listed = (await http.get("/v1/agents", headers=org["admin"].headers)).json()
    assert [(a["name"], a["card"]) for a in listed] == [("good", sdk_card())]
    assert [e["action"] for e in await _events(engine, org.id, "agent.")] == ["agent.registered"]


async def test_tokens_are_scoped_shown_once_rotated_and_revoked(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        agent = await _register(http, org, "reader", "extract", "summarize")
        every = await _issue(http, org, agent["id"])
        assert every["skills"] == ["extract", "summarize"]
        assert every["token"].startswith("blkagent_")
        one = await _issue(http, org, agent["id"], skills=["summarize"])

        outside = await http.post(
            f"/v1/agents/{agent['id']}/tokens",
            json={"name": "x", "skills": ["extract", "translate"]},
            headers=org["admin"].headers,
        )
        assert outside.status_code == 422, outside.text
        assert outside.json()["errors"][0]["field"] == "skills[1]"

        listed = await http.get(f"/v1/agents/{agent['id']}/tokens", headers=org["admin"].headers)
        assert {t["id"] for t in listed.json()} == {every["id"], one["id"]}
        assert every["token"] not in listed.text
        assert one["token"] not in listed.text
        assert all("token" not in t for t in listed.json())

        session = await http.get("/v1/agent/session", headers=_bearer(one["token"]))
        assert session.status_code == 200, session.text
        body = session.json()
        assert body == {
            "agent": "reader",
            "agent_id": agent["id"],
            "org_id": str(org.id),
            "skills": ["summarize"],
            "transport": "relay",
            "relay_url": stack.base_url.replace("http://", "ws://") + "/v1/agents/connect",
            "heartbeat_seconds": 10,
            "pubnub": None,
            "dev_mode": False,
        }
        # Seen: the agent is online (heard from just now) and the token shows its last use.
        read = (await http.get(f"/v1/agents/{agent['id']}", headers=org["admin"].headers)).json()
        assert read["status"] == "online"
        assert read["last_seen_at"] is not None

        rotated = await http.post(
            f"/v1/agents/{agent['id']}/tokens/{one['id']}/rotate", headers=org["admin"].headers
        )
        assert rotated.status_code == 201, rotated.text
        assert rotated.json()["skills"] == ["summarize"]
        assert rotated.json()["token"] != one["token"]
        assert (
            await http.get("/v1/agent/session", headers=_bearer(one["token"]))
        ).status_code == 401
        fresh = await http.get("/v1/agent/session", headers=_bearer(rotated.json()["token"]))
        assert fresh.status_code == 200

        revoked = await http.delete(
            f"/v1/agents/{agent['id']}/tokens/{every['id']}", headers=org["admin"].headers
        )
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"] is not None
        refused = await http.get("/v1/agent/session", headers=_bearer(every["token"]))
        assert refused.status_code == 401, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        # An API key is not an agent token, nor a made-up one: both refused in the platform
        # chain (no organization is known); no credential at all is not audited.
        before = len(await _events(engine, PLATFORM_ORG, "agent.access_denied"))
        assert (
            await http.get("/v1/agent/session", headers=org["owner"].headers)
        ).status_code == 401
        forged = every["token"][:-4] + "AAAA"
        assert (await http.get("/v1/agent/session", headers=_bearer(forged))).status_code == 401
        assert (await http.get("/v1/agent/session")).status_code == 401
        platform = await _events(engine, PLATFORM_ORG, "agent.access_denied")
        assert len(platform) == before + 2
        assert {e["target_id"] for e in platform[before:]} == {"GET /v1/agent/session"}
        assert {e["data"]["token_shape"] for e in platform[before:]} == {False, True}

    denied = await _events(engine, org.id, "agent.access_denied")
    assert [(e["reason"], e["outcome"], e["actor_type"]) for e in denied] == [
        ("agent token revoked", "denied", "agent"),
        ("agent token revoked", "denied", "agent"),
    ]
    assert denied[1]["data"]["credential_id"] == every["id"]
    issued = await _events(engine, org.id, "agent.token_")
    assert [e["action"] for e in issued] == [
        "agent.token_issued",
        "agent.token_issued",
        "agent.token_issued",
        "agent.token_revoked",
        "agent.token_revoked",
    ]
    stored = json.dumps(await _events(engine, org.id, ""))
    for secret in (every["token"], one["token"], rotated.json()["token"]):
        assert secret not in stored
        # The secret part alone (`blkagent_<lookup>_<secret>`; the secret itself may hold "_").
        assert secret.split("_", 2)[2] not in stored


async def test_the_public_card_is_read_by_the_sdks_resolver_and_a_private_one_is_not(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        public = await _register(http, org, "reader", "extract", public=True)
        await _register(http, org, "hidden", "extract")
    base = f"{stack.base_url}/v1/orgs/{org.slug}/agents"
    async with httpx.AsyncClient(timeout=30) as client:
        card = await A2ACardResolver(client, f"{base}/reader").get_agent_card()
        assert card.name == public["card"]["name"]
        assert [s.id for s in card.skills] == ["extract"]
        interface = card.supported_interfaces[0]
        assert interface.url == stack.base_url.replace("http://", "ws://") + "/v1/agents/connect"
        assert interface.protocol_binding == "BLOCKS-RELAY"
        for missing in (
            f"{base}/hidden",
            f"{base}/nobody",
            f"{stack.base_url}/v1/orgs/no-org/agents/reader",
        ):
            with pytest.raises(AgentCardResolutionError) as refused:
                await A2ACardResolver(client, missing).get_agent_card()
            assert refused.value.status_code == 404, missing


async def _task(
    session: Any, org: Org, agent_id: str, skill: str, outcome: str | None, latency_ms: int
) -> None:
    task = AgentTask(
        id=uuid.uuid4(),
        org_id=org.id,
        agent_id=uuid.UUID(agent_id),
        skill=skill,
        run_id=str(uuid.uuid4()),
        workflow_id="wf",
        step="agent",
        state="working",
        created_at=utcnow() - timedelta(milliseconds=latency_ms),
    )
    if outcome is not None:
        finish(task, outcome)
        task.latency_ms = latency_ms  # exact, whatever the clock did in between
    session.add(task)


async def test_metrics_count_each_skills_tasks_and_their_latency(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        agent = await _register(http, org, "reader", "extract", "summarize")
        async with session_factory(engine)() as session, session.begin():
            await bind_org(session, org.id)
            for outcome, latency in [
                ("completed", 100),
                ("completed", 200),
                ("completed", 300),
                ("failed", 400),
                ("rejected", 50),
                ("canceled", 60),
                (None, 0),
            ]:
                await _task(session, org, agent["id"], "extract", outcome, latency)
            await _task(session, org, agent["id"], "retired", "completed", 1000)
        response = await http.get(
            f"/v1/agents/{agent['id']}/metrics", headers=org["operator"].headers
        )
        assert response.status_code == 200, response.text
        metrics = response.json()
        listed = (await http.get("/v1/agents", headers=org["operator"].headers)).json()

    skills = {s["skill"]: s for s in metrics["skills"]}
    assert [s["skill"] for s in metrics["skills"]] == ["extract", "summarize", "retired"]
    extract = skills["extract"]
    assert {
        k: extract[k] for k in ("calls", "completed", "failed", "rejected", "canceled", "in_flight")
    } == {
        "calls": 7,
        "completed": 3,
        "failed": 1,
        "rejected": 1,
        "canceled": 1,
        "in_flight": 1,
    }
    # percentile_cont over 50, 60, 100, 200, 300, 400 ms (the tasks that ended).
    assert extract["latency_p50_ms"] == 150.0
    assert extract["latency_p99_ms"] == 395.0
    assert extract["declared"] is True
    assert extract["last_call_at"] is not None
    assert skills["summarize"]["calls"] == 0
    assert skills["summarize"]["latency_p50_ms"] is None
    assert skills["retired"]["declared"] is False
    assert skills["retired"]["completed"] == 1
    assert metrics["total"]["calls"] == 8
    assert metrics["status"] == "offline"
    assert listed[0]["metrics"] == metrics["total"]
    assert set(metrics) == {
        "agent_id",
        "name",
        "status",
        "last_seen_at",
        "since",
        "total",
        "skills",
    }


async def test_another_organization_sees_and_uses_none_of_it(
    stack: Stack, engine: AsyncEngine
) -> None:
    a, b = await make_org(engine), await make_org(engine)
    async with stack.http() as http:
        agent = await _register(http, a, "reader")
        token = await _issue(http, a, agent["id"])
        admin_b = b["admin"].headers
        assert (await http.get("/v1/agents", headers=admin_b)).json() == []
        for method, path in [
            ("GET", f"/v1/agents/{agent['id']}"),
            ("PATCH", f"/v1/agents/{agent['id']}"),
            ("DELETE", f"/v1/agents/{agent['id']}"),
            ("GET", f"/v1/agents/{agent['id']}/metrics"),
            ("GET", f"/v1/agents/{agent['id']}/tokens"),
            ("POST", f"/v1/agents/{agent['id']}/tokens"),
            ("DELETE", f"/v1/agents/{agent['id']}/tokens/{token['id']}"),
            ("POST", f"/v1/agents/{agent['id']}/tokens/{token['id']}/rotate"),
        ]:
            body = {"name": "mine"} if method == "POST" else {"public": True}
            response = await http.request(method, path, json=body, headers=admin_b)
            assert response.status_code == 404, f"{method} {path}: {response.text}"
        # B may use the same name for an agent of its own; A's token still opens only A's.
        own = await _register(http, b, "reader")
        session = await http.get("/v1/agent/session", headers=_bearer(token["token"]))
        assert session.json()["agent_id"] == agent["id"] != own["id"]
        assert session.json()["org_id"] == str(a.id)
        # A's public card is not B's: the path names A.
        await http.patch(
            f"/v1/agents/{agent['id']}", json={"public": True}, headers=a["admin"].headers
        )
        assert (
            await http.get(f"/v1/orgs/{b.slug}/agents/reader/.well-known/agent-card.json")
        ).status_code == 404
        assert (
            await http.get(f"/v1/orgs/{a.slug}/agents/reader/.well-known/agent-card.json")
        ).status_code == 200
    assert await _events(engine, b.id, "agent.token") == []
