"""Routes that connect an organization to Slack: the installation, and unlinking Slack users.

Linking a Slack user to a member takes that member's own proof (`slack_links`); an admin may
unlink any Slack user here, never link one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, NoReturn

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, Field, SecretStr, field_validator
from sqlalchemy.exc import IntegrityError

from blocks.api.deps import (
    CanManageIntegrations,
    DbSession,
    forbidden,
    record_change,
    record_denial,
)
from blocks.api.errors import Problem, invalid_field, not_found
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.api.schemas import StrictModel
from blocks.infra.integrations.slack import (
    SLACK_ID_PATTERN,
    SlackTokenRefused,
    SlackUnreachable,
    team_of_token,
)
from blocks.models.integrations.slack import (
    SlackInstallation,
    get_installation,
    save_installation,
    set_channel,
    unlink_slack_user,
)

router = APIRouter(prefix="/v1/integrations/slack", tags=["integrations"])

SlackUserId = Annotated[str, Path(pattern=SLACK_ID_PATTERN, description="Slack user id (U...)")]


class SlackInstallationIn(StrictModel):
    model_config = example(bot_token=ex.SLACK_BOT_TOKEN, channel_id="C05APPROVALS")

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
    model_config = example(
        team_id="T024BE7LD",
        channel_id="C05APPROVALS",
        bot_token_set=True,
        created_at=ex.CREATED,
        updated_at=ex.CREATED,
    )

    team_id: str
    channel_id: str
    bot_token_set: bool = Field(description="Always true: the token itself is never shown")
    created_at: datetime
    updated_at: datetime


def _out(installation: SlackInstallation) -> SlackInstallationOut:
    return SlackInstallationOut(
        team_id=installation.team_id,
        channel_id=installation.channel_id,
        bot_token_set=True,
        created_at=installation.created_at,
        updated_at=installation.updated_at,
    )


@router.get(
    "",
    response_model=SlackInstallationOut,
    summary="Read the Slack installation",
    operation_id="read_slack_installation",
)
async def read_installation(ctx: CanManageIntegrations, session: DbSession) -> SlackInstallationOut:
    installation = await get_installation(ctx, session)
    if installation is None:
        raise not_found("Slack installation")
    return _out(installation)


@router.put(
    "",
    response_model=SlackInstallationOut,
    summary="Install Slack, or change its channel or token",
    operation_id="install_slack",
)
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


@router.put(
    "/users/{slack_user_id}",
    deprecated=True,
    status_code=403,
    response_model=None,
    response_description="Always refused: the member links their Slack account themselves",
    summary="Link a Slack user to a member (refused: members link themselves)",
    operation_id="link_slack_user",
)
async def link_user(
    slack_user_id: SlackUserId, request: Request, ctx: CanManageIntegrations
) -> NoReturn:
    """Refused, always (403, audited): a Slack user's clicks decide as the member it is linked
    to, so only that member links it, with their own proof: `POST /v1/me/slack-link` signed in,
    then the code sent from the Slack account. Kept so a client of the former admin route learns
    why, and so an attempt to link for someone else is on the record."""
    await record_denial(
        request, ctx, "Slack users are linked by the member, with their own proof, not by an admin"
    )
    raise forbidden(
        "a Slack user is linked only by the member themselves: POST /v1/me/slack-link while "
        "signed in as that member, then send the code from their Slack account"
    )


@router.delete(
    "/users/{slack_user_id}",
    status_code=204,
    summary="Unlink a Slack user from their member",
    operation_id="unlink_slack_user",
)
async def unlink_user(
    slack_user_id: SlackUserId, request: Request, ctx: CanManageIntegrations, session: DbSession
) -> Response:
    user_id = await unlink_slack_user(ctx, session, slack_user_id)
    if user_id is None:
        raise not_found("Slack user link")
    await record_change(
        request,
        ctx,
        session,
        "integration.slack.user_unlinked",
        target_type="slack_user",
        target_id=slack_user_id,
        data={"user_id": str(user_id)},
    )
    return Response(status_code=204)
