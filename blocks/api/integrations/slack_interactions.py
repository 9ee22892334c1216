"""Slack's interactive-button requests: verified, mapped to a member, decided like any decision.

Slack signs each request with the app's signing secret (`v0=HMAC-SHA256(v0:{ts}:{body})`). The
signature and its timestamp (at most five minutes old) are checked on the raw body before
anything is parsed; a refused request is a 401, audited in the organization its (unverified)
team names, if that team is installed. A verified click is decided by the Slack user's linked
member, with their current roles, through `api.decisions.submit_decision` (channel "slack").
Slack shows the reply's text to the clicker only (an ephemeral message).
"""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from slack_sdk.signature import Clock, SignatureVerifier
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.api import rate_limit
from blocks.api.approvals.decisions import submit_decision
from blocks.api.deps import DbSession, TemporalClient
from blocks.api.errors import Problem
from blocks.api.security_audit import client_ip
from blocks.core.audit.records import ActorType, AuditRecord, Outcome
from blocks.core.context import AuthMethod, OrgContext
from blocks.core.roles import parse_roles
from blocks.infra.integrations.slack import ACTIONS, SLACK_ID_PATTERN, ButtonValue, escape
from blocks.models.audit.events import append_events
from blocks.models.integrations.slack import member_for_slack_user, org_for_slack_team

router = APIRouter(prefix="/v1/integrations/slack", tags=["integrations"])

ROUTE = "POST /v1/integrations/slack/interactions"
MAX_AGE_SECONDS = 5 * 60  # Slack's own advice: older requests may be replays
# Slack's payloads are a few kilobytes; refusing more keeps a forged request cheap to drop.
_MAX_BODY_BYTES = 256 * 1024


class _SlackId(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(pattern=SLACK_ID_PATTERN)


class _Action(BaseModel):
    model_config = ConfigDict(extra="ignore")

    action_id: str
    value: str = ""


class BlockActions(BaseModel):
    """The part of Slack's `block_actions` payload Blocks reads."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["block_actions"]
    team: _SlackId
    user: _SlackId
    actions: list[_Action] = Field(min_length=1)


@router.post("/interactions")
async def slack_interaction(
    request: Request, session: DbSession, client: TemporalClient
) -> JSONResponse:
    secret = request.app.state.settings.slack_signing_secret
    if secret is None:
        raise Problem(
            503,
            "Service Unavailable",
            "Slack is not configured on this deployment",
            code="slack_not_configured",
        )
    body = await _read_body(request)
    refusal = signature_refusal(
        secret.get_secret_value(),
        body,
        request.headers.get("x-slack-request-timestamp"),
        request.headers.get("x-slack-signature"),
        now=time.time(),
    )
    if refusal is not None:
        # A flood of forged requests is refused (and audited once) before it floods the
        # organization's log with one event each.
        await rate_limit.enforce_per_address(request, "invalid_ip")
        await _audit_unverified(request, body, refusal)
        raise Problem(
            401,
            "Unauthorized",
            "the request does not carry a valid, current Slack signature",
            code="bad_slack_signature",
        )

    # Verified: from here on the payload is Slack's word.
    interaction = _parse(body)
    action = interaction.actions[0]
    decision = ACTIONS.get(action.action_id)
    target = ButtonValue.decode(action.value)
    if decision is None or target is None:
        raise Problem(400, "Bad Request", "not a Blocks decision button", code="unknown_action")
    team_id, slack_user_id = interaction.team.id, interaction.user.id

    org_id = await org_for_slack_team(session, team_id)
    if org_id is None:
        return _reply("This Slack workspace is not connected to Blocks.")
    org_ctx = OrgContext(org_id=org_id, user_id=None, roles=(), auth=AuthMethod.SLACK)
    member = await member_for_slack_user(org_ctx, session, slack_user_id)
    slack_data = {"slack_team_id": team_id, "slack_user_id": slack_user_id}
    if member is None:
        await _deny(request, org_ctx, "Slack user is not linked to a member", slack_data)
        return _reply("Your Slack account is not linked to a member of this organization.")
    if member.deactivated or member.roles is None:
        member_ctx = OrgContext(
            org_id=org_id,
            user_id=member.user_id,
            roles=(),
            auth=AuthMethod.SLACK,
            actor_email=member.email,
        )
        why = "member is deactivated" if member.deactivated else "no longer a member"
        await _deny(request, member_ctx, f"Slack user's {why}", slack_data)
        return _reply("Your Blocks account cannot decide in this organization.")

    ctx = OrgContext(
        org_id=org_id,
        user_id=member.user_id,
        roles=parse_roles(member.roles),
        auth=AuthMethod.SLACK,
        actor_email=member.email,
    )
    try:
        result = await submit_decision(
            request,
            ctx,
            session,
            client,
            target.run_id,
            target.step_id,
            decision,
            channel="slack",
        )
    except Problem as problem:
        if problem.status >= 500:
            raise
        # Refusals were audited (403s) inside; Slack shows this text to the clicker only.
        return _reply(f"Not recorded: {escape(problem.detail)}.")
    verb = "Approved" if result.decision == "approve" else "Rejected"
    return _reply(f"{verb}. The step `{escape(result.step_id)}` is now {result.state}.")


def signature_refusal(
    secret: str, body: bytes, timestamp: str | None, signature: str | None, *, now: float
) -> str | None:
    """Why the request is not Slack's, current and unaltered; None when it is."""
    if not timestamp or not signature:
        return "missing Slack signature headers"
    try:
        sent_at = int(timestamp)
        body.decode("utf-8")  # the verifier decodes it; refuse here rather than raise there
    except ValueError:
        return "malformed timestamp or body"
    if abs(now - sent_at) > MAX_AGE_SECONDS:
        return "stale timestamp"
    if not SignatureVerifier(secret, clock=_At(now)).is_valid(body, timestamp, signature):
        return "bad signature"
    return None


class _At(Clock):
    """The verifier's clock, set to the moment the age check used (one notion of now)."""

    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def _parse(body: bytes) -> BlockActions:
    try:
        form = urllib.parse.parse_qs(body.decode("utf-8"), max_num_fields=20, strict_parsing=True)
        payload: Any = json.loads(form["payload"][0])
        return BlockActions.model_validate(payload)
    except (ValueError, KeyError, IndexError, ValidationError):
        raise Problem(
            400, "Bad Request", "not a Slack block_actions payload", code="unsupported_interaction"
        ) from None


def _unverified_team(body: bytes) -> str | None:
    """The team id an unverified request claims, if it reads as one; used for auditing only."""
    try:
        form = urllib.parse.parse_qs(body.decode("utf-8"), max_num_fields=20)
        return _SlackId.model_validate(json.loads(form["payload"][0])["team"]).id
    except (ValueError, KeyError, IndexError, TypeError, ValidationError):
        return None


async def _read_body(request: Request) -> bytes:
    """The raw body, refused once it passes the limit rather than read whole first."""
    declared = request.headers.get("content-length", "")
    too_large = Problem(413, "Payload Too Large", "the request body is too large", code="too_large")
    if declared.isdigit() and int(declared) > _MAX_BODY_BYTES:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_BODY_BYTES:
            raise too_large
    return bytes(body)


def _sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    return request.app.state.sessions  # type: ignore[no-any-return]


async def _audit_unverified(request: Request, body: bytes, refusal: str) -> None:
    """Audit a refused request in the organization its claimed team names, if one installed it.

    Nothing in the request can be trusted, so the team is recorded as unverified and the actor
    as anonymous; a team no organization installed leaves no trace (there is no log to write).
    """
    team_id = _unverified_team(body)
    if team_id is None:
        return
    async with _sessions(request)() as session, session.begin():
        org_id = await org_for_slack_team(session, team_id)
        if org_id is None:
            return
        ctx = OrgContext(org_id=org_id, user_id=None, roles=(), auth=AuthMethod.SLACK)
        await append_events(
            ctx,
            session,
            [
                _denial(
                    request, ctx, f"Slack request refused: {refusal}", {"unverified_team": team_id}
                )
            ],
        )


async def _deny(request: Request, ctx: OrgContext, reason: str, data: dict[str, Any]) -> None:
    """Audit a refused click in its own transaction (the reply is a 200, but nothing was decided)."""
    async with _sessions(request)() as session, session.begin():
        await append_events(ctx, session, [_denial(request, ctx, reason, data)])


def _denial(request: Request, ctx: OrgContext, reason: str, data: dict[str, Any]) -> AuditRecord:
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
        user_agent=(request.headers.get("user-agent") or "")[:500] or None,
    )


def _reply(text: str) -> JSONResponse:
    # For a click on a message, Slack shows this to the clicker alone and keeps the message.
    return JSONResponse({"response_type": "ephemeral", "replace_original": False, "text": text})
