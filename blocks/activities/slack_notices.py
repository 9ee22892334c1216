"""The Slack channel: posts each step notice, with decision buttons, to the org's Slack."""

from __future__ import annotations

import logging
import uuid

from slack_sdk.errors import SlackApiError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.exceptions import ApplicationError

from blocks.core.approvals.notifications import StepNotice
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.integrations.slack import PERMANENT_ERRORS, notice_message, web_client
from blocks.models.integrations.slack import bot_token, get_installation, slack_users_of

_log = logging.getLogger("blocks.slack")


class SlackSender:
    """Posts each step notice to the channel of the organization's Slack installation, if any."""

    name = "slack"

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, api_url: str) -> None:
        self._sessions = sessions
        self._api_url = api_url

    async def send(self, notice: StepNotice) -> None:
        # The notice's org is the workflow's own recorded organization (see core.context).
        ctx = OrgContext(
            org_id=OrgId(uuid.UUID(notice.org_id)),
            user_id=None,
            roles=(),
            auth=AuthMethod.WORKFLOW,
        )
        async with self._sessions() as session, session.begin():
            installation = await get_installation(ctx, session)
            if installation is None:
                _log.debug(
                    "org %s has no Slack installation; %s not posted", ctx.org_id, notice.notice_id
                )
                return
            users = [uuid.UUID(label[5:]) for label in notice.approvers if _is_user(label)]
            slack_ids = {str(k): v for k, v in (await slack_users_of(ctx, session, users)).items()}
            token, channel = bot_token(installation), installation.channel_id
        try:
            await web_client(self._api_url, token).chat_postMessage(
                channel=channel, **notice_message(notice, slack_ids)
            )
        except SlackApiError as err:
            error = str(err.response.get("error", "")) if err.response is not None else ""
            if error in PERMANENT_ERRORS:
                raise ApplicationError(
                    f"Slack refused the notice: {error}", type="slack_refused", non_retryable=True
                ) from err
            raise


def _is_user(label: str) -> bool:
    if not label.startswith("user:"):
        return False
    try:
        uuid.UUID(label[5:])
    except ValueError:
        return False
    return True
