"""Slack adapter: posts approval notices with Approve / Reject buttons through slack-sdk.

`SlackSender` is a notification channel (`NoticeSender`): for each step notice it loads the
organization's installation and posts Block Kit to its channel; the buttons carry the run and
step, and their clicks come back to `POST /v1/integrations/slack/interactions`. The SDK's own
retries are off: the notification activity's RetryPolicy owns retrying.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from blocks.core.approvals.eligibility import Decision
from blocks.core.approvals.notifications import NoticeKind, StepNotice
from blocks.infra.lazy_modules import lazy_module

if TYPE_CHECKING:
    from slack_sdk.web.async_client import AsyncWebClient

# The async client and aiohttp under it (about 9 MB resident) load when Slack is first called:
# the API and the worker import this module for its constants and message building.
aiohttp = lazy_module("aiohttp")
async_client = lazy_module("slack_sdk.web.async_client")

_log = logging.getLogger("blocks.slack")

APPROVE_ACTION = "blocks.approve"
REJECT_ACTION = "blocks.reject"
ACTIONS: dict[str, Decision] = {APPROVE_ACTION: Decision.APPROVE, REJECT_ACTION: Decision.REJECT}
# Answers that retrying cannot change; anything else (rate limits, outages) is retried.
PERMANENT_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "missing_scope",
        "invalid_blocks",
    }
)
# Slack's ids of teams, users and channels: capital letters and digits.
SLACK_ID_PATTERN = r"^[A-Z0-9]{2,32}$"
_SLACK_ID = re.compile(SLACK_ID_PATTERN)
_TIMEOUT_SECONDS = 10  # well inside the notification activity's 30 s start-to-close timeout
_HEADER_LIMIT = 150  # Block Kit's limit for a header's plain text
_KIND_PREFIX = {
    NoticeKind.OPENED: "",
    NoticeKind.REMINDER: "Reminder: ",
    NoticeKind.ESCALATED: "Escalated: ",
}


def web_client(api_url: str, token: str) -> AsyncWebClient:
    # No retry handlers: the SDK would otherwise retry connection errors itself, under Temporal's.
    return async_client.AsyncWebClient(  # type: ignore[no-any-return]
        token=token, base_url=api_url, timeout=_TIMEOUT_SECONDS, retry_handlers=[]
    )


class SlackTokenRefused(Exception):
    """Slack refused a bot token; `error` is Slack's reason (e.g. `invalid_auth`)."""

    def __init__(self, error: str) -> None:
        super().__init__(f"Slack refused the token: {error}")
        self.error = error


class SlackUnreachable(Exception):
    """Slack's Web API could not be reached or answered nonsense."""


async def team_of_token(api_url: str, token: str) -> str:
    """The workspace (team id) a bot token belongs to, as Slack says (`auth.test`)."""
    try:
        response = await web_client(api_url, token).auth_test()
    except SlackApiError as err:
        error = err.response.get("error") if err.response is not None else None
        if isinstance(error, str) and error:
            raise SlackTokenRefused(error) from None
        raise SlackUnreachable(str(err)) from err
    except (aiohttp.ClientError, TimeoutError) as err:
        raise SlackUnreachable(str(err)) from err
    team = response.get("team_id")
    if not isinstance(team, str) or not _SLACK_ID.fullmatch(team):
        raise SlackUnreachable("auth.test named no team")
    return team


@dataclass(frozen=True)
class ButtonValue:
    """What an Approve / Reject button carries back: the run and the step it decides."""

    run_id: uuid.UUID
    step_id: str

    def encode(self) -> str:
        return json.dumps(
            {"run_id": str(self.run_id), "step_id": self.step_id}, separators=(",", ":")
        )

    @classmethod
    def decode(cls, value: str) -> ButtonValue | None:
        try:
            data = json.loads(value)
            step_id = data["step_id"]
            if not isinstance(step_id, str) or not step_id:
                return None
            return cls(run_id=uuid.UUID(str(data["run_id"])), step_id=step_id)
        except (ValueError, KeyError, TypeError):
            return None


def escape(text: str) -> str:
    """Slack's escaping for text it parses (mrkdwn), so input cannot become a mention or link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def approvers_text(approvers: list[str], slack_ids: dict[str, str]) -> str:
    """`user:<id>` labels as Slack mentions where the member is linked; roles by name."""
    shown: list[str] = []
    for label in approvers:
        kind, _, name = label.partition(":")
        if kind == "user" and name in slack_ids:
            shown.append(f"<@{slack_ids[name]}>")
        elif kind == "role":
            shown.append(f"anyone with the role _{escape(name)}_")
        else:
            shown.append(escape(label))
    return ", ".join(shown) or "nobody"


def notice_message(notice: StepNotice, slack_ids: dict[str, str]) -> dict[str, Any]:
    """The `chat.postMessage` arguments (besides the channel) that announce a step notice."""
    heading = f"{_KIND_PREFIX[notice.kind]}{notice.title}"
    if notice.deadline is not None:
        stamp = int(notice.deadline.timestamp())
        # Slack shows the date in each reader's own time zone; the ISO form is the fallback.
        deadline = f"<!date^{stamp}^{{date_short_pretty}} {{time}}|{notice.deadline.isoformat()}>"
    else:
        deadline = "none"
    value = ButtonValue(uuid.UUID(notice.run_id), notice.step_id).encode()
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _clip(heading, _HEADER_LIMIT)},
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*Workflow*\n{escape(notice.workflow_name)}"},
                {"type": "mrkdwn", "text": f"*Deadline*\n{deadline}"},
                {
                    "type": "mrkdwn",
                    "text": _clip(
                        f"*Approvers*\n{approvers_text(notice.approvers, slack_ids)}", 2000
                    ),
                },
                {"type": "mrkdwn", "text": f"*Run*\n`{notice.run_id}`"},
            ],
        },
        {
            "type": "actions",
            "block_id": f"blocks.decision.{notice.step_id}"[:255],
            "elements": [
                _button("Approve", APPROVE_ACTION, value, "primary"),
                _button("Reject", REJECT_ACTION, value, "danger"),
            ],
        },
    ]
    return {"text": escape(heading), "blocks": blocks, "unfurl_links": False}


def _button(label: str, action_id: str, value: str, style: str) -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": label},
        "style": style,
        "value": value,
    }


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
