"""The agent SDK's parts that need no connection: backoff, the session, answers, loading, imports."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from blocks.agent import Agent, AgentSession, Backoff, SessionError, Task
from blocks.agent import connect as agent_connect
from blocks.agent.handlers import completed
from blocks.agent.session import same_origin, websocket_url
from blocks.cli.agent import AgentLoadError, load_agent
from blocks.core.agents.protocol import COMPLETED, FAILED, MAX_CONTENT_BYTES

ROOT = Path(__file__).resolve().parents[2]


def session_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "agent": "invoices",
        "agent_id": "a-1",
        "org_id": "o-1",
        "skills": ["extract-totals"],
        "transport": "relay",
        "relay_url": "/v1/agents/connect",
        "heartbeat_seconds": 10,
        "pubnub": None,
    }
    return body | changes


def test_backoff_doubles_up_to_its_cap_with_jitter_below_each_ceiling() -> None:
    backoff = Backoff(base=0.5, cap=30.0)
    assert [backoff.ceiling(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff.ceiling(10_000) == 30.0
    for attempt in (0, 3, 9):
        delays = {backoff.delay(attempt) for _ in range(50)}
        top = backoff.ceiling(attempt)
        assert all(top / 2 <= d <= top for d in delays)
        assert len(delays) > 1  # jittered, so a fleet does not reconnect in step


def test_the_session_resolves_the_relay_url_against_the_api() -> None:
    session = AgentSession.from_json("https://blocks.example.com", session_body())
    assert session.relay_url == "wss://blocks.example.com/v1/agents/connect"
    assert session.skills == frozenset({"extract-totals"})
    assert session.heartbeat_seconds == 10.0
    assert websocket_url("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1/agents/connect") == (
        "ws://127.0.0.1:8000/v1/agents/connect"
    )
    missing = AgentSession.from_json("http://h", session_body(heartbeat_seconds=None))
    assert missing.heartbeat_seconds == 10.0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"transport": "carrier-pigeon"}, "transport"),
        ({"relay_url": None}, "relay_url"),
        ({"relay_url": "ftp://h/x"}, "relay_url"),
        ({"heartbeat_seconds": 0}, "heartbeat_seconds"),
        ({"heartbeat_seconds": math.inf}, "heartbeat_seconds"),
        ({"heartbeat_seconds": True}, "heartbeat_seconds"),
        ({"skills": "extract-totals"}, "skills"),
        ({"agent": 7}, "agent"),
        ({"pubnub": "keys"}, "pubnub"),
    ],
)
def test_a_session_the_sdk_cannot_use_is_refused_naming_the_field(
    changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(SessionError, match=f"^{field}:"):
        AgentSession.from_json("http://h", session_body(**changes))


def test_a_pubnub_session_needs_no_relay_url_and_fails_clearly_without_its_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session = AgentSession.from_json(
        "http://h", session_body(transport="pubnub", relay_url=None, pubnub={"tasks_channel": "c"})
    )
    assert session.pubnub == {"tasks_channel": "c"}
    monkeypatch.setattr(agent_connect, "PUBNUB_MODULE", "blocks.agent.no_such_transport")
    with pytest.raises(SessionError, match="PubNub"):
        agent_connect.open_transport(session, "blkagent_x_y")


def test_the_token_is_sent_only_to_the_server_it_belongs_to() -> None:
    assert same_origin("https://b.example/v1/agent/inputs/1", "https://b.example:443")
    assert same_origin("http://127.0.0.1:8000/x", "http://127.0.0.1:8000")
    assert not same_origin("http://127.0.0.1:8001/x", "http://127.0.0.1:8000")
    assert not same_origin("http://b.example/x", "https://b.example")
    assert not same_origin("https://b.example.evil/x", "https://b.example")


def test_a_handler_answer_must_be_a_json_object_within_the_limit() -> None:
    assert completed("t", {"total": "1.00"}).state == COMPLETED
    assert completed("t", None).output == {}
    for wrong, reason in [
        (["a list"], "not a JSON object"),
        ({"when": object()}, "not JSON"),
        ({"ratio": math.nan}, "not JSON"),
        ({"blob": "x" * MAX_CONTENT_BYTES}, "limit"),
    ]:
        result = completed("t", wrong)
        assert result.state == FAILED
        assert result.error is not None
        assert reason in result.error


async def test_a_question_needs_a_title_and_json_details() -> None:
    task = Task(id="t", skill="s", input={})
    with pytest.raises(ValueError, match="title"):
        await task.ask("  ")
    with pytest.raises(ValueError, match="details"):
        await task.ask("Pay?", details={"when": object()})


def test_a_skill_has_one_handler() -> None:
    agent = Agent()

    @agent.skill("extract-totals")
    async def first(task: Task) -> dict[str, Any]:
        return {}

    with pytest.raises(ValueError, match="already has a handler"):
        agent.skill("extract-totals")
    with pytest.raises(ValueError, match="non-empty"):
        agent.skill("")
    assert set(agent.skills) == {"extract-totals"}


def test_the_cli_loads_an_agent_by_module_and_attribute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "invoice_agent", raising=False)
    agents = ROOT / "examples" / "agents"
    agent = load_agent("invoice_agent:agent", agents)
    assert set(agent.skills) == {"extract-totals", "check-vendor"}
    for spec, reason in [
        ("invoice_agent", "MODULE:ATTRIBUTE"),
        ("no_such_agent_module:agent", "no module"),
        ("invoice_agent:nobody", "no attribute"),
        ("invoice_agent:KNOWN_VENDORS", "not a blocks.agent.Agent"),
    ]:
        with pytest.raises(AgentLoadError, match=reason):
            load_agent(spec, agents)


def test_the_sdk_and_its_command_load_nothing_of_blocks_but_core() -> None:
    """An agent's machine needs neither the API nor the worker: importing the SDK, and running
    `blocks agent`, loads only blocks.agent, blocks.core and the command's own module."""
    probe = (
        "import json, sys\n"
        "from blocks.cli import app\n"
        "try:\n"
        "    app(['agent', 'run', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('blocks'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    loaded = json.loads(out.strip().splitlines()[-1])
    assert "blocks.agent.runner" in loaded
    outside = [
        m
        for m in loaded
        if m not in ("blocks", "blocks.cli", "blocks.cli.agent")
        and not m.startswith(("blocks.agent", "blocks.core"))
    ]
    assert not outside, outside
