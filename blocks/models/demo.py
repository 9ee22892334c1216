"""Operator tooling: the demo organization `blocks dev` creates once (two members with keys and the
example agent with a token), keys, passwords and organizations made from the CLI. Each leaves the
audit event the API would, its actor the system and the command (`cli:dev`, `cli:api-key`, ...).
Also where agents in dev mode without authentication find the demo organization's agents."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.audit.records import ActorType, AuditRecord
from blocks.core.context import PLATFORM_ORG, AuthMethod, OrgContext, OrgId
from blocks.core.roles import Role, parse_roles
from blocks.infra.agents.cards import parse_card
from blocks.infra.crypto.passwords import hash_password
from blocks.infra.db import bind_org
from blocks.models.agents.registry import create_agent
from blocks.models.agents.tokens import issue_agent_token
from blocks.models.audit.events import append_events
from blocks.models.base import utcnow
from blocks.models.identity.api_keys import create_api_key
from blocks.models.identity.orgs import (
    add_member,
    create_org_with_owner,
    find_user_by_email,
    get_membership,
    get_org_by_slug,
)
from blocks.models.identity.sessions import revoke_sessions

DEMO_SLUG = "demo"
DEMO_AGENT = "invoice-agent"
# The example agent's A2A card (examples/agents/invoice_card.json, kept equal by a unit test): as
# data here, so `blocks dev` registers it whether or not the examples are on this machine.
DEMO_AGENT_CARD: dict[str, Any] = {
    "name": DEMO_AGENT,
    "description": "Adds up invoices and checks their vendors, inside the finance network",
    "version": "1.0.0",
    "provider": {"organization": "Example Corp", "url": "https://example.com"},
    "supportedInterfaces": [
        {
            "url": "https://agents.example.com/invoice-agent",
            "protocolBinding": "JSONRPC",
            "protocolVersion": "1.0",
        }
    ],
    "capabilities": {"streaming": False},
    "defaultInputModes": ["application/json"],
    "defaultOutputModes": ["application/json"],
    "skills": [
        {
            "id": "extract-totals",
            "name": "Extract totals",
            "description": "Subtotal, tax and total of an invoice's line items",
            "tags": ["invoices", "finance"],
            "examples": [
                '{"line_items": [{"quantity": 2, "unit_price": "9.50"}], "tax_rate": "0.2"}'
            ],
        },
        {
            "id": "check-vendor",
            "name": "Check vendor",
            "description": "Approves a known vendor; asks a person about any other",
            "tags": ["invoices", "vendors"],
        },
    ],
}


@dataclass(frozen=True)
class DemoKeys:
    owner_email: str
    owner_key: str
    approver_email: str
    approver_key: str
    agent_name: str
    agent_token: str


async def ensure_demo_org(session: AsyncSession) -> DemoKeys | None:
    """Create the demo org and return its keys; None if it exists (keys are shown only once)."""
    if await get_org_by_slug(session, DEMO_SLUG) is not None:
        return None
    org, owner, _ = await create_org_with_owner(
        session,
        slug=DEMO_SLUG,
        name="Demo Org",
        owner_email="owner@demo.example",
        owner_name="Demo Owner",
    )
    ctx = OrgContext(
        org_id=OrgId(org.id), user_id=owner.id, roles=(Role.OWNER,), auth=AuthMethod.SYSTEM
    )
    approver, _ = await add_member(
        ctx,
        session,
        email="approver@demo.example",
        display_name="Demo Approver",
        roles=[Role.APPROVER],
    )
    await append_events(
        ctx, session, [_operator_record("dev", "org.created", "organization", str(org.id))]
    )
    owner_key = await _audited_key(
        ctx, session, "dev", user_id=owner.id, name="demo owner", roles=[Role.OWNER]
    )
    approver_key = await _audited_key(
        ctx, session, "dev", user_id=approver.id, name="demo approver", roles=[Role.APPROVER]
    )
    agent_token = await _demo_agent(ctx, session)
    return DemoKeys(owner.email, owner_key, approver.email, approver_key, DEMO_AGENT, agent_token)


async def _demo_agent(ctx: OrgContext, session: AsyncSession) -> str:
    """The example agent (relay) and a token for all its skills, audited as the API's
    (api/agents/registry.py, tokens.py): `agent.registered`, `agent.token_issued`."""
    card = parse_card(DEMO_AGENT_CARD)
    agent = await create_agent(ctx, session, name=DEMO_AGENT, card=card, transport="relay")
    skills = agent.skill_ids()
    registered = {
        "name": agent.name,
        "transport": agent.transport,
        "public": agent.public,
        "card_name": card.get("name"),
        "card_version": card.get("version"),
        "skills": skills,
    }
    token, plaintext = await issue_agent_token(
        ctx, session, agent_id=agent.id, name="demo", skills=skills
    )
    issued = {"agent_id": str(agent.id), "name": token.name, "skills": list(token.skills)}
    records = [
        _operator_record("dev", "agent.registered", "agent", str(agent.id), registered),
        _operator_record("dev", "agent.token_issued", "agent_token", str(token.id), issued),
    ]
    await append_events(ctx, session, records)
    return plaintext


async def demo_org_context(session: AsyncSession) -> OrgContext | None:
    """The open demo organization's context for an agent in dev mode without authentication (no
    member, no role); None when there is none. The organization is the fixed demo slug, never
    what a request names."""
    org = await get_org_by_slug(session, DEMO_SLUG)
    if org is None or org.closed_at is not None:
        return None
    return OrgContext(org_id=OrgId(org.id), user_id=None, roles=(), auth=AuthMethod.AGENT)


async def issue_member_key(
    session: AsyncSession, *, org_slug: str, email: str, roles: list[Role], name: str
) -> str:
    org = await get_org_by_slug(session, org_slug)
    if org is None:
        raise LookupError(f"no organization {org_slug!r}")
    await bind_org(session, org.id)
    user = await find_user_by_email(session, email)
    ctx = OrgContext(org_id=OrgId(org.id), user_id=None, roles=(), auth=AuthMethod.SYSTEM)
    membership = await get_membership(ctx, session, user.id) if user else None
    if user is None or membership is None:
        raise LookupError(f"{email} is not a member of {org_slug!r}")
    held = set(parse_roles(membership.roles))
    if not set(roles) <= held:
        missing = ", ".join(sorted(r.value for r in set(roles) - held))
        raise LookupError(f"{email} does not hold {missing} in {org_slug!r}")
    return await _audited_key(ctx, session, "api-key", user_id=user.id, name=name, roles=roles)


async def _audited_key(
    ctx: OrgContext,
    session: AsyncSession,
    command: str,
    *,
    user_id: uuid.UUID,
    name: str,
    roles: list[Role],
) -> str:
    """A key and its `api_key.created` event, shaped as the API's (api/identity/api_keys.py)."""
    key, plaintext = await create_api_key(ctx, session, user_id=user_id, name=name, roles=roles)
    data = {
        "name": key.name,
        "owner_user_id": str(key.user_id),
        "roles": list(key.roles),
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
    }
    record = _operator_record(command, "api_key.created", "api_key", str(key.id), data)
    await append_events(ctx, session, [record])
    return plaintext


def _operator_record(
    command: str,
    action: str,
    target_type: str,
    target_id: str,
    data: dict[str, object] | None = None,
) -> AuditRecord:
    """An event whose actor is an operator command, not a person: `cli:<command>`."""
    return AuditRecord(
        action=action,
        actor_type=ActorType.SYSTEM,
        actor_id=f"cli:{command}",
        target_type=target_type,
        target_id=target_id,
        data=data or {},
    )


async def set_password_by_operator(session: AsyncSession, *, email: str, password: str) -> None:
    """Set a person's password from the CLI (the first owner of a deployment without email):
    their sessions end, and the platform chain records it."""
    user = await find_user_by_email(session, email)
    if user is None:
        raise LookupError(f"no account for {email}")
    user.password_hash = hash_password(password)
    user.password_changed_at = utcnow()
    session.add(user)
    await revoke_sessions(session, user_id=user.id, reason="password set by an operator")
    platform = OrgContext(org_id=PLATFORM_ORG, user_id=None, roles=(), auth=AuthMethod.SYSTEM)
    await append_events(
        platform,
        session,
        [_operator_record("set-password", "user.password_set_by_operator", "user", str(user.id))],
    )


async def create_org_by_operator(
    session: AsyncSession, *, slug: str, name: str, owner_email: str, owner_name: str
) -> uuid.UUID:
    """An organization and its first owner (created if new; they sign in by emailed link or a
    password an operator sets), recorded in the organization's chain."""
    if await get_org_by_slug(session, slug) is not None:
        raise LookupError(f"organization {slug!r} exists")
    org, _, _ = await create_org_with_owner(
        session, slug=slug, name=name, owner_email=owner_email, owner_name=owner_name
    )
    ctx = OrgContext(org_id=OrgId(org.id), user_id=None, roles=(), auth=AuthMethod.SYSTEM)
    await append_events(
        ctx, session, [_operator_record("create-org", "org.created", "organization", str(org.id))]
    )
    return org.id
