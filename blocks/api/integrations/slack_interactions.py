"""Slack's signed requests: button clicks decided like any decision, and link confirmations.

Slack signs each request with the app's signing secret (`v0=HMAC-SHA256(v0:{ts}:{body})`). The
signature and its timestamp (at most five minutes old) are checked on the raw body before
anything is parsed; a refused request is a 401, audited in the organization its (unverified)
team names, if that team is installed. A verified click (`block_actions`) is decided by the
Slack user's linked member, with their current roles, through `api.decisions.submit_decision`
(channel "slack"); a link made without the member's proof decides nothing. A verified slash
command (the Slack app's command, pointed at this same URL) confirms a link code
(`slack_links.confirm_link`). Slack shows the reply's text to the sender only (ephemeral).
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
from temporalio.client import Client

from blocks.api import rate_limit
from blocks.api.approvals.decisions import submit_decision
from blocks.api.deps import DbSession, TemporalClient
from blocks.api.errors import Problem
from blocks.api.integrations.slack_links import SlashCommand, confirm_link
from blocks.api.integrations.slack_replies import (
    INTERACTIONS_PATH,
    SlackReplyOut,
    denial,
    deny,
    reply,
)
from blocks.core.context import AuthMethod, OrgContext
from blocks.core.roles import parse_roles
from blocks.infra.integrations.slack import ACTIONS, SLACK_ID_PATTERN, ButtonValue, escape
from blocks.models.audit.events import append_events
from blocks.models.integrations.slack import member_for_slack_user, org_for_slack_team

router = APIRouter(tags=["integrations"])

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


@router.post(
    INTERACTIONS_PATH,
    response_model=SlackReplyOut,
    summary="Receive Slack's signed button clicks and slash commands",
)
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
    form = _form(body)
    if "payload" in form:
        return await _click(request, session, client, _parse_actions(form))
    if "command" in form:
        return await confirm_link(request, session, _parse_command(form))
    raise _unsupported()


async def _click(
    request: Request, session: AsyncSession, client: Client, interaction: BlockActions
) -> JSONResponse:
    action = interaction.actions[0]
    decision = ACTIONS.get(action.action_id)
    target = ButtonValue.decode(action.value)
    if decision is None or target is None:
        raise Problem(400, "Bad Request", "not a Blocks decision button", code="unknown_action")
    team_id, slack_user_id = interaction.team.id, interaction.user.id

    org_id = await org_for_slack_team(session, team_id)
    if org_id is None:
        return reply("This Slack workspace is not connected to Blocks.")
    org_ctx = OrgContext(org_id=org_id, user_id=None, roles=(), auth=AuthMethod.SLACK)
    member = await member_for_slack_user(org_ctx, session, slack_user_id)
    slack_data = {"slack_team_id": team_id, "slack_user_id": slack_user_id}
    if member is None:
        await deny(request, org_ctx, "Slack user is not linked to a member", slack_data)
        return reply("Your Slack account is not linked to a member of this organization.")
    if not member.confirmed:
        # Linked by someone else, before links needed the member's own proof: not theirs to use.
        await deny(request, org_ctx, "Slack link was not confirmed by the member", slack_data)
        return reply(
            "Your Slack account was linked without your confirmation. Link it yourself: ask "
            "Blocks for a code (POST /v1/me/slack-link), then send `link <code>` with the "
            "Blocks app's slash command."
        )
    if member.deactivated or member.roles is None:
        member_ctx = OrgContext(
            org_id=org_id,
            user_id=member.user_id,
            roles=(),
            auth=AuthMethod.SLACK,
            actor_email=member.email,
        )
        why = "member is deactivated" if member.deactivated else "no longer a member"
        await deny(request, member_ctx, f"Slack user's {why}", slack_data)
        return reply("Your Blocks account cannot decide in this organization.")

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
        return reply(f"Not recorded: {escape(problem.detail)}.")
    verb = "Approved" if result.decision == "approve" else "Rejected"
    return reply(f"{verb}. The step `{escape(result.step_id)}` is now {result.state}.")


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


def _unsupported() -> Problem:
    return Problem(
        400,
        "Bad Request",
        "not a Slack block_actions payload or slash command",
        code="unsupported_interaction",
    )


def _form(body: bytes, *, strict: bool = True) -> dict[str, str]:
    """The form Slack posts (url-encoded), one value per field."""
    try:
        parsed = urllib.parse.parse_qs(
            body.decode("utf-8"), max_num_fields=30, strict_parsing=strict
        )
    except ValueError:
        raise _unsupported() from None
    return {name: values[0] for name, values in parsed.items()}


def _parse_actions(form: dict[str, str]) -> BlockActions:
    try:
        payload: Any = json.loads(form["payload"])
        return BlockActions.model_validate(payload)
    except (ValueError, ValidationError):
        raise _unsupported() from None


def _parse_command(form: dict[str, str]) -> SlashCommand:
    try:
        return SlashCommand.model_validate(form)
    except ValidationError:
        raise _unsupported() from None


def _unverified_team(body: bytes) -> str | None:
    """The team id an unverified request claims, if it reads as one; used for auditing only."""
    try:
        form = _form(body, strict=False)
        if "payload" in form:
            return _SlackId.model_validate(json.loads(form["payload"])["team"]).id
        return _SlackId.model_validate({"id": form["team_id"]}).id
    except (Problem, ValueError, KeyError, TypeError, ValidationError):
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
                denial(
                    request, ctx, f"Slack request refused: {refusal}", {"unverified_team": team_id}
                )
            ],
        )
