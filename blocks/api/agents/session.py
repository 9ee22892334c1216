"""The agent's bootstrap: `GET /v1/agent/session`, called with the agent's own token.

The agent SDK calls it first: who the token says the agent is, the skills it may serve (the
token's scope, within the skills its card still declares), the transport to use and how: the
relay's WebSocket URL, and for a PubNub agent the keys, a fresh Access Manager token and the
channels (filled by the PubNub transport's hook, `app.state.agent_pubnub`; see PubNubSessions).
Each call counts as the agent being seen and the token being used.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from blocks.api.agents.auth import AgentCaller
from blocks.api.deps import DbSession, unauthorized
from blocks.api.errors import service_unavailable
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.infra.agents.pubnub_grants import PubNubUnavailable
from blocks.models.agents.registry import get_agent, mark_seen
from blocks.models.agents.tokens import AgentPrincipal, mark_token_used

router = APIRouter(tags=["integrations"])

AGENT_ID = "8c7b6a59-4d3e-4f2a-9b1c-0d9e8f7a6b5c"
RELAY_PATH = "/v1/agents/connect"
SESSION_PATH = "/v1/agent/session"
# How often a working agent reports (a heartbeat while a handler runs).
HEARTBEAT_SECONDS = 10


class PubNubSessions(Protocol):
    """The PubNub transport's hook (set as `app.state.agent_pubnub` by whoever wires PubNub):
    the `pubnub` block of a PubNub agent's session, as a dict of PubNubSessionOut's fields."""

    async def grant(self, principal: AgentPrincipal) -> dict[str, Any]: ...


class PubNubSessionOut(BaseModel):
    model_config = example(
        subscribe_key="sub-c-0000-example",
        publish_key="pub-c-0000-example",
        auth_token="qEF2AkF0GmXample",  # noqa: S106 (an example)
        ttl_minutes=60,
        tasks_channel=f"blocks.{AGENT_ID}.tasks",
        results_channel=f"blocks.{AGENT_ID}.results",
        cipher_key="example-cipher-key",
        origin=None,
        ssl=True,
    )

    subscribe_key: str
    publish_key: str
    auth_token: str = Field(description="An Access Manager token for this agent's channels")
    ttl_minutes: int = Field(description="The token's life: call this again before it ends")
    tasks_channel: str
    results_channel: str
    cipher_key: str = Field(description="The payloads' AES-256 key (the SDK's crypto module)")
    origin: str | None = None
    ssl: bool | None = None


class AgentSessionOut(BaseModel):
    model_config = example(
        agent="invoice-reader",
        agent_id=AGENT_ID,
        org_id=ex.ORG_ID,
        skills=["extract"],
        transport="relay",
        relay_url=f"wss://blocks.acme.example{RELAY_PATH}",
        heartbeat_seconds=HEARTBEAT_SECONDS,
        pubnub=None,
        dev_mode=False,
    )

    agent: str = Field(description="The agent's name in its organization")
    agent_id: str
    org_id: str
    skills: list[str] = Field(description="The skills this token may serve")
    transport: Literal["relay", "pubnub"]
    relay_url: str = Field(description="The relay's WebSocket (ws:// or wss://)")
    heartbeat_seconds: int
    pubnub: PubNubSessionOut | None = Field(description="For a PubNub agent; else null")
    dev_mode: bool = Field(
        description="True when the agent connected WITHOUT a token (BLOCKS_AGENT_DEV_NO_AUTH: "
        "dev mode on loopback only, as an agent of the demo organization)"
    )


def public_base(request: Request) -> str:
    """Blocks' public root: BLOCKS_PUBLIC_URL when it is set, else the request's own (as the
    trusted proxy, if any, reported it)."""
    settings = request.app.state.settings
    if "public_url" in settings.model_fields_set:
        return str(settings.public_url).rstrip("/")
    return str(request.base_url).rstrip("/")


def relay_url(request: Request) -> str:
    """The relay's WebSocket URL: wss:// behind https, ws:// otherwise."""
    parts = urlsplit(public_base(request))
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, f"{parts.path}{RELAY_PATH}", "", ""))


async def _pubnub_block(
    request: Request, principal: AgentPrincipal, transport: str
) -> PubNubSessionOut | None:
    if transport != "pubnub":
        return None
    hook: PubNubSessions | None = getattr(request.app.state, "agent_pubnub", None)
    if hook is None:
        raise service_unavailable(
            "this agent uses PubNub, which this server is not configured for",
            code="pubnub_unavailable",
        )
    try:
        return PubNubSessionOut(**await hook.grant(principal))
    except PubNubUnavailable as err:
        raise service_unavailable(
            f"PubNub did not grant this agent's token; try again ({err})",
            code="pubnub_unavailable",
        ) from None


@router.get(
    SESSION_PATH,
    response_model=AgentSessionOut,
    summary="Open an agent's session",
    operation_id="open_agent_session",
)
async def agent_session(
    request: Request, principal: AgentCaller, session: DbSession
) -> AgentSessionOut:
    """What the agent SDK asks first, with the agent's token: who it is, its skills and how to
    connect. A revoked or unknown token is a 401, audited as `agent.access_denied`. In dev mode
    without authentication (`X-Blocks-Dev-Agent`), `dev_mode` is true."""
    ctx = principal.context()
    agent = await get_agent(ctx, session, principal.agent_id)
    if agent is None:  # deleted since the token was read (the token itself resolved)
        raise unauthorized("this agent was deleted", code="agent_unauthorized")
    await mark_seen(ctx, session, agent.id)
    if not principal.dev_mode:  # a dev agent has no token
        await mark_token_used(ctx, session, principal.token_id)
    declared = set(agent.skill_ids())
    return AgentSessionOut(
        agent=agent.name,
        agent_id=str(agent.id),
        org_id=str(agent.org_id),
        skills=sorted(principal.skills & declared),
        transport="pubnub" if agent.transport == "pubnub" else "relay",
        relay_url=relay_url(request),
        heartbeat_seconds=HEARTBEAT_SECONDS,
        pubnub=await _pubnub_block(request, principal, agent.transport),
        dev_mode=principal.dev_mode,
    )
