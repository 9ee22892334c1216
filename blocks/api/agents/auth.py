"""An agent token (`Authorization: Bearer blkagent_...`) -> the agent's principal, for HTTP routes
agents call (GET /v1/agent/session).

The agent-token counterpart of `deps.org_context`: a missing token is a 401; a token that does not
resolve is a 401, counted against the address's invalid-request limit and audited as
`agent.access_denied` (in the token's organization when the secret matched a revoked or expired
token or a deleted agent, else in the platform chain); a live token is counted against the
per-credential request limit. An agent token opens only the agent routes: org_context does not
take it (it is not an API key), and this takes nothing else.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from blocks.api import rate_limit
from blocks.api.deps import DbSession, unauthorized
from blocks.api.security_audit import record_security_event, request_origin_fields
from blocks.core.audit.records import ActorType, AuditRecord, Outcome
from blocks.models.agents.tokens import (
    TOKEN_PREFIX,
    AgentPrincipal,
    RefusedAgentToken,
    check_agent_token,
)
from blocks.models.audit.events import append_events

DENIED = "agent.access_denied"


def agent_bearer(connection: HTTPConnection) -> str | None:
    """The bearer token of a request or WebSocket handshake, if it sends one."""
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _target(connection: HTTPConnection) -> str:
    method = connection.scope.get("method") or "WEBSOCKET"
    return f"{method} {connection.url.path}"


async def record_agent_denial(
    connection: HTTPConnection, token: str, refused: RefusedAgentToken | None, reason: str
) -> None:
    """One `agent.access_denied` event, in its own transaction (the request is refused)."""
    target = _target(connection)
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
    data: dict[str, Any] = {"token_shape": token.startswith(f"{TOKEN_PREFIX}_")}
    await record_security_event(
        connection,  # type: ignore[arg-type]
        action=DENIED,
        outcome=Outcome.DENIED,
        reason=reason,
        target_type="route",
        target_id=target,
        data=data,
    )


async def agent_principal(request: Request, session: DbSession) -> AgentPrincipal:
    """The agent presenting its token, the session bound to its organization."""
    token = agent_bearer(request)
    if token is None:
        raise unauthorized("send the agent's token (Authorization: Bearer blkagent_...)")
    checked = await check_agent_token(session, token)
    if not isinstance(checked, AgentPrincipal):
        refused = checked if isinstance(checked, RefusedAgentToken) else None
        await rate_limit.enforce_per_address(request, "invalid_ip")
        await record_agent_denial(request, token, refused, "unknown agent token")
        raise unauthorized(
            "this agent token is not valid, has expired or was revoked", code="agent_unauthorized"
        )
    # What the rate limiter audits a refusal under: the agent's organization and token.
    request.state.ctx = checked.context()
    await rate_limit.enforce(request, "api_credential", f"credential:{checked.token_id}")
    return checked


AgentCaller = Annotated[AgentPrincipal, Depends(agent_principal)]
