"""Slack's pure parts: the message a notice becomes, button values, signature checks, settings."""

from __future__ import annotations

import hashlib
import hmac
import os
import uuid
from datetime import UTC, datetime

import pytest
from cryptography.exceptions import InvalidTag
from pydantic import ValidationError

from blocks.api.integrations.slack_interactions import signature_refusal
from blocks.core.approvals.notifications import NoticeKind, StepNotice
from blocks.infra.crypto.field_crypto import MasterKeys
from blocks.infra.crypto.key_specs import new_payload_key_spec
from blocks.infra.crypto.signing import new_signing_key_spec
from blocks.infra.integrations.slack import ButtonValue, notice_message, web_client
from blocks.infra.settings import Settings

SECRET = "unit-signing-secret"
NOW = 1_800_000_000


def _notice(**overrides: object) -> StepNotice:
    fields: dict[str, object] = {
        "org_id": str(uuid.uuid4()),
        "run_id": str(uuid.uuid4()),
        "workflow_name": "expense_approval",
        "step_id": "approve",
        "title": "Lunch <!channel> & <https://evil.example|click>",
        "kind": NoticeKind.OPENED,
        "approvers": ["role:approver", "user:11111111-1111-1111-1111-111111111111", "user:x"],
        "deadline": datetime(2026, 11, 25, 9, 30, tzinfo=UTC),
        "notice_id": "n1",
    }
    return StepNotice(**{**fields, **overrides})  # type: ignore[arg-type]


def _sign(body: bytes, timestamp: int, secret: str = SECRET) -> str:
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256)
    return f"v0={digest.hexdigest()}"


def test_a_notice_becomes_escaped_text_and_two_buttons_naming_run_and_step() -> None:
    notice = _notice()
    message = notice_message(notice, {"11111111-1111-1111-1111-111111111111": "U0LINKED"})
    # Text Slack parses cannot carry a mention or a link from the workflow's input.
    assert "<!channel>" not in message["text"]
    assert "&lt;!channel&gt; &amp;" in message["text"]
    header, fields, actions = message["blocks"]
    assert header["text"]["type"] == "plain_text"
    shown = " ".join(f["text"] for f in fields["fields"])
    assert "<@U0LINKED>" in shown  # a linked approver is mentioned
    assert "role _approver_" in shown
    assert "user:x" in shown
    assert "<!date^1795599000^" in shown  # the deadline, in each reader's time zone
    approve, reject = actions["elements"]
    assert (approve["action_id"], reject["action_id"]) == ("blocks.approve", "blocks.reject")
    assert ButtonValue.decode(approve["value"]) == ButtonValue(uuid.UUID(notice.run_id), "approve")
    reminder = notice_message(_notice(kind=NoticeKind.REMINDER, deadline=None), {})
    assert reminder["blocks"][0]["text"]["text"].startswith("Reminder: ")


@pytest.mark.parametrize("value", ["", "{}", "[1]", '{"run_id": "x", "step_id": "a"}', "nope"])
def test_a_button_value_that_names_no_run_and_step_is_none(value: str) -> None:
    assert ButtonValue.decode(value) is None


def test_the_sdk_does_not_retry_on_its_own() -> None:
    assert web_client("http://127.0.0.1:1/api/", "xoxb-t").retry_handlers == []


def test_signatures_are_checked_like_slack_checks_them() -> None:
    body = b"payload=%7B%7D"
    assert signature_refusal(SECRET, body, str(NOW), _sign(body, NOW), now=NOW) is None
    assert signature_refusal(SECRET, body, str(NOW), _sign(body, NOW), now=NOW + 299) is None
    stale = signature_refusal(SECRET, body, str(NOW), _sign(body, NOW), now=NOW + 301)
    assert stale == "stale timestamp"
    future = signature_refusal(SECRET, body, str(NOW), _sign(body, NOW), now=NOW - 301)
    assert future == "stale timestamp"
    assert signature_refusal(SECRET, body + b"x", str(NOW), _sign(body, NOW), now=NOW) == (
        "bad signature"
    )
    wrong = signature_refusal(SECRET, body, str(NOW), _sign(body, NOW, "other"), now=NOW)
    assert wrong == "bad signature"
    assert signature_refusal(SECRET, body, None, _sign(body, NOW), now=NOW) is not None
    assert signature_refusal(SECRET, body, "soon", _sign(body, NOW), now=NOW) is not None
    latin = b"payload=\xff"
    assert signature_refusal(SECRET, latin, str(NOW), "v0=00", now=NOW) is not None


def test_a_sealed_secret_opens_only_where_it_was_sealed() -> None:
    keys = MasterKeys.parse(new_payload_key_spec("m1"))
    key_id, sealed = keys.seal_secret("slack-bot-token|org-a|T1", "xoxb-secret")
    assert b"xoxb-secret" not in sealed
    assert keys.open_secret(key_id, "slack-bot-token|org-a|T1", sealed) == "xoxb-secret"
    with pytest.raises(InvalidTag):  # moved to another organization's row
        keys.open_secret(key_id, "slack-bot-token|org-b|T1", sealed)


def test_prod_refuses_a_plain_http_slack_api(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("BLOCKS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("BLOCKS_ENV", "prod")
    monkeypatch.setenv("BLOCKS_DEMO_ORG", "false")
    monkeypatch.setenv("BLOCKS_PAYLOAD_KEYS", new_payload_key_spec())
    monkeypatch.setenv("BLOCKS_AUDIT_SIGNING_KEY", new_signing_key_spec())
    monkeypatch.setenv("BLOCKS_MASTER_KEYS", new_payload_key_spec("m1"))
    monkeypatch.setenv("BLOCKS_DATABASE_URL", "postgresql://u:p@db/blocks")
    monkeypatch.setenv("BLOCKS_TEMPORAL_ADDRESS", "temporal:7233")
    monkeypatch.setenv("BLOCKS_SLACK_API_URL", "http://slack.internal/api/")
    with pytest.raises(ValidationError, match="BLOCKS_SLACK_API_URL"):
        Settings()
    monkeypatch.setenv("BLOCKS_SLACK_SIGNING_SECRET", " ")
    monkeypatch.setenv("BLOCKS_SLACK_API_URL", "https://slack.com/api/")
    with pytest.raises(ValidationError, match="BLOCKS_SLACK_SIGNING_SECRET is set but empty"):
        Settings()
