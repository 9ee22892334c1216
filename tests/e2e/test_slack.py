"""Slack: buttons posted through slack-sdk to a local Slack Web API; signed clicks decide steps.

A small Starlette app on 127.0.0.1 plays Slack's Web API (`auth.test`, `chat.postMessage`) and
records what it is sent. Clicks are signed the way Slack signs them (v0=HMAC-SHA256 of
`v0:{timestamp}:{body}` with the app's signing secret) and sent to the real API.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from temporalio.testing import WorkflowEnvironment

from blocks.activities.slack_notices import SlackSender
from blocks.infra.db import session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from tests.support import EXPENSE, Org, Stack, free_port, make_org, running_stack, wait_for_status

SIGNING_SECRET = "test-signing-secret-" + uuid.uuid4().hex
INTERACTIONS = "/v1/integrations/slack/interactions"
ROUTE = f"POST {INTERACTIONS}"
CHANNEL = "C0APPROVALS"


@dataclass
class FakeSlack:
    """Enough of Slack's Web API for Blocks: tokens per team, and every call it received."""

    url: str = ""
    teams: dict[str, str] = field(default_factory=dict)  # bot token -> team id
    calls: list[tuple[str, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def new_team(self) -> tuple[str, str]:
        team = f"T{uuid.uuid4().hex[:10].upper()}"
        token = f"xoxb-{uuid.uuid4().hex}"
        self.teams[token] = team
        return team, token

    def posts(self, run_id: str) -> list[dict[str, Any]]:
        return [
            body
            for method, _, body in self.calls
            if method == "chat.postMessage" and run_id in json.dumps(body)
        ]

    async def _call(self, request: Request) -> JSONResponse:
        method = request.path_params["method"]
        raw = await request.body()
        if request.headers.get("content-type", "").startswith("application/json"):
            body = json.loads(raw)
        else:
            body = dict(urllib.parse.parse_qsl(raw.decode()))
        self.calls.append((method, dict(request.headers), body))
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        team = self.teams.get(token)
        if team is None:
            return JSONResponse({"ok": False, "error": "invalid_auth"})
        if method == "auth.test":
            return JSONResponse({"ok": True, "team_id": team, "user_id": "UBOT", "bot_id": "B1"})
        if method == "chat.postMessage":
            ts = f"{int(time.time())}.{next(self._ids):06d}"
            return JSONResponse({"ok": True, "channel": body["channel"], "ts": ts})
        return JSONResponse({"ok": False, "error": "unknown_method"})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/api/{method}", self._call, methods=["POST", "GET"])])


@dataclass
class SlackStack:
    stack: Stack
    slack: FakeSlack


# Low enough that the flood test meets it, high enough for the other tests' few bad requests.
FORGED_PER_MINUTE = "30/minute"


@pytest.fixture(scope="module")
async def slack_stack(
    engine: AsyncEngine, temporal_env: WorkflowEnvironment, postgres: PostgresCredentials
) -> AsyncIterator[SlackStack]:
    slack = FakeSlack()
    port = free_port()
    slack.url = f"http://127.0.0.1:{port}/api/"
    server = uvicorn.Server(
        uvicorn.Config(slack.app(), host="127.0.0.1", port=port, log_level="warning")
    )
    server_task = asyncio.create_task(server.serve())
    while not server.started:
        if server_task.done():
            server_task.result()
        await asyncio.sleep(0.02)
    try:
        async with running_stack(
            engine=engine,
            temporal=temporal_env.client,
            database_url=postgres.url(),
            task_queue=f"slack-{uuid.uuid4().hex[:8]}",
            notice_senders=[SlackSender(session_factory(engine), api_url=slack.url)],
            extra_settings={
                "slack_signing_secret": SIGNING_SECRET,
                "slack_api_url": slack.url,
                "rate_limit_invalid_ip": FORGED_PER_MINUTE,
            },
        ) as stack:
            yield SlackStack(stack, slack)
    finally:
        server.should_exit = True
        await server_task


# --- helpers -------------------------------------------------------------------------------


async def _install(http: httpx.AsyncClient, org: Org, slack: FakeSlack) -> tuple[str, str]:
    team, token = slack.new_team()
    response = await http.put(
        "/v1/integrations/slack",
        json={"bot_token": token, "channel_id": CHANNEL},
        headers=org["admin"].headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["team_id"] == team
    return team, token


async def _link(http: httpx.AsyncClient, org: Org, slack_user: str, member: str) -> None:
    response = await http.put(
        f"/v1/integrations/slack/users/{slack_user}",
        json={"user_id": str(org[member].user_id)},
        headers=org["owner"].headers,
    )
    assert response.status_code == 200, response.text


async def _start(http: httpx.AsyncClient, org: Org, requester: str) -> str:
    response = await http.post(
        "/v1/runs",
        json={"workflow": "expense_approval", "input": EXPENSE},
        headers=org[requester].headers,
    )
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    await wait_for_status(
        http, run_id, org["auditor"].headers, status="running", stage="awaiting_approval"
    )
    return run_id


async def _posted(slack: FakeSlack, run_id: str) -> dict[str, Any]:
    """The message the worker posted for this run (delivery is asynchronous to the step)."""
    for _ in range(400):
        posts = slack.posts(run_id)
        if posts:
            assert len(posts) == 1, posts
            return posts[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no Slack message was posted for run {run_id}")


def _click(team: str, slack_user: str, action: dict[str, Any]) -> dict[str, Any]:
    """A block_actions payload shaped like Slack's (the fields Blocks ignores included)."""
    return {
        "type": "block_actions",
        "team": {"id": team, "domain": "example"},
        "user": {"id": slack_user, "username": slack_user.lower(), "team_id": team},
        "api_app_id": "A0BLOCKS",
        "token": "deprecated-verification-token",
        "trigger_id": "1.2.3",
        "channel": {"id": CHANNEL},
        "response_url": "https://hooks.slack.invalid/actions/T/1/x",
        "actions": [
            {
                "type": "button",
                "action_id": action["action_id"],
                "block_id": "blocks.decision",
                "value": action["value"],
                "action_ts": str(time.time()),
            }
        ],
    }


def _signed(
    payload: dict[str, Any], *, secret: str = SIGNING_SECRET, at: int | None = None
) -> tuple[bytes, dict[str, str]]:
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    timestamp = str(int(time.time()) if at is None else at)
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256)
    return body, {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": f"v0={digest.hexdigest()}",
    }


async def _send(http: httpx.AsyncClient, payload: dict[str, Any], **signing: Any) -> httpx.Response:
    body, headers = _signed(payload, **signing)
    return await http.post(INTERACTIONS, content=body, headers=headers)


def _button(message: dict[str, Any], action_id: str) -> dict[str, Any]:
    actions = next(b for b in message["blocks"] if b["type"] == "actions")
    return next(e for e in actions["elements"] if e["action_id"] == action_id)  # type: ignore[no-any-return]


async def _org_events(http: httpx.AsyncClient, org: Org) -> list[dict[str, Any]]:
    response = await http.get("/v1/audit-events?limit=1000", headers=org["auditor"].headers)
    assert response.status_code == 200, response.text
    return response.json()["events"]  # type: ignore[no-any-return]


async def _run_events(http: httpx.AsyncClient, org: Org, run_id: str) -> list[dict[str, Any]]:
    response = await http.get(f"/v1/runs/{run_id}/audit-events", headers=org["auditor"].headers)
    assert response.status_code == 200, response.text
    return response.json()["events"]  # type: ignore[no-any-return]


def _slack_denials(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["action"] == "access.denied" and e["target_id"] == ROUTE]


# --- tests ---------------------------------------------------------------------------------


async def test_installation_is_admin_only_and_the_token_is_sealed(
    slack_stack: SlackStack, engine: AsyncEngine, postgres: PostgresCredentials
) -> None:
    org, other = await make_org(engine), await make_org(engine)
    slack = slack_stack.slack
    async with slack_stack.stack.http() as http:
        # An approver may not connect Slack (and the refusal is audited).
        team, token = slack.new_team()
        body = {"bot_token": token, "channel_id": CHANNEL}
        refused = await http.put(
            "/v1/integrations/slack", json=body, headers=org["approver"].headers
        )
        assert refused.status_code == 403, refused.text
        # A token Slack refuses is refused; no token at all cannot install.
        bad = await http.put(
            "/v1/integrations/slack",
            json={"bot_token": "xoxb-not-a-real-token", "channel_id": CHANNEL},
            headers=org["admin"].headers,
        )
        assert bad.status_code == 422, bad.text
        assert bad.json()["errors"][0]["field"] == "bot_token"
        assert "invalid_auth" in bad.text
        missing = await http.put(
            "/v1/integrations/slack", json={"channel_id": CHANNEL}, headers=org["admin"].headers
        )
        assert missing.status_code == 422, missing.text
        assert (
            await http.get("/v1/integrations/slack", headers=org["admin"].headers)
        ).status_code == 404

        installed = await http.put(
            "/v1/integrations/slack", json=body, headers=org["admin"].headers
        )
        assert installed.status_code == 200, installed.text
        assert installed.json()["team_id"] == team  # named by Slack (auth.test), not by the caller
        # The token is write-only: never in a response.
        read = await http.get("/v1/integrations/slack", headers=org["owner"].headers)
        assert read.status_code == 200
        assert read.json()["bot_token_set"] is True
        assert token not in read.text
        assert token not in installed.text
        # Moving the channel keeps the token.
        moved = await http.put(
            "/v1/integrations/slack", json={"channel_id": "C0OTHER"}, headers=org["admin"].headers
        )
        assert moved.json()["channel_id"] == "C0OTHER"
        # One organization per workspace.
        taken = await http.put("/v1/integrations/slack", json=body, headers=other["admin"].headers)
        assert taken.status_code == 409, taken.text

        # Linking: only to a member of this organization.
        for stranger in (other["approver"].user_id, uuid.uuid4()):
            response = await http.put(
                "/v1/integrations/slack/users/U0STRANGER",
                json={"user_id": str(stranger)},
                headers=org["owner"].headers,
            )
            assert response.status_code == 404, response.text
        await _link(http, org, "U0APPROVER", "approver")
        unlinked = await http.delete(
            "/v1/integrations/slack/users/U0APPROVER", headers=org["owner"].headers
        )
        assert unlinked.status_code == 204
        actions = [e["action"] for e in await _org_events(http, org)]
        assert "integration.slack.installed" in actions
        assert "integration.slack.user_linked" in actions
        assert token not in json.dumps(await _org_events(http, org))

    # As stored: the sealed token, not the token.
    async with await psycopg.AsyncConnection.connect(postgres.url(superuser=True)) as conn:
        cursor = await conn.execute(
            "SELECT row_to_json(s)::text, bot_token_sealed FROM slack_installations s "
            "WHERE org_id = %s",
            (org.id,),
        )
        row = await cursor.fetchone()
    assert row is not None
    as_text, sealed = row
    assert team in as_text
    assert token not in as_text
    assert token.encode() not in bytes(sealed)
    assert len(bytes(sealed)) >= len(token) + 12 + 16  # nonce and tag: AES-GCM, not an encoding


async def test_a_step_posts_buttons_and_a_signed_click_decides_it(
    slack_stack: SlackStack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    slack = slack_stack.slack
    async with slack_stack.stack.http() as http:
        team, token = await _install(http, org, slack)
        await _link(http, org, "U0APPROVER", "approver")
        run_id = await _start(http, org, "operator")

        message = await _posted(slack, run_id)
        (headers,) = [h for m, h, b in slack.calls if m == "chat.postMessage" and b is message]
        assert headers["authorization"] == f"Bearer {token}"
        assert message["channel"] == CHANNEL
        assert "Team lunch" in message["blocks"][0]["text"]["text"]
        fields = json.dumps(message["blocks"][1])
        assert "Deadline" in fields
        assert "role _approver_" in fields
        approve, reject = _button(message, "blocks.approve"), _button(message, "blocks.reject")
        assert json.loads(approve["value"]) == {"run_id": run_id, "step_id": "approve"}
        assert reject["value"] == approve["value"]

        response = await _send(http, _click(team, "U0APPROVER", approve))
        assert response.status_code == 200, response.text
        assert response.json()["response_type"] == "ephemeral"
        assert "Approved" in response.json()["text"]
        done = await wait_for_status(http, run_id, org["auditor"].headers, status="completed")
        assert done["result"]["status"] == "approved"

        (decided,) = [
            e for e in await _run_events(http, org, run_id) if e["action"] == "step.decided"
        ]
        assert decided["actor_id"] == str(org["approver"].user_id)
        assert decided["data"]["channel"] == "slack"
        assert decided["data"]["decision"] == "approve"


async def test_forged_stale_unlinked_and_self_approving_clicks_decide_nothing(
    slack_stack: SlackStack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    slack = slack_stack.slack
    async with slack_stack.stack.http() as http:
        team, _ = await _install(http, org, slack)
        await _link(http, org, "U0APPROVER", "approver")
        await _link(http, org, "U0REQUESTER", "operator_approver")
        # The requester holds the approver role: only separation of duties stands in the way.
        run_id = await _start(http, org, "operator_approver")
        approve = _button(await _posted(slack, run_id), "blocks.approve")
        click = _click(team, "U0APPROVER", approve)  # an eligible approver's click, if verified

        forged = await _send(http, click, secret="not-the-signing-secret")
        assert forged.status_code == 401, forged.text
        assert forged.headers["content-type"].startswith("application/problem+json")
        stale = await _send(http, click, at=int(time.time()) - 600)
        assert stale.status_code == 401, stale.text
        unsigned = await http.post(INTERACTIONS, content=_signed(click)[0])
        assert unsigned.status_code == 401, unsigned.text

        unlinked = await _send(http, _click(team, "U0NOBODY", approve))
        assert unlinked.status_code == 200
        assert "not linked" in unlinked.json()["text"]
        own = await _send(http, _click(team, "U0REQUESTER", approve))
        assert own.status_code == 200
        assert "requester cannot approve" in own.json()["text"]

        # Nothing was decided: the step is still open and no vote is in the log.
        body = (await http.get(f"/v1/runs/{run_id}", headers=org["auditor"].headers)).json()
        assert body["stage"] == "awaiting_approval"
        assert [s["state"] for s in body["pending_steps"]] == ["pending"]
        run_actions = [e["action"] for e in await _run_events(http, org, run_id)]
        assert "step.decided" not in run_actions

        denials = _slack_denials(await _org_events(http, org))
        reasons = [d["reason"] for d in denials]
        assert reasons == [
            "Slack request refused: bad signature",
            "Slack request refused: stale timestamp",
            "Slack request refused: missing Slack signature headers",
            "Slack user is not linked to a member",
            "decision refused: self_approval",
        ]
        for unverified in denials[:3]:
            assert unverified["data"]["unverified_team"] == team
            assert unverified["actor_type"] == "anonymous"
            assert unverified["outcome"] == "denied"
        assert denials[3]["data"]["slack_user_id"] == "U0NOBODY"
        assert denials[4]["actor_id"] == str(org["operator_approver"].user_id)

        # The same click, correctly signed and current, does decide: what was refused was only
        # the signature, the age, the link or the person.
        accepted = await _send(http, click)
        assert accepted.status_code == 200, accepted.text
        assert "Approved" in accepted.json()["text"]
        await wait_for_status(http, run_id, org["auditor"].headers, status="completed")


async def test_clicks_from_a_workspace_no_organization_installed_decide_nothing(
    slack_stack: SlackStack,
) -> None:
    async with slack_stack.stack.http() as http:
        value = json.dumps({"run_id": str(uuid.uuid4()), "step_id": "approve"})
        click = _click("T0NOWHERE", "U0APPROVER", {"action_id": "blocks.approve", "value": value})
        forged = await _send(http, click, secret="wrong")
        assert forged.status_code == 401, forged.text
        stray = await _send(http, click)
        assert stray.status_code == 200, stray.text
        assert "not connected" in stray.json()["text"]
        # A verified request that is not a Blocks button is a bad request, not a decision.
        foreign = await _send(
            http, _click("T0NOWHERE", "U0APPROVER", {"action_id": "other", "value": value})
        )
        assert foreign.status_code == 400, foreign.text


# Last in the module: it uses up this address's allowance of invalid requests.
async def test_a_flood_of_forged_clicks_is_cut_off_before_it_floods_the_log(
    slack_stack: SlackStack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    slack = slack_stack.slack
    async with slack_stack.stack.http() as http:
        team, _ = await _install(http, org, slack)
        value = json.dumps({"run_id": str(uuid.uuid4()), "step_id": "approve"})
        click = _click(team, "U0APPROVER", {"action_id": "blocks.approve", "value": value})
        answers = [(await _send(http, click, secret="forged")) for _ in range(45)]
        refused = [a for a in answers if a.status_code == 429]
        assert refused, "45 forged requests in a minute were all answered 401"
        assert int(refused[0].headers["retry-after"]) >= 1
        assert {a.status_code for a in answers} == {401, 429}
        forged_events = [
            d
            for d in _slack_denials(await _org_events(http, org))
            if "unverified_team" in d["data"]
        ]
    # Each 401 left one event; the refused rest left none in this organization's log.
    assert len(forged_events) == sum(1 for a in answers if a.status_code == 401) < 45
