"""A local Slack for tests: Slack's Web API played on loopback, and requests signed like Slack's.

A small Starlette app on 127.0.0.1 plays Slack's Web API (`auth.test`, `chat.postMessage`) and
records what it is sent. Clicks and slash commands are signed the way Slack signs them
(v0=HMAC-SHA256 of `v0:{timestamp}:{body}` with the app's signing secret) and sent to the real
API. A Slack user is linked the only way there is: the member asks for a code signed in
(`POST /v1/me/slack-link`) and sends it from Slack (`/blocks link <code>`).
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
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from temporalio.client import Client

from blocks.activities.slack_notices import SlackSender
from blocks.infra.db import session_factory
from tests.support import (
    EXPENSE,
    Org,
    Stack,
    cookie_headers,
    free_port,
    running_stack,
    start_test_session,
    wait_for_status,
)

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


@asynccontextmanager
async def running_slack_stack(
    *,
    engine: AsyncEngine,
    temporal: Client,
    database_url: str,
    extra_settings: Mapping[str, Any] | None = None,
) -> AsyncIterator[SlackStack]:
    """A local Slack, and the API and a worker that post to it and take its signed requests."""
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
            temporal=temporal,
            database_url=database_url,
            task_queue=f"slack-{uuid.uuid4().hex[:8]}",
            notice_senders=[SlackSender(session_factory(engine), api_url=slack.url)],
            extra_settings={
                "slack_signing_secret": SIGNING_SECRET,
                "slack_api_url": slack.url,
                **(extra_settings or {}),
            },
        ) as stack:
            yield SlackStack(stack, slack)
    finally:
        server.should_exit = True
        await server_task


async def install(http: httpx.AsyncClient, org: Org, slack: FakeSlack) -> tuple[str, str]:
    team, token = slack.new_team()
    response = await http.put(
        "/v1/integrations/slack",
        json={"bot_token": token, "channel_id": CHANNEL},
        headers=org["admin"].headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["team_id"] == team
    return team, token


async def link_code(http: httpx.AsyncClient, stack: Stack, org: Org, member: str) -> str:
    """A link code, asked for by the member in a session of their own."""
    token = await start_test_session(stack.engine, org[member].user_id, org.id)
    response = await http.post("/v1/me/slack-link", headers=cookie_headers(stack.settings, token))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["slack_text"] == f"link {body['code']}"
    return body["code"]  # type: ignore[no-any-return]


def command_form(team: str, slack_user: str, text: str) -> dict[str, str]:
    """A slash command's form, shaped like Slack's (the fields Blocks ignores included)."""
    return {
        "token": "deprecated-verification-token",
        "team_id": team,
        "team_domain": "example",
        "channel_id": CHANNEL,
        "channel_name": "approvals",
        "user_id": slack_user,
        "user_name": slack_user.lower(),
        "command": "/blocks",
        "text": text,
        "api_app_id": "A0BLOCKS",
        "response_url": "https://hooks.slack.invalid/commands/T/1/x",
        "trigger_id": "1.2.3",
    }


async def link(
    http: httpx.AsyncClient, stack: Stack, org: Org, team: str, slack_user: str, member: str
) -> None:
    """Link `slack_user` to `member` with the member's proof: their code, sent from Slack."""
    code = await link_code(http, stack, org, member)
    response = await send(http, command_form(team, slack_user, f"link {code}"))
    assert response.status_code == 200, response.text
    assert response.json()["text"].startswith("Linked"), response.text


async def start_run(http: httpx.AsyncClient, org: Org, requester: str) -> str:
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


async def posted(slack: FakeSlack, run_id: str) -> dict[str, Any]:
    """The message the worker posted for this run (delivery is asynchronous to the step)."""
    for _ in range(400):
        posts = slack.posts(run_id)
        if posts:
            assert len(posts) == 1, posts
            return posts[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no Slack message was posted for run {run_id}")


def click_payload(team: str, slack_user: str, action: dict[str, Any]) -> dict[str, Any]:
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


def signed(
    payload: dict[str, Any], *, secret: str = SIGNING_SECRET, at: int | None = None
) -> tuple[bytes, dict[str, str]]:
    # A click's JSON travels in the form's `payload` field; a slash command is the form itself.
    form = payload if "command" in payload else {"payload": json.dumps(payload)}
    body = urllib.parse.urlencode(form).encode()
    timestamp = str(int(time.time()) if at is None else at)
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256)
    return body, {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": f"v0={digest.hexdigest()}",
    }


async def send(http: httpx.AsyncClient, payload: dict[str, Any], **signing: Any) -> httpx.Response:
    body, headers = signed(payload, **signing)
    return await http.post(INTERACTIONS, content=body, headers=headers)


def button(message: dict[str, Any], action_id: str) -> dict[str, Any]:
    actions = next(b for b in message["blocks"] if b["type"] == "actions")
    return next(e for e in actions["elements"] if e["action_id"] == action_id)  # type: ignore[no-any-return]


async def org_events(http: httpx.AsyncClient, org: Org) -> list[dict[str, Any]]:
    response = await http.get("/v1/audit-events?limit=1000", headers=org["auditor"].headers)
    assert response.status_code == 200, response.text
    return response.json()["events"]  # type: ignore[no-any-return]


async def run_events(http: httpx.AsyncClient, org: Org, run_id: str) -> list[dict[str, Any]]:
    response = await http.get(f"/v1/runs/{run_id}/audit-events", headers=org["auditor"].headers)
    assert response.status_code == 200, response.text
    return response.json()["events"]  # type: ignore[no-any-return]


def slack_denials(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["action"] == "access.denied" and e["target_id"] == ROUTE]
