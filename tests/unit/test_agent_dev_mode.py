"""Agents in dev mode without authentication: settings accept BLOCKS_AGENT_DEV_NO_AUTH only in dev
on a loopback API; a dev agent must come from a loopback peer that no proxy forwarded; the SDK
sends its name instead of a token and never both; the demo agent's card is the example's."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from blocks.agent import Agent, AgentSession, SessionError, Task
from blocks.agent.session import DEV_AGENT_HEADER, auth_headers, dev_agent_credential
from blocks.api.agents.auth import (
    DEV_MODE_WARNING,
    dev_mode_on,
    dev_peer_allowed,
    warn_if_dev_mode,
)
from blocks.cli import app
from blocks.infra.agents.cards import parse_card
from blocks.infra.settings import Settings, is_loopback
from blocks.models.demo import DEMO_AGENT, DEMO_AGENT_CARD
from tests.unit.test_agent_sdk import session_body

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("BLOCKS_")]:
        monkeypatch.delenv(name)


def test_dev_mode_without_authentication_is_off_unless_asked() -> None:
    assert Settings().agent_dev_no_auth is False
    assert not dev_mode_on(Settings())


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2", "[::1]"])
def test_dev_mode_is_accepted_in_dev_on_a_loopback_api(
    monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    monkeypatch.setenv("BLOCKS_AGENT_DEV_NO_AUTH", "1")
    monkeypatch.setenv("BLOCKS_API_HOST", host)
    settings = Settings()
    assert settings.agent_dev_no_auth
    assert dev_mode_on(settings)


@pytest.mark.parametrize(
    ("variables", "reason"),
    [
        ({"BLOCKS_ENV": "test"}, "only with BLOCKS_ENV=dev"),
        ({"BLOCKS_API_HOST": "0.0.0.0"}, "binds a loopback address"),  # noqa: S104
        ({"BLOCKS_API_HOST": "::"}, "binds a loopback address"),
        ({"BLOCKS_API_HOST": "192.168.1.20"}, "binds a loopback address"),
        ({"BLOCKS_API_HOST": "blocks.example.com"}, "binds a loopback address"),
        ({"BLOCKS_TRUSTED_PROXIES": '["127.0.0.1"]'}, "not behind a trusted proxy"),
    ],
)
def test_dev_mode_is_refused_anywhere_else(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], reason: str
) -> None:
    monkeypatch.setenv("BLOCKS_AGENT_DEV_NO_AUTH", "true")
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=f"BLOCKS_AGENT_DEV_NO_AUTH .*{reason}"):
        Settings()
    # The same settings without the flag are fine: the refusal is the flag's.
    monkeypatch.delenv("BLOCKS_AGENT_DEV_NO_AUTH")
    if variables.get("BLOCKS_ENV") != "test":
        Settings()


def test_the_api_checks_again_what_a_copy_of_the_settings_skipped() -> None:
    # model_copy runs no validator (`blocks dev` copies its settings): the API looks again.
    copied = Settings(agent_dev_no_auth=True).model_copy(update={"api_host": "0.0.0.0"})  # noqa: S104
    assert copied.agent_dev_no_auth
    assert not dev_mode_on(copied)


def test_loopback_means_this_machine_only() -> None:
    for host in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "::ffff:127.0.0.1", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.1", "192.168.1.2", "::ffff:10.0.0.1", "example.com", ""):  # noqa: S104
        assert not is_loopback(host), host


def test_a_dev_agent_must_connect_from_its_own_loopback_address_unforwarded() -> None:
    for peer in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        assert dev_peer_allowed(peer, {}), peer
    # Another machine, an unknown peer, a test client's made-up name, a name at all.
    for peer in ("10.1.2.3", "192.168.0.7", "2001:db8::1", None, "testclient", "localhost"):
        assert not dev_peer_allowed(peer, {}), peer
    # A proxy on this machine relaying someone else shows a loopback peer: refused whatever the
    # forwarded address says (X-Forwarded-For is never believed here).
    for header in ("x-forwarded-for", "forwarded", "x-real-ip"):
        assert not dev_peer_allowed("127.0.0.1", {header: "127.0.0.1"}), header


def test_the_sdk_sends_a_dev_agent_name_instead_of_a_token() -> None:
    assert auth_headers("blkagent_abc_def") == {"Authorization": "Bearer blkagent_abc_def"}
    assert auth_headers(dev_agent_credential(" invoice-agent ")) == {
        DEV_AGENT_HEADER: "invoice-agent"
    }
    with pytest.raises(ValueError, match="dev_agent"):
        dev_agent_credential("  ")


def test_the_session_says_whether_the_agent_is_in_dev_mode() -> None:
    assert not AgentSession.from_json("http://h", session_body()).dev_mode
    assert AgentSession.from_json("http://h", session_body(dev_mode=True)).dev_mode
    with pytest.raises(SessionError, match="dev_mode"):
        AgentSession.from_json("http://h", session_body(dev_mode="yes"))


async def test_an_agent_runs_with_a_token_or_a_dev_name_never_both() -> None:
    agent = Agent()

    @agent.skill("extract-totals")
    async def totals(task: Task) -> dict[str, object]:
        return {}

    with pytest.raises(ValueError, match="not both"):
        await agent.run(url="http://127.0.0.1:1", token="blkagent_a_b", dev_agent="x")
    with pytest.raises(ValueError, match="token"):
        await agent.run(url="http://127.0.0.1:1")


def test_the_command_refuses_a_dev_agent_with_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    both = runner.invoke(
        app, ["agent", "run", "--dev-agent", "invoice-agent", "--token", "blkagent_a_b", "m:a"]
    )
    assert both.exit_code == 2
    assert "not both" in both.output
    monkeypatch.setenv("BLOCKS_AGENT_TOKEN", "blkagent_a_b")
    from_env = runner.invoke(app, ["agent", "run", "--dev-agent", "invoice-agent", "m:a"])
    assert from_env.exit_code == 2
    assert "not both" in from_env.output


def test_the_demo_agent_is_the_example_agent_and_its_card_is_valid() -> None:
    example = json.loads((ROOT / "examples" / "agents" / "invoice_card.json").read_text())
    assert example == DEMO_AGENT_CARD
    assert example["name"] == DEMO_AGENT
    parsed = parse_card(DEMO_AGENT_CARD)
    assert [s["id"] for s in parsed["skills"]] == ["extract-totals", "check-vendor"]


def test_the_api_warns_at_its_start_only_when_agents_may_connect_without_a_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="blocks.agents")
    warn_if_dev_mode(Settings())
    assert not caplog.records
    warn_if_dev_mode(Settings(agent_dev_no_auth=True))
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == DEV_MODE_WARNING
    assert "WITHOUT a token" in record.getMessage()
