"""Routes that connect an organization to Slack: the installation, and Slack users linked to members."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, Field, SecretStr, field_validator
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.api.deps import CanManageIntegrations, DbSession, record_change
from blocks.api.errors import Problem, invalid_field, not_found
from blocks.api.schemas import StrictModel
from blocks.core.context import OrgContext
from blocks.infra.integrations.slack import (
    SLACK_ID_PATTERN,
    SlackTokenRefused,
    SlackUnreachable,
    team_of_token,
)
from blocks.models.integrations.slack import (
    SlackInstallation,
    get_installation,
    link_slack_user,
    save_installation,
    set_channel,
    unlink_slack_user,
)

router = APIRouter(prefix="/v1/integrations/slack", tags=["integrations"])

SlackUserId = Annotated[str, Path(pattern=SLACK_ID_PATTERN, description="Slack user id (U...)")]


class SlackInstallationIn(StrictModel):
    bot_token: SecretStr | None = Field(
        default=None,
        description="The Slack app's bot token (xoxb-...). Write-only: stored encrypted, never "
        "returned. Required on first install; omit it to change only the channel.",
    )
    channel_id: str = Field(pattern=SLACK_ID_PATTERN, description="Channel to post approvals to")

    @field_validator("bot_token")
    @classmethod
    def _bot_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            token = value.get_secret_value()
            if not token.startswith("xoxb-") or len(token) > 255 or not token.isprintable():
                raise ValueError("must be a Slack bot token (xoxb-...)")
        return value


class SlackInstallationOut(BaseModel):
    team_id: str
    channel_id: str
    bot_token_set: bool = Field(description="Always true: the token itself is never shown")
    created_at: datetime
    updated_at: datetime


class SlackUserLinkIn(StrictModel):
    user_id: uuid.UUID


class SlackUserLinkOut(BaseModel):
    slack_user_id: str
    user_id: uuid.UUID


def _out(installation: SlackInstallation) -> SlackInstallationOut:
    return SlackInstallationOut(
        team_id=installation.team_id,
        channel_id=installation.channel_id,
        bot_token_set=True,
        created_at=installation.created_at,
        updated_at=installation.updated_at,
    )


@router.get("", response_model=SlackInstallationOut)
async def read_installation(ctx: CanManageIntegrations, session: DbSession) -> SlackInstallationOut:
    installation = await get_installation(ctx, session)
    if installation is None:
        raise not_found("Slack installation")
    return _out(installation)


@router.put("", response_model=SlackInstallationOut)
async def install(
    body: SlackInstallationIn, request: Request, ctx: CanManageIntegrations, session: DbSession
) -> SlackInstallationOut:
    """Install or update: a new token is checked with Slack (`auth.test`), which names the
    workspace, so no one can claim a workspace whose token they do not hold."""
    current = await get_installation(ctx, session)
    if body.bot_token is None:
        if current is None:
            raise invalid_field("bot_token", "required to install Slack")
        installation = await set_channel(ctx, session, current, body.channel_id)
        action = "integration.slack.updated"
    else:
        token = body.bot_token.get_secret_value()
        try:
            team_id = await team_of_token(request.app.state.settings.slack_api_url, token)
        except SlackTokenRefused as err:
            raise invalid_field("bot_token", f"Slack refused the token ({err.error})") from None
        except SlackUnreachable as err:
            raise Problem(
                502,
                "Bad Gateway",
                "Slack could not be reached; retry later",
                code="slack_unreachable",
            ) from err
        try:
            installation = await save_installation(
                ctx, session, team_id=team_id, channel_id=body.channel_id, token=token
            )
        except IntegrityError as err:
            if "slack_installations_team_id_key" not in str(err.orig):
                raise
            raise Problem(
                409,
                "Conflict",
                "this Slack workspace is connected to another organization",
                code="slack_team_taken",
            ) from None
        action = "integration.slack.installed"
    await record_change(
        request,
        ctx,
        session,
        action,
        target_type="slack_installation",
        target_id=installation.team_id,
        data={
            "team_id": installation.team_id,
            "channel_id": installation.channel_id,
            "previous_team_id": current.team_id if current else None,
            "token_replaced": body.bot_token is not None,
        },
    )
    return _out(installation)


@router.put("/users/{slack_user_id}", response_model=SlackUserLinkOut)
async def link_user(
    slack_user_id: SlackUserId,
    body: SlackUserLinkIn,
    request: Request,
    ctx: CanManageIntegrations,
    session: DbSession,
) -> SlackUserLinkOut:
    """Decisions this Slack user makes in Slack are this member's (replaces an earlier link)."""
    link = await link_slack_user(ctx, session, slack_user_id=slack_user_id, user_id=body.user_id)
    if link is None:
        raise not_found("member")
    await _audit_link(
        request, ctx, session, "integration.slack.user_linked", slack_user_id, link.user_id
    )
    return SlackUserLinkOut(slack_user_id=link.slack_user_id, user_id=link.user_id)


@router.delete("/users/{slack_user_id}", status_code=204)
async def unlink_user(
    slack_user_id: SlackUserId, request: Request, ctx: CanManageIntegrations, session: DbSession
) -> Response:
    if not await unlink_slack_user(ctx, session, slack_user_id):
        raise not_found("Slack user link")
    await _audit_link(request, ctx, session, "integration.slack.user_unlinked", slack_user_id, None)
    return Response(status_code=204)


async def _audit_link(
    request: Request,
    ctx: OrgContext,
    session: AsyncSession,
    action: str,
    slack_user_id: str,
    user_id: uuid.UUID | None,
) -> None:
    await record_change(
        request,
        ctx,
        session,
        action,
        target_type="slack_user",
        target_id=slack_user_id,
        data={"user_id": str(user_id) if user_id else None},
    )
