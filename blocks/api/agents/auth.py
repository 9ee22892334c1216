"""An agent token (`Authorization: Bearer blkagent_...`) -> the agent's principal, for HTTP routes
agents call (GET /v1/agent/session).

The agent-token counterpart of `deps.org_context`: a missing token is a 401; a token that does not
resolve is a 401, counted against the address's invalid-request limit and audited as
`agent.access_denied` (in the token's organization when the secret matched a revoked or expired
token or a deleted agent, else in the platform chain); a live token is counted against the
per-credential request limit. An agent token opens only the agent routes: org_context does not
take it (it is not an API key), and this takes nothing else.

Dev mode without authentication (BLOCKS_AGENT_DEV_NO_AUTH, which settings accept only with
BLOCKS_ENV=dev on a loopback API): a request or handshake without a token but with
`X-Blocks-Dev-Agent: <name>`, whose own peer address is loopback, acts as that agent of the demo
organization with every skill its card declares. Each such connection is logged as a WARNING and
its audit events say `dev_mode`; anything else with that header (mode off, another address, no
such agent) is refused as an unknown token is, and audited.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import HTTPConnection

from blocks.api import rate_limit
from blocks.api.deps import DbSession, unauthorized
from blocks.api.security_audit import record_security_event, request_origin_fields
from blocks.core.audit.records import ActorType, AuditRecord, Outcome
from blocks.infra.settings import Environment, Settings, is_loopback
from blocks.models.agents.registry import agent_by_name
from blocks.models.agents.tokens import (
    TOKEN_PREFIX,
    AgentPrincipal,
    RefusedAgentToken,
    check_agent_token,
)
from blocks.models.audit.events import append_events
from blocks.models.demo import demo_org_context

DENIED = "agent.access_denied"
DEV_AGENT_HEADER = "x-blocks-dev-agent"
DEV_MODE_WARNING = (
    "agents may connect WITHOUT a token: BLOCKS_AGENT_DEV_NO_AUTH, dev mode on loopback only"
)
# A proxy on this machine relaying someone else's request shows a loopback peer: a request that
# was forwarded is never a dev agent, whatever address the header claims.
_FORWARDING = ("forwarded", "x-forwarded-for", "x-real-ip")
# A dev agent has no token: its principal's token_id is derived from the agent (the rate limiter's
# key), so it names no row of agent_tokens.
_DEV_TOKEN_NAMESPACE = uuid.UUID("5f0c3f3e-7d1a-4b8e-9a51-0de7a9e6b2c4")
_log = logging.getLogger("blocks.agents")


@dataclass(frozen=True)
class DevAgent:
    """An agent named by `X-Blocks-Dev-Agent` instead of presenting a token."""

    name: str


# How an agent says who it is: its bearer token, or (dev mode) its name.
AgentCredential = str | DevAgent


@dataclass(frozen=True)
class AgentRefusal:
    """A credential that opens nothing: the genuine token no longer valid (`token`, for the
    audit event in its organization), and why."""

    credential: AgentCredential
    reason: str
    token: RefusedAgentToken | None = None


def agent_bearer(connection: HTTPConnection) -> str | None:
    """The bearer token of a request or WebSocket handshake, if it sends one."""
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def agent_credential(connection: HTTPConnection) -> AgentCredential | None:
    """The bearer token; else the dev agent the request names; else None (nothing sent)."""
    token = agent_bearer(connection)
    if token is not None:
        return token
    name = connection.headers.get(DEV_AGENT_HEADER, "").strip()
    return DevAgent(name) if name else None


def dev_mode_on(settings: Settings) -> bool:
    """BLOCKS_AGENT_DEV_NO_AUTH, where settings allow it (checked again: a copied Settings skips
    its validators)."""
    return (
        settings.agent_dev_no_auth
        and settings.env is Environment.DEV
        and is_loopback(settings.api_host)
        and not settings.trusted_proxies
    )


def warn_if_dev_mode(settings: Settings) -> None:
    """At the API's start: say loudly that agents may connect without a token."""
    if dev_mode_on(settings):
        _log.warning(DEV_MODE_WARNING)


def dev_peer_allowed(peer: str | None, headers: Mapping[str, str]) -> bool:
    """Whether a connection may act as a dev agent: its own peer address (the socket's, never
    X-Forwarded-For) is a loopback address, and no proxy forwarded it."""
    if peer is None or peer.lower() == "localhost" or not is_loopback(peer):
        return False
    return not any(name in headers for name in _FORWARDING)


async def _check_dev_agent(
    connection: HTTPConnection, session: AsyncSession, dev: DevAgent
) -> AgentPrincipal | AgentRefusal:
    if not dev_mode_on(connection.app.state.settings):
        return AgentRefusal(dev, "agent dev mode is off (BLOCKS_AGENT_DEV_NO_AUTH)")
    peer = connection.client.host if connection.client else None
    if not dev_peer_allowed(peer, connection.headers):
        return AgentRefusal(dev, "a dev agent from an address that is not loopback")
    ctx = await demo_org_context(session)
    if ctx is None:
        return AgentRefusal(dev, "no demo organization for a dev agent")
    agent = await agent_by_name(ctx, session, dev.name)
    if agent is None:
        return AgentRefusal(dev, "no such agent in the demo organization")
    if agent.transport != "relay":
        return AgentRefusal(dev, "a dev agent connects through the relay only")
    return AgentPrincipal(
        token_id=uuid.uuid5(_DEV_TOKEN_NAMESPACE, str(agent.id)),
        org_id=agent.org_id,
        agent_id=agent.id,
        agent_name=agent.name,
        skills=frozenset(agent.skill_ids()),
        transport=agent.transport,
        dev_mode=True,
    )


async def check_agent_credential(
    connection: HTTPConnection,
    session: AsyncSession,
    credential: AgentCredential,
    *,
    loud: bool = True,
) -> AgentPrincipal | AgentRefusal:
    """The credential's principal, the session bound to its organization; or why not. A dev
    agent is logged as a WARNING when `loud` (each connection; not each re-check)."""
    if isinstance(credential, DevAgent):
        checked = await _check_dev_agent(connection, session, credential)
        if loud and isinstance(checked, AgentPrincipal):
            _log.warning(
                "agent %r of the demo organization connected WITHOUT a token (%s %s): %s",
                checked.agent_name,
                connection.scope.get("method") or "WEBSOCKET",
                connection.url.path,
                DEV_MODE_WARNING,
            )
        return checked
    token = await check_agent_token(session, credential)
    if isinstance(token, AgentPrincipal):
        return token
    return AgentRefusal(credential, "unknown agent token", token)


def _target(connection: HTTPConnection) -> str:
    method = connection.scope.get("method") or "WEBSOCKET"
    return f"{method} {connection.url.path}"


async def record_agent_denial(connection: HTTPConnection, refusal: AgentRefusal) -> None:
    """One `agent.access_denied` event, in its own transaction (the request is refused)."""
    target = _target(connection)
    refused = refusal.token
    if refused is not None:
        ctx = refused.context()
        record = AuditRecord(
            action=DENIED,
            actor_type=ActorType.AGENT,
            actor_id=str(refused.agent_id),
            target_type="route",
            target_id=target,
            outcome=Outcome.DENIED,
            reason=refused.reason,
            data={"credential_id": str(refused.token_id), "agent_id": str(refused.agent_id)},
            **request_origin_fields(connection),  # type: ignore[arg-type]
        )
        async with connection.app.state.sessions() as session, session.begin():
            await append_events(ctx, session, [record])
        return
    credential = refusal.credential
    if isinstance(credential, DevAgent):
        data: dict[str, Any] = {"dev_mode": True, "agent": credential.name[:100]}
    else:
        data = {"token_shape": credential.startswith(f"{TOKEN_PREFIX}_")}
    await record_security_event(
        connection,  # type: ignore[arg-type]
        action=DENIED,
        outcome=Outcome.DENIED,
        reason=refusal.reason,
        target_type="route",
        target_id=target,
        data=data,
    )


async def agent_principal(request: Request, session: DbSession) -> AgentPrincipal:
    """The agent presenting its token (or, in dev mode, naming itself), the session bound to its
    organization."""
    credential = agent_credential(request)
    if credential is None:
        raise unauthorized("send the agent's token (Authorization: Bearer blkagent_...)")
    checked = await check_agent_credential(request, session, credential)
    if isinstance(checked, AgentRefusal):
        await rate_limit.enforce_per_address(request, "invalid_ip")
        await record_agent_denial(request, checked)
        raise unauthorized(
            "this agent token is not valid, has expired or was revoked", code="agent_unauthorized"
        )
    # What the rate limiter audits a refusal under: the agent's organization and token.
    request.state.ctx = checked.context()
    await rate_limit.enforce(request, "api_credential", f"credential:{checked.token_id}")
    return checked


AgentCaller = Annotated[AgentPrincipal, Depends(agent_principal)]
