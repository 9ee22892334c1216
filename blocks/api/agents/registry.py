"""Routes of the agent registry: register, list, read, change and delete an organization's agents.

An agent is a name (what workflows call it by, unique among the organization's live agents), an
A2A v1.0 agent card checked through the a2a-sdk's types on the way in (422 naming the field, e.g.
`card.skills[0].tags`; blocks.infra.agents.cards), whether that card is public (served at the
agent's well-known URL, api.agents.well_known), and its transport (`relay` or `pubnub`).
Registering, changing and deleting need `integration:manage` and are audited (`agent.registered`,
`agent.updated`, `agent.deleted`: the name, transport, card version and skill ids, never more);
deleting revokes the agent's tokens. Reading needs `run:read`: whoever watches runs may see which
agents are online. Online means an open relay connection to this API process, or heard from in
the last ONLINE_SECONDS (a connection to another replica, a PubNub agent's session).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, StringConstraints

from blocks.api.agents.session import public_base
from blocks.api.deps import CanManageIntegrations, CanReadRuns, DbSession, record_change
from blocks.api.errors import Problem, invalid_field, not_found
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.core.agents.cards import CardError, skill_ids
from blocks.core.context import OrgContext
from blocks.infra.agents.cards import parse_card
from blocks.models.agents.metrics import TaskFigures, agent_figures
from blocks.models.agents.registry import (
    Agent,
    AgentNameTaken,
    delete_agent,
    get_agent,
    list_agents,
    register_agent,
    update_agent,
)
from blocks.models.agents.tokens import revoke_agent_tokens
from blocks.models.base import utcnow
from blocks.models.identity.members import get_org

router = APIRouter(prefix="/v1/agents", tags=["integrations"])

AGENT_ID = "8c7b6a59-4d3e-4f2a-9b1c-0d9e8f7a6b5c"
ONLINE_SECONDS = 60
EXAMPLE_CARD: dict[str, Any] = {
    "name": "Invoice reader",
    "description": "Reads supplier invoices and returns their fields",
    "version": "1.4.0",
    "provider": {"organization": "Acme Corp", "url": "https://acme.example"},
    "supportedInterfaces": [
        {
            "url": "https://invoices.acme.example/a2a",
            "protocolBinding": "JSONRPC",
            "protocolVersion": "1.0",
        }
    ],
    "capabilities": {"streaming": False, "pushNotifications": False},
    "defaultInputModes": ["application/json"],
    "defaultOutputModes": ["application/json"],
    "skills": [
        {
            "id": "extract",
            "name": "Extract invoice fields",
            "description": "Supplier, number, date, lines and totals of one invoice",
            "tags": ["invoices", "finance"],
            "examples": ["Extract the fields of invoice INV-2025-0042"],
            "inputModes": ["application/json"],
            "outputModes": ["application/json"],
        }
    ],
}

Name = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
]
Transport = Literal["relay", "pubnub"]
_CARD_DESCRIPTION = (
    "An A2A v1.0 agent card (JSON, as the a2a-sdk's AgentCard writes it): name, description, "
    "version, supportedInterfaces, capabilities, defaultInputModes, defaultOutputModes, skills "
    "(id, name, description, tags), optionally provider, securitySchemes, securityRequirements"
)


class AgentIn(StrictModel):
    model_config = example(
        name="invoice-reader", card=EXAMPLE_CARD, public=False, transport="relay"
    )

    name: Name = Field(description="What workflows call the agent by; unique among live agents")
    card: dict[str, Any] = Field(description=_CARD_DESCRIPTION)
    public: bool = Field(default=False, description="Serve the card at its well-known URL")
    transport: Transport = Field(default="relay", description="How tasks reach the agent")


class AgentPatch(StrictModel):
    model_config = example(public=True)

    card: dict[str, Any] | None = Field(default=None, description=_CARD_DESCRIPTION)
    public: bool | None = None
    transport: Transport | None = None


class AgentFiguresOut(BaseModel):
    model_config = example(
        calls=120,
        completed=112,
        failed=3,
        rejected=1,
        canceled=2,
        in_flight=2,
        latency_p50_ms=840.0,
        latency_p99_ms=4210.5,
        last_call_at=ex.DECIDED,
    )

    calls: int = Field(description="Tasks dispatched")
    completed: int
    failed: int
    rejected: int
    canceled: int
    in_flight: int = Field(description="Dispatched and not ended yet")
    latency_p50_ms: float | None = Field(description="Dispatch to end, of the tasks that ended")
    latency_p99_ms: float | None
    last_call_at: datetime | None


class AgentOut(BaseModel):
    model_config = example(
        id=AGENT_ID,
        name="invoice-reader",
        card=EXAMPLE_CARD,
        skills=["extract"],
        public=False,
        card_url=None,
        transport="relay",
        status="online",
        last_seen_at=ex.DECIDED,
        metrics=AgentFiguresOut.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index]
        created_by=ex.OWNER_ID,
        created_at=ex.CREATED,
        updated_at=ex.CREATED,
        deleted_at=None,
    )

    id: uuid.UUID
    name: str
    card: dict[str, Any] = Field(description="The card as registered (the SDK's JSON)")
    skills: list[str] = Field(description="The ids of the card's skills")
    public: bool
    card_url: str | None = Field(description="Where the public card is served; null if private")
    transport: str
    status: Literal["online", "offline"]
    last_seen_at: datetime | None
    metrics: AgentFiguresOut = Field(description="Over every task the agent was sent")
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


def card_url(request: Request, slug: str, agent: Agent) -> str | None:
    if not agent.public or agent.deleted_at is not None:
        return None
    return f"{public_base(request)}/v1/orgs/{slug}/agents/{agent.name}/.well-known/agent-card.json"


def online_ids(request: Request) -> frozenset[uuid.UUID]:
    """Agents with an open relay connection to this process (none if the relay is not wired)."""
    hub = getattr(request.app.state, "relay", None)
    online = hub.online() if hub is not None else frozenset()
    # PubNub agents present on their tasks channel (PubNub's presence), when PubNub is wired.
    pubnub = getattr(request.app.state, "agent_pubnub", None)
    return online | pubnub.online() if pubnub is not None else online


def status(agent: Agent, online: frozenset[uuid.UUID]) -> Literal["online", "offline"]:
    if agent.deleted_at is None and agent.id in online:
        return "online"
    recent = agent.last_seen_at is not None and utcnow() - agent.last_seen_at < timedelta(
        seconds=ONLINE_SECONDS
    )
    return "online" if recent and agent.deleted_at is None else "offline"


def figures_out(figures: TaskFigures | None) -> AgentFiguresOut:
    f = figures or TaskFigures()
    return AgentFiguresOut(
        calls=f.calls,
        completed=f.completed,
        failed=f.failed,
        rejected=f.rejected,
        canceled=f.canceled,
        in_flight=f.in_flight,
        latency_p50_ms=f.latency_p50_ms,
        latency_p99_ms=f.latency_p99_ms,
        last_call_at=f.last_call_at,
    )


async def org_slug(ctx: OrgContext, session: DbSession) -> str:
    org = await get_org(ctx, session)
    return org.slug if org is not None else ""


def agent_out(
    request: Request,
    slug: str,
    agent: Agent,
    figures: TaskFigures | None = None,
    online: frozenset[uuid.UUID] = frozenset(),
) -> AgentOut:
    return AgentOut(
        id=agent.id,
        name=agent.name,
        card=agent.card,
        skills=skill_ids(agent.card),
        public=agent.public,
        card_url=card_url(request, slug, agent),
        transport=agent.transport,
        status=status(agent, online),
        last_seen_at=agent.last_seen_at,
        metrics=figures_out(figures),
        created_by=agent.created_by,
        created_at=agent.created_at,
        updated_at=agent.updated_at,
        deleted_at=agent.deleted_at,
    )


def checked_card(card: dict[str, Any]) -> dict[str, Any]:
    """The card as the SDK writes it, or a 422 naming the field the A2A types refuse."""
    try:
        return parse_card(card)
    except CardError as refused:
        raise invalid_field(refused.field, refused.reason) from None


def audit_data(agent: Agent, **extra: Any) -> dict[str, Any]:
    """What an audit event says of an agent: metadata of its card, not the card."""
    return {
        "name": agent.name,
        "transport": agent.transport,
        "public": agent.public,
        "card_name": agent.card.get("name"),
        "card_version": agent.card.get("version"),
        "skills": skill_ids(agent.card),
        **extra,
    }


async def agent_or_404(ctx: OrgContext, session: DbSession, agent_id: uuid.UUID) -> Agent:
    agent = await get_agent(ctx, session, agent_id)
    if agent is None:
        raise not_found("agent")
    return agent


@router.post("", status_code=201, response_model=AgentOut, summary="Register an agent")
async def register_remote_agent(
    body: AgentIn, request: Request, ctx: CanManageIntegrations, session: DbSession
) -> AgentOut:
    """A card the A2A types refuse is a 422 naming the field; a live agent of the same name a
    409. Issue the agent a token next (POST /v1/agents/{agent_id}/tokens)."""
    card = checked_card(body.card)
    try:
        agent = await register_agent(
            ctx, session, name=body.name, card=card, public=body.public, transport=body.transport
        )
    except AgentNameTaken:
        raise Problem(
            409, "Conflict", f"an agent named {body.name!r} exists", code="agent_exists"
        ) from None
    await record_change(
        request,
        ctx,
        session,
        "agent.registered",
        target_type="agent",
        target_id=str(agent.id),
        data=audit_data(agent),
    )
    return agent_out(request, await org_slug(ctx, session), agent)


@router.get("", response_model=list[AgentOut], summary="List agents")
async def list_remote_agents(
    request: Request, ctx: CanReadRuns, session: DbSession
) -> list[AgentOut]:
    """The organization's live agents by name, each with its status and task figures."""
    agents = await list_agents(ctx, session)
    figures = await agent_figures(ctx, session)
    online = online_ids(request)
    slug = await org_slug(ctx, session)
    return [agent_out(request, slug, a, figures.get(a.id), online) for a in agents]


@router.get("/{agent_id}", response_model=AgentOut, summary="Read an agent")
async def read_remote_agent(
    agent_id: uuid.UUID, request: Request, ctx: CanReadRuns, session: DbSession
) -> AgentOut:
    agent = await agent_or_404(ctx, session, agent_id)
    figures = await agent_figures(ctx, session, agent_id=agent.id)
    slug = await org_slug(ctx, session)
    return agent_out(request, slug, agent, figures.get(agent.id), online_ids(request))


@router.patch("/{agent_id}", response_model=AgentOut, summary="Change an agent")
async def change_remote_agent(
    agent_id: uuid.UUID,
    body: AgentPatch,
    request: Request,
    ctx: CanManageIntegrations,
    session: DbSession,
) -> AgentOut:
    """A new card (checked as on registration), public or not, the transport. Tokens keep their
    scope; a skill the new card drops is no longer served by any of them."""
    agent = await agent_or_404(ctx, session, agent_id)
    before = audit_data(agent)
    card = checked_card(body.card) if body.card is not None else None
    agent = await update_agent(
        ctx, session, agent, card=card, public=body.public, transport=body.transport
    )
    after = audit_data(agent)
    changed = sorted(k for k in after if after[k] != before[k])
    if card is not None and "card" not in changed:
        changed.append("card")
    await record_change(
        request,
        ctx,
        session,
        "agent.updated",
        target_type="agent",
        target_id=str(agent.id),
        data={
            **after,
            "changed": changed,
            "before": {k: before[k] for k in before if k in changed},
        },
    )
    slug = await org_slug(ctx, session)
    return agent_out(request, slug, agent, online=online_ids(request))


@router.delete("/{agent_id}", response_model=AgentOut, summary="Delete an agent")
async def delete_remote_agent(
    agent_id: uuid.UUID, request: Request, ctx: CanManageIntegrations, session: DbSession
) -> AgentOut:
    """The agent stops receiving tasks and its tokens are revoked at once (each revocation
    audited); its name is free again. Its task metadata stays."""
    agent = await agent_or_404(ctx, session, agent_id)
    agent = await delete_agent(ctx, session, agent)
    revoked = await revoke_agent_tokens(ctx, session, agent.id)
    for token in revoked:
        await record_change(
            request,
            ctx,
            session,
            "agent.token_revoked",
            target_type="agent_token",
            target_id=str(token.id),
            data={"agent_id": str(agent.id), "name": token.name, "reason": "agent deleted"},
        )
    await record_change(
        request,
        ctx,
        session,
        "agent.deleted",
        target_type="agent",
        target_id=str(agent.id),
        data=audit_data(agent, tokens_revoked=len(revoked)),
    )
    return agent_out(request, await org_slug(ctx, session), agent)
