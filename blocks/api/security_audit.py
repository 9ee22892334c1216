"""Audit events of identity and access that happen outside one organization's request context.

Sign-up, sign-in attempts, resets and refused anonymous requests land in the platform chain
(`PLATFORM_ORG`); an event about a known person is also written to each organization they are an
active member of, so that organization's auditors see attempts on their members' accounts.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from fastapi import Request
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.audit.records import ActorType, AuditRecord, Outcome, RequestOrigin
from blocks.core.context import PLATFORM_ORG, AuthMethod, OrgContext, OrgId
from blocks.infra.db import bound_org
from blocks.models.audit.events import append_events


def _sessions(request: Request) -> Any:
    return request.app.state.sessions


def client_ip(request: Request) -> str | None:
    """The client's address: the peer's, or what a trusted proxy forwarded (the app is wrapped
    in uvicorn's ProxyHeadersMiddleware configured with BLOCKS_TRUSTED_PROXIES)."""
    return request.client.host if request.client else None


def user_agent(request: Request) -> str | None:
    return (request.headers.get("user-agent") or "")[:500] or None


def request_origin_fields(request: Request) -> dict[str, Any]:
    return {"ip": client_ip(request), "user_agent": user_agent(request)}


def request_audit_fields(request: Request, ctx: OrgContext) -> dict[str, Any]:
    """Who and from where, for audit events written by the API."""
    if ctx.auth == AuthMethod.SCIM:  # no person: the identity provider, by its SCIM token
        actor = {"actor_type": ActorType.SCIM, "actor_id": str(ctx.credential_id)}
    else:
        actor = {
            "actor_type": ActorType.USER if ctx.user_id else ActorType.API_KEY,
            "actor_id": str(ctx.user_id) if ctx.user_id else None,
        }
    return {
        **actor,
        "actor_email": ctx.actor_email,
        **request_origin_fields(request),
    }


def request_origin(request: Request, ctx: OrgContext) -> RequestOrigin:
    """The same fields, for an event a workflow writes on the caller's behalf (a run's start, a
    decision), plus the credential that signed the request."""
    return RequestOrigin(
        actor_email=ctx.actor_email,
        ip=client_ip(request),
        user_agent=user_agent(request),
        credential_type=ctx.auth.value,
        credential_id=str(ctx.credential_id) if ctx.credential_id else None,
    )


async def record_security_event(
    request: Request,
    *,
    action: str,
    outcome: Outcome = Outcome.SUCCESS,
    reason: str | None = None,
    user_id: uuid.UUID | None = None,
    email: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    data: dict[str, Any] | None = None,
    org_ids: Iterable[uuid.UUID] = (),
    db: AsyncSession | None = None,
) -> None:
    """Append one event to the platform chain and to each of `org_ids`.

    Without `db`, each append is its own transaction, so a refusal survives the request's
    rollback. With `db` (the request's transaction), the copy for the organization `db` is
    bound to (or the platform, if unbound) commits or rolls back with the change it records,
    which also lets it name a person or organization created in that same transaction.
    """
    base: dict[str, Any] = {
        "action": action,
        "outcome": outcome,
        "reason": reason,
        "target_type": target_type or ("user" if user_id else None),
        "target_id": target_id or (str(user_id) if user_id else None),
        "data": dict(data or {}),
        **request_origin_fields(request),
    }
    if user_id is not None:
        record = AuditRecord(
            actor_type=ActorType.USER, actor_id=str(user_id), actor_email=email, **base
        )
    else:
        # Nobody is signed in: the address someone typed is data, not an identity.
        if email is not None:
            base["data"]["email"] = email[:320]
        record = AuditRecord(actor_type=ActorType.ANONYMOUS, **base)
    targets = list(dict.fromkeys([PLATFORM_ORG, *org_ids]))
    in_request = None
    if db is not None:
        in_request = bound_org(db) or PLATFORM_ORG
        if in_request not in targets:
            targets.append(in_request)
    for org_id in targets:
        ctx = OrgContext(org_id=OrgId(org_id), user_id=user_id, roles=(), auth=AuthMethod.SYSTEM)
        if db is not None and org_id == in_request:
            await append_events(ctx, db, [record])
            continue
        async with _sessions(request)() as session, session.begin():
            await append_events(ctx, session, [record])
