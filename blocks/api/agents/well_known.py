"""The public agent card: `GET /v1/orgs/{org_slug}/agents/{name}/.well-known/agent-card.json`.

No credential: anyone may read a card its organization marked public; a private card, an unknown
agent or organization is the same 404. The path is the agent's own A2A base URL
(`.../v1/orgs/{org_slug}/agents/{name}`) followed by the A2A well-known suffix, so an A2A client's
card resolver given that base finds it (the org slug and agent name are public names, as in any
URL). The card served is the registered one with its interfaces replaced by Blocks' endpoint
for the agent's transport (core.agents.cards.served_card): the agent has no inbound address,
and tasks reach it only through Blocks. Counted against the per-address API limit.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from blocks.api import rate_limit
from blocks.api.agents.registry import EXAMPLE_CARD
from blocks.api.agents.session import SESSION_PATH, public_base, relay_url
from blocks.api.deps import DbSession
from blocks.api.errors import not_found
from blocks.core.agents.cards import served_card
from blocks.models.agents.registry import public_agent

router = APIRouter(tags=["integrations"])

CARD_PATH = "/v1/orgs/{org_slug}/agents/{name}/.well-known/agent-card.json"
_EXAMPLE = served_card(
    EXAMPLE_CARD, url="wss://blocks.acme.example/v1/agents/connect", transport="relay"
)


@router.get(
    CARD_PATH,
    summary="Read a public agent card",
    operation_id="read_public_agent_card",
    responses={200: {"content": {"application/json": {"example": _EXAMPLE}}}},
)
async def public_agent_card(
    org_slug: str, name: str, request: Request, session: DbSession
) -> JSONResponse:
    """The A2A v1.0 agent card, as the a2a-sdk's `A2ACardResolver` reads it."""
    await rate_limit.enforce(request, "api_ip", rate_limit.address(request))
    agent = await public_agent(session, org_slug, name)
    if agent is None:
        raise not_found("agent card")
    if agent.transport == "pubnub":
        url = f"{public_base(request)}{SESSION_PATH}"
    else:
        url = relay_url(request)
    card: dict[str, Any] = served_card(agent.card, url=url, transport=agent.transport)
    return JSONResponse(card, headers={"Cache-Control": "public, max-age=60"})
