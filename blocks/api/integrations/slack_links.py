"""A member links their own Slack account: a code they start signed in, confirmed from Slack.

A Slack user's clicks decide as the member they are linked to, so a link needs that member's own
proof, never an admin's word (an admin who could link their Slack account to an approver would
approve as them, around separation of duties). The member asks for a code with their session
(`POST /v1/me/slack-link`: an API key acts for an organization, not as the person, so it cannot),
then sends it from Slack with the app's slash command (`/blocks link ABCDE-FGHJK`), whose signed
request reaches the interactions endpoint (`slack_interactions`). Only the two together link: the
member's session and the Slack account. Each Slack user has a budget of tries (rate-limit rule
`slack_link_user`); each wrong code is refused and audited. Admins may unlink any Slack user,
never link one (`slack.py`).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.api import rate_limit
from blocks.api.deps import DbSession, Person, record_change
from blocks.api.errors import Problem
from blocks.api.identity.sessions import session_org_context
from blocks.api.integrations.slack_replies import deny, reply
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.core.context import AuthMethod, OrgContext
from blocks.core.roles import parse_roles
from blocks.infra.integrations.slack import SLACK_ID_PATTERN, escape
from blocks.infra.settings import Settings
from blocks.models.identity.orgs import User, get_membership
from blocks.models.integrations.slack import get_installation, link_slack_user, org_for_slack_team
from blocks.models.integrations.slack_link_codes import (
    display_code,
    issue_link_code,
    redeem_link_code,
)

router = APIRouter(tags=["integrations"])

USAGE = (
    "To link your Slack account to your Blocks account: in Blocks, signed in, ask for a code "
    "(POST /v1/me/slack-link), then send `{command} link <code>` here."
)


class SlackLinkCodeOut(BaseModel):
    model_config = example(
        code="KM7QR-T3XWP", slack_text="link KM7QR-T3XWP", expires_at=ex.DEADLINE
    )

    code: str = Field(description="Single use; send it from your Slack account before it expires")
    slack_text: str = Field(
        description="What to type after the Blocks app's slash command in Slack, e.g. "
        "`/blocks link ABCDE-FGHJK`"
    )
    expires_at: datetime


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


@router.post(
    "/v1/me/slack-link",
    status_code=201,
    response_model=SlackLinkCodeOut,
    summary="Get a code to link your Slack account",
)
async def start_slack_link(
    signed: Person, request: Request, session: DbSession
) -> SlackLinkCodeOut:
    """A code that links the Slack account it is sent from to you, in the organization this
    session is in; a new code retires your unused ones."""
    if signed.session.org_id is None:
        raise Problem(
            409,
            "Conflict",
            "a Slack link belongs to one organization: pick one first (GET /v1/auth/orgs, "
            "then POST /v1/auth/org)",
            code="organization_not_selected",
        )
    ctx = await session_org_context(request, session, signed)
    if await get_installation(ctx, session) is None:
        raise Problem(
            409, "Conflict", "this organization has not connected Slack", code="slack_not_installed"
        )
    minutes = _settings(request).slack_link_code_minutes
    issued = await issue_link_code(ctx, session, lifetime=timedelta(minutes=minutes))
    await record_change(
        request,
        ctx,
        session,
        "integration.slack.link_started",
        target_type="slack_link_code",
        target_id=str(issued.id),
        data={"expires_at": issued.expires_at.isoformat()},
    )
    shown = display_code(issued.code)
    return SlackLinkCodeOut(code=shown, slack_text=f"link {shown}", expires_at=issued.expires_at)


class SlashCommand(BaseModel):
    """The part of Slack's slash-command request Blocks reads."""

    model_config = ConfigDict(extra="ignore")

    command: str = Field(min_length=2, max_length=100)
    text: str = Field(default="", max_length=500)
    team_id: str = Field(pattern=SLACK_ID_PATTERN)
    user_id: str = Field(pattern=SLACK_ID_PATTERN)


async def confirm_link(
    request: Request, session: AsyncSession, command: SlashCommand
) -> JSONResponse:
    """A verified slash command: `link <code>` links the sending Slack user to the code's member."""
    words = command.text.split()
    if len(words) < 2 or words[0].lower() != "link":
        return reply(USAGE.format(command=escape(command.command)))
    team_id, slack_user_id = command.team_id, command.user_id
    org_id = await org_for_slack_team(session, team_id)
    if org_id is None:
        return reply("This Slack workspace is not connected to Blocks.")
    # Counted before the code is looked at: a Slack user guessing codes is cut off.
    await rate_limit.enforce(request, "slack_link_user", f"slack_user:{team_id}/{slack_user_id}")
    org_ctx = OrgContext(org_id=org_id, user_id=None, roles=(), auth=AuthMethod.SLACK)
    slack_data = {"slack_team_id": team_id, "slack_user_id": slack_user_id}
    redeemed = await redeem_link_code(org_ctx, session, "".join(words[1:]))
    if redeemed is None:
        await deny(request, org_ctx, "Slack link code not valid, used or expired", slack_data)
        return reply(
            "That code is not valid, was used already or has expired. Ask Blocks for a new one."
        )
    member = await _active_member(org_ctx, session, redeemed.user_id)
    if member is None:
        refused = {**slack_data, "user_id": str(redeemed.user_id)}
        await deny(request, org_ctx, "Slack link code of a member no longer active", refused)
        return reply("Your Blocks account cannot be linked in this organization.")
    confirmed = await link_slack_user(member, session, slack_user_id=slack_user_id)
    previous = confirmed.previous_user_id
    await record_change(
        request,
        member,
        session,
        "integration.slack.user_linked",
        target_type="slack_user",
        target_id=slack_user_id,
        data={
            "user_id": str(member.user_id),
            "slack_team_id": team_id,
            "proof": "link_code",
            "link_code_id": str(redeemed.id),
            "previous_user_id": str(previous) if previous else None,
        },
    )
    return reply(
        f"Linked: what you decide in Slack is now recorded as {escape(member.actor_email or '')} "
        "in Blocks."
    )


async def _active_member(
    ctx: OrgContext, session: AsyncSession, user_id: uuid.UUID
) -> OrgContext | None:
    """The member, as they are now, acting through Slack; None if removed or deactivated."""
    membership = await get_membership(ctx, session, user_id)
    user = await session.get(User, user_id)
    if membership is None or membership.deactivated_at is not None:
        return None
    if user is None or user.deactivated_at is not None:
        return None
    return OrgContext(
        org_id=ctx.org_id,
        user_id=user.id,
        roles=parse_roles(membership.roles),
        auth=AuthMethod.SLACK,
        actor_email=user.email,
    )
