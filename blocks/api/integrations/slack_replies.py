"""What the handlers of Slack's signed requests share: the reply only the sender sees, and the
audited refusal (Slack shows a refusal as text, so the HTTP answer is a 200 and the audit event
is what records it)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.api.reference.examples import example
from blocks.api.security_audit import client_ip, user_agent
from blocks.core.audit.records import ActorType, AuditRecord, Outcome
from blocks.core.context import OrgContext
from blocks.models.audit.events import append_events

INTERACTIONS_PATH = "/v1/integrations/slack/interactions"
ROUTE = f"POST {INTERACTIONS_PATH}"


def _sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    return request.app.state.sessions  # type: ignore[no-any-return]


class SlackReplyOut(BaseModel):
    """What Slack shows the person who clicked or typed: only them."""

    model_config = example(
        response_type="ephemeral",
        replace_original=False,
        text="Approved. The step `approve` is now approved.",
    )

    response_type: Literal["ephemeral"]
    replace_original: bool
    text: str


def reply(text: str) -> JSONResponse:
    """An ephemeral answer: Slack shows it to the sender alone (and keeps a clicked message)."""
    return JSONResponse({"response_type": "ephemeral", "replace_original": False, "text": text})


async def deny(request: Request, ctx: OrgContext, reason: str, data: dict[str, Any]) -> None:
    """Audit a refused Slack request in its own transaction (nothing else of it is kept)."""
    async with _sessions(request)() as session, session.begin():
        await append_events(ctx, session, [denial(request, ctx, reason, data)])


def denial(request: Request, ctx: OrgContext, reason: str, data: dict[str, Any]) -> AuditRecord:
    return AuditRecord(
        action="access.denied",
        actor_type=ActorType.USER if ctx.user_id else ActorType.ANONYMOUS,
        actor_id=str(ctx.user_id) if ctx.user_id else None,
        actor_email=ctx.actor_email,
        target_type="route",
        target_id=ROUTE,
        outcome=Outcome.DENIED,
        reason=reason,
        data={"channel": "slack", **data},
        ip=client_ip(request),
        user_agent=user_agent(request),
    )
