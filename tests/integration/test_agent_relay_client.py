"""The agent SDK's relay client (blocks.agent) against a fake Blocks: the agent session and the
relay socket on one local WebSocket server, driven message by message from the test."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from blocks.agent import AccessRefused, Agent, Backoff, Task, TaskFailed
from blocks.core.agents.protocol import (
    CANCELED,
    COMPLETED,
    FAILED,
    INPUT_REQUIRED,
    REJECTED,
    WORKING,
    AckMessage,
    CancelMessage,
    InputMessage,
    Message,
    TaskMessage,
    encode,
)
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "blkagent_lookup1_secretsecretsecret"
SESSION_PATH = "/v1/agent/session"
CONNECT_PATH = "/v1/agents/connect"
INPUTS_PATH = "/v1/agents/tasks/"  # {task id}/input
FAST = Backoff(base=0.01, cap=0.05)


def _json(status: int, body: object) -> Response:
    data = json.dumps(body).encode()
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return Response(status, "", headers, data)


class FakeBlocks:
    """What an agent talks to: `GET /v1/agent/session`, inputs by reference at
    /v1/agents/tasks/{id}/input, and the relay socket at /v1/agents/connect. Every message the
    agent sends is recorded with the number (1, 2, ...) of the connection it came on."""

    def __init__(self, *, port: int = 0, heartbeat_seconds: float = 30.0) -> None:
        self.port = port
        self.heartbeat_seconds = heartbeat_seconds
        self.relay_url: str | None = None  # default: this server's socket
        self.session_status = 200
        self.relay_status: int | None = None  # refuse the socket's handshake with this status
        self.inputs: dict[str, dict[str, Any]] = {}
        self.session_requests = 0
        self.relay_attempts = 0
        self.input_requests: list[str | None] = []  # the Authorization header of each
        self.connections: list[ServerConnection] = []
        self.accepted: asyncio.Queue[ServerConnection] = asyncio.Queue()
        self.received: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()
        self._server: Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeBlocks:
        self._server = await serve(
            self._handle, "127.0.0.1", self.port, process_request=self._process_request
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _process_request(self, _: ServerConnection, request: Request) -> Response | None:
        authorized = request.headers.get("Authorization") == f"Bearer {TOKEN}"
        if request.path == SESSION_PATH:
            self.session_requests += 1
            if not authorized or self.session_status == 401:
                return _json(401, {"title": "Unauthorized", "detail": "the token is revoked"})
            if self.session_status != 200:
                return _json(self.session_status, {"title": "unavailable"})
            return _json(200, self._session())
        if request.path.startswith(INPUTS_PATH):
            self.input_requests.append(request.headers.get("Authorization"))
            found = self.inputs.get(request.path.removeprefix(INPUTS_PATH).removesuffix("/input"))
            if not authorized:
                return _json(401, {"title": "Unauthorized"})
            if found is None:  # acknowledged already, or its reference expired
                return _json(410, {"title": "Gone"})
            return _json(200, found)
        if request.path == CONNECT_PATH:
            self.relay_attempts += 1
            if self.relay_status is not None:
                return _json(self.relay_status, {"title": "refused"})
            return None if authorized else _json(401, {"title": "Unauthorized"})
        return _json(404, {"title": "Not Found"})

    def _session(self) -> dict[str, Any]:
        return {
            "agent": "invoices",
            "agent_id": "a-1",
            "org_id": "o-1",
            "skills": ["sum", "extract-totals", "check-vendor"],
            "transport": "relay",
            "relay_url": self.relay_url or f"ws://127.0.0.1:{self.port}{CONNECT_PATH}",
            "heartbeat_seconds": self.heartbeat_seconds,
            "pubnub": None,
        }

    async def _handle(self, connection: ServerConnection) -> None:
        self.connections.append(connection)
        number = len(self.connections)
        await self.accepted.put(connection)
        with suppress(ConnectionClosed):
            async for raw in connection:
                await self.received.put((number, json.loads(raw)))

    async def send(self, message: Message) -> None:
        await self.connections[-1].send(encode(message))

    def cut(self) -> None:
        """The network goes: the TCP connection ends with no closing handshake."""
        transport = self.connections[-1].transport
        assert transport is not None
        transport.abort()

    async def next(self, within: float = 10.0) -> tuple[int, dict[str, Any]]:
        return await asyncio.wait_for(self.received.get(), within)

    async def expect(
        self, kind: str, task_id: str, *, state: str | None = None, within: float = 10.0
    ) -> tuple[int, dict[str, Any]]:
        """The next message of this type for this task (and state), skipping others."""
        async with asyncio.timeout(within):
            while True:
                number, message = await self.received.get()
                if (
                    message["type"] == kind
                    and message["task_id"] == task_id
                    and (state is None or message.get("state") == state)
                ):
                    return number, message


@asynccontextmanager
async def running(agent: Agent, blocks: FakeBlocks, **options: Any) -> AsyncIterator[None]:
    """The agent serving `blocks` until the block ends, then stopped; connected when it starts."""
    options.setdefault("backoff", FAST)
    run = asyncio.create_task(agent.run(url=blocks.url, token=TOKEN, **options))
    try:
        await asyncio.wait_for(blocks.accepted.get(), 10)
        yield
    finally:
        run.cancel()
        with suppress(asyncio.CancelledError):
            await run


async def eventually(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "the condition never held"
        await asyncio.sleep(0.01)


def waiting_agent() -> tuple[Agent, asyncio.Event, list[str]]:
    """An agent whose `sum` skill waits for the event, then adds up `numbers`; `calls` lists the
    task ids it started, then "done:<id>" as it answers."""
    agent, release, calls = Agent(), asyncio.Event(), []

    @agent.skill("sum")
    async def add(task: Task) -> dict[str, Any]:
        calls.append(task.id)
        await release.wait()
        calls.append(f"done:{task.id}")
        return {"sum": sum(task.input["numbers"])}

    return agent, release, calls


async def test_a_task_is_acknowledged_first_and_run_once_however_often_it_arrives() -> None:
    agent, release, calls = waiting_agent()
    task = TaskMessage("t-1", "sum", {"numbers": [1, 2, 3]})
    async with FakeBlocks() as blocks, running(agent, blocks):
        await blocks.send(task)
        assert (await blocks.next())[1] == {"type": "ack", "task_id": "t-1"}
        await blocks.send(task)  # redelivered while it runs: acknowledged again, not run again
        assert (await blocks.next())[1] == {"type": "ack", "task_id": "t-1"}
        release.set()
        _, result = await blocks.expect("result", "t-1")
        assert result["state"] == COMPLETED
        assert result["output"] == {"sum": 6}
        await blocks.send(task)  # redelivered once finished: the same result again
        assert (await blocks.next())[1] == {"type": "ack", "task_id": "t-1"}
        assert (await blocks.next())[1] == result
    assert calls == ["t-1", "done:t-1"]


async def test_a_running_task_heartbeats_until_it_answers() -> None:
    agent, release, _ = waiting_agent()
    async with FakeBlocks(heartbeat_seconds=0.05) as blocks, running(agent, blocks):
        await blocks.send(TaskMessage("t-2", "sum", {"numbers": [4]}))
        for _ in range(3):
            _, beat = await blocks.expect("status", "t-2")
            assert beat["state"] == WORKING
        release.set()
        _, result = await blocks.expect("result", "t-2")
        assert result["output"] == {"sum": 4}


async def test_progress_is_reported_and_at_most_the_bound_of_handlers_run_at_once() -> None:
    agent, running_now, most = Agent(max_concurrent_tasks=1), [0], [0]
    release = asyncio.Event()

    @agent.skill("sum")
    async def add(task: Task) -> dict[str, Any]:
        running_now[0] += 1
        most[0] = max(most[0], running_now[0])
        await task.progress(f"adding {len(task.input['numbers'])} numbers")
        await release.wait()
        running_now[0] -= 1
        return {"sum": sum(task.input["numbers"])}

    async with FakeBlocks() as blocks, running(agent, blocks):
        await blocks.send(TaskMessage("p-1", "sum", {"numbers": [1, 2]}))
        await blocks.send(TaskMessage("p-2", "sum", {"numbers": [3]}))
        _, progress = await blocks.expect("status", "p-1")
        assert progress == {
            "type": "status",
            "task_id": "p-1",
            "state": WORKING,
            "message": "adding 2 numbers",
        }
        release.set()
        await blocks.expect("result", "p-1")
        await blocks.expect("result", "p-2")
    assert most == [1]


async def test_a_result_finished_while_disconnected_is_sent_once_reconnected() -> None:
    agent, release, calls = waiting_agent()
    async with FakeBlocks() as blocks, running(agent, blocks):
        await blocks.send(TaskMessage("t-3", "sum", {"numbers": [2, 5]}))
        await blocks.expect("ack", "t-3")
        blocks.relay_status = 503  # the relay is away: reconnecting fails for now
        blocks.cut()
        attempts = blocks.relay_attempts
        await eventually(lambda: blocks.relay_attempts >= attempts + 2)
        release.set()  # the handler answers while the agent has no connection
        await eventually(lambda: "done:t-3" in calls)
        blocks.relay_status = None
        await asyncio.wait_for(blocks.accepted.get(), 10)
        number, result = await blocks.expect("result", "t-3")
        assert number == 2
        assert result["output"] == {"sum": 7}


async def test_a_result_sent_just_before_the_connection_dropped_is_sent_again() -> None:
    agent, release, calls = waiting_agent()
    release.set()
    async with FakeBlocks() as blocks, running(agent, blocks):
        await blocks.send(TaskMessage("t-4", "sum", {"numbers": [1]}))
        first = await blocks.expect("result", "t-4")
        blocks.cut()  # it may never have reached Blocks' database
        await asyncio.wait_for(blocks.accepted.get(), 10)
        again = await blocks.expect("result", "t-4")
    assert (first[0], again[0]) == (1, 2)
    assert first[1] == again[1]
    assert calls == ["t-4", "done:t-4"]


async def test_a_question_waits_for_its_answer_across_a_reconnection() -> None:
    agent = Agent()

    @agent.skill("check-vendor")
    async def check(task: Task) -> dict[str, Any]:
        answer = await task.ask("Pay Initech?", details={"vendor": task.input["vendor"]})
        return {"answer": answer}

    question = {"title": "Pay Initech?", "details": {"vendor": "Initech"}}
    async with FakeBlocks() as blocks, running(agent, blocks):
        await blocks.send(TaskMessage("t-5", "check-vendor", {"vendor": "Initech"}))
        _, status = await blocks.expect("status", "t-5", state=INPUT_REQUIRED)
        assert status["question"] == question
        blocks.cut()  # the question might be lost with the connection: it is asked again
        await asyncio.wait_for(blocks.accepted.get(), 10)
        number, status = await blocks.expect("status", "t-5", state=INPUT_REQUIRED)
        assert (number, status["question"]) == (2, question)
        await blocks.send(InputMessage("t-5", {"decision": "approve"}))
        assert (await blocks.next())[1] == {"type": "ack", "task_id": "t-5"}
        _, result = await blocks.expect("result", "t-5")
        await blocks.send(InputMessage("t-5", {"decision": "approve"}))  # delivered again
        assert (await blocks.next())[1] == {"type": "ack", "task_id": "t-5"}
    assert result["state"] == COMPLETED
    assert result["output"] == {"answer": {"decision": "approve"}}


async def test_a_task_for_a_skill_the_agent_lacks_is_rejected() -> None:
    agent, _, calls = waiting_agent()
    async with FakeBlocks() as blocks, running(agent, blocks):
        await blocks.send(TaskMessage("t-6", "translate", {"text": "hello"}))
        assert (await blocks.next())[1] == {"type": "ack", "task_id": "t-6"}
        _, result = await blocks.expect("result", "t-6")
    assert result["state"] == REJECTED
    assert "unknown skill 'translate'" in result["error"]
    assert calls == []


async def test_a_cancel_cancels_the_running_handler() -> None:
    agent, seen = Agent(), {}
    started, stopped = asyncio.Event(), asyncio.Event()

    @agent.skill("sum")
    async def slow(task: Task) -> dict[str, Any]:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen["cancelled"] = task.cancelled
            stopped.set()
            raise
        return {}

    async with FakeBlocks() as blocks, running(agent, blocks):
        await blocks.send(TaskMessage("t-7", "sum", {}))
        await asyncio.wait_for(started.wait(), 10)
        await blocks.send(CancelMessage("t-7", reason="run cancelled"))
        _, result = await blocks.expect("result", "t-7")
    assert result["state"] == CANCELED
    assert stopped.is_set()
    assert seen == {"cancelled": True}


async def test_failures_answer_failed_with_the_reason_and_plain_functions_run_in_a_thread() -> None:
    agent, threads = Agent(), []

    @agent.skill("sum")
    async def refuse(task: Task) -> dict[str, Any]:
        raise TaskFailed("no line items")

    @agent.skill("extract-totals")
    async def crash(task: Task) -> dict[str, Any]:
        raise ValueError("bad amount " + "x" * 5000)

    @agent.skill("check-vendor")
    def plain(task: Task) -> dict[str, Any]:
        threads.append(threading.current_thread() is threading.main_thread())
        return {"vendor": task.input["vendor"]}

    async with FakeBlocks() as blocks, running(agent, blocks):
        await blocks.send(TaskMessage("f-1", "sum", {}))
        await blocks.send(TaskMessage("f-2", "extract-totals", {}))
        await blocks.send(TaskMessage("f-3", "check-vendor", {"vendor": "Globex"}))
        _, refused = await blocks.expect("result", "f-1")
        _, crashed = await blocks.expect("result", "f-2")
        _, answered = await blocks.expect("result", "f-3")
    assert (refused["state"], refused["error"]) == (FAILED, "no line items")
    assert crashed["state"] == FAILED
    assert crashed["error"].startswith("ValueError: bad amount x")
    assert len(crashed["error"]) <= 1000
    assert (answered["state"], answered["output"]) == (COMPLETED, {"vendor": "Globex"})
    assert threads == [False]


async def test_an_input_by_reference_is_fetched_from_blocks_only_with_the_token() -> None:
    agent, release, calls = waiting_agent()
    release.set()
    async with FakeBlocks() as blocks, running(agent, blocks):
        ref = f"{INPUTS_PATH}r-1/input"
        await blocks.send(TaskMessage("r-1", "sum", None, input_ref=ref))
        # Gone (acknowledged or expired): not acknowledged, so Blocks delivers it again.
        await eventually(lambda: len(blocks.input_requests) == 1)
        blocks.inputs["r-1"] = {"numbers": [10, 20]}
        results: list[dict[str, Any]] = []

        async def collect() -> None:
            results.append((await blocks.expect("result", "r-1"))[1])

        collector = asyncio.create_task(collect())
        while not collector.done():  # Blocks' redelivery of an unacknowledged task
            await blocks.send(TaskMessage("r-1", "sum", None, input_ref=ref))
            await asyncio.wait([collector], timeout=0.05)
        # Elsewhere than the Blocks server it connects to: the token is not sent there.
        await blocks.send(TaskMessage("r-2", "sum", None, input_ref="http://127.0.0.2:9/x"))
        _, refused = await blocks.expect("result", "r-2")
    assert results[0]["output"] == {"sum": 30}
    assert calls == ["r-1", "done:r-1"]
    assert set(blocks.input_requests) == {f"Bearer {TOKEN}"}
    assert refused["state"] == FAILED
    assert "not on the Blocks server" in refused["error"]


async def test_what_blocks_acknowledged_is_not_sent_again_after_a_reconnection() -> None:
    agent, release, _ = waiting_agent()
    asked = asyncio.Event()

    @agent.skill("check-vendor")
    async def check(task: Task) -> dict[str, Any]:
        asked.set()
        return await task.ask("Pay Initech?")

    release.set()
    async with FakeBlocks() as blocks, running(agent, blocks):
        await blocks.send(TaskMessage("k-1", "sum", {"numbers": [1]}))
        await blocks.expect("result", "k-1")
        await blocks.send(AckMessage("k-1"))  # Blocks has taken the result
        await blocks.send(TaskMessage("k-2", "check-vendor", {}))
        await blocks.expect("status", "k-2", state=INPUT_REQUIRED)
        await blocks.send(AckMessage("k-2"))  # ... and the question
        # A probe behind the acknowledgements: once answered, the agent has read them.
        await blocks.send(TaskMessage("k-3", "sum", {"numbers": [2]}))
        await blocks.expect("result", "k-3")
        blocks.cut()
        await asyncio.wait_for(blocks.accepted.get(), 10)
        on_second: list[dict[str, Any]] = []
        await blocks.send(TaskMessage("k-4", "sum", {"numbers": [3]}))
        async with asyncio.timeout(10):
            while not on_second or on_second[-1] != {"type": "ack", "task_id": "k-4"}:
                on_second.append((await blocks.next())[1])
    assert asked.is_set()
    # k-3's result was not acknowledged: sent again; k-1's result and k-2's question were.
    assert {(m["type"], m["task_id"]) for m in on_second} == {
        ("result", "k-3"),
        ("status", "k-2"),  # the heartbeat of the task waiting for its answer
        ("ack", "k-4"),
    }
    assert all(m.get("state") != INPUT_REQUIRED for m in on_second)


async def test_a_failed_task_runs_again_on_a_retry_but_not_on_a_redelivery() -> None:
    agent, attempts = Agent(), []

    @agent.skill("sum")
    async def flaky(task: Task) -> dict[str, Any]:
        attempts.append(task.attempt)
        if task.attempt == 1:
            raise TaskFailed("the ledger is down")
        return {"sum": 1}

    async with FakeBlocks() as blocks, running(agent, blocks):
        await blocks.send(TaskMessage("a-1", "sum", {}, attempt=1))
        _, failed = await blocks.expect("result", "a-1")
        await blocks.send(TaskMessage("a-1", "sum", {}, attempt=1))  # the same delivery again
        assert (await blocks.expect("result", "a-1"))[1] == failed
        await blocks.send(TaskMessage("a-1", "sum", {}, attempt=2))  # Blocks retries it
        _, retried = await blocks.expect("result", "a-1")
        await blocks.send(TaskMessage("a-1", "sum", {}, attempt=3))  # a lost result: not rerun
        assert (await blocks.expect("result", "a-1"))[1] == retried
    assert failed["state"] == FAILED
    assert retried["state"] == COMPLETED
    assert attempts == [1, 2]


@pytest.mark.parametrize("refused_at", ["session", "relay"])
async def test_a_refused_token_stops_the_agent_without_retrying(refused_at: str) -> None:
    agent, _, _ = waiting_agent()
    async with FakeBlocks() as blocks:
        if refused_at == "session":
            blocks.session_status = 401
        else:
            blocks.relay_status = 403
        with pytest.raises(AccessRefused, match="refused the agent token"):
            await asyncio.wait_for(agent.run(url=blocks.url, token=TOKEN, backoff=FAST), 10)
    assert blocks.session_requests == 1
    assert blocks.relay_attempts == (0 if refused_at == "session" else 1)


async def test_a_token_revoked_while_connected_stops_the_agent_at_its_next_connection() -> None:
    agent, _, _ = waiting_agent()
    async with FakeBlocks() as blocks:
        run = asyncio.create_task(agent.run(url=blocks.url, token=TOKEN, backoff=FAST))
        await asyncio.wait_for(blocks.accepted.get(), 10)
        blocks.session_status = 401
        blocks.cut()
        with pytest.raises(AccessRefused):
            await asyncio.wait_for(run, 10)
    assert (blocks.session_requests, blocks.relay_attempts) == (2, 1)


async def test_a_refused_connection_is_retried_with_growing_delays_until_the_relay_is_up() -> None:
    agent, release, _ = waiting_agent()
    release.set()
    late_relay = FakeBlocks(port=free_port())  # nothing listens on its port yet
    backoff = Backoff(base=0.01, cap=1.0)
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) == 4:
            await late_relay.__aenter__()  # the relay comes up
        await asyncio.sleep(0)

    async with FakeBlocks() as blocks:
        blocks.relay_url = f"ws://127.0.0.1:{late_relay.port}{CONNECT_PATH}"
        run = asyncio.create_task(
            agent.run(url=blocks.url, token=TOKEN, backoff=backoff, sleep=sleep)
        )
        try:
            await asyncio.wait_for(late_relay.accepted.get(), 10)
            await late_relay.send(TaskMessage("b-1", "sum", {"numbers": [3]}))
            _, result = await late_relay.expect("result", "b-1")
        finally:
            run.cancel()
            with suppress(asyncio.CancelledError):
                await run
            await late_relay.__aexit__()
    assert result["output"] == {"sum": 3}
    assert len(delays) == 4
    for attempt, delay in enumerate(delays):
        assert backoff.ceiling(attempt) / 2 <= delay <= backoff.ceiling(attempt)
    assert [backoff.ceiling(a) for a in range(4)] == [0.01, 0.02, 0.04, 0.08]
    assert blocks.session_requests == 5  # the session is asked afresh before each attempt


async def test_blocks_agent_run_serves_the_example_agent_and_logs_no_secret() -> None:
    env = {**os.environ, "BLOCKS_AGENT_TOKEN": TOKEN}
    items = [
        {"description": "Widget-SECRET-LINE", "quantity": 3, "unit_price": "19.99"},
        {"description": "Setup", "quantity": 1, "unit_price": "50"},
    ]
    async with FakeBlocks() as blocks:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "blocks.cli",
            "agent",
            "run",
            "--url",
            blocks.url,
            "--app-dir",
            str(ROOT / "examples" / "agents"),
            "invoice_agent:agent",
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await asyncio.wait_for(blocks.accepted.get(), 60)
            await blocks.send(
                TaskMessage("c-1", "extract-totals", {"line_items": items, "tax_rate": "0.2"})
            )
            _, result = await blocks.expect("result", "c-1", within=30)
            await blocks.send(TaskMessage("c-2", "check-vendor", {"vendor": "Initech"}))
            _, status = await blocks.expect("status", "c-2", state=INPUT_REQUIRED, within=30)
            await blocks.send(InputMessage("c-2", {"approved": True, "comment": "ok"}))
            _, decided = await blocks.expect("result", "c-2", within=30)
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            assert process.stderr is not None
            logs = (await asyncio.wait_for(process.stderr.read(), 30)).decode()
            code = await process.wait()
    assert result["output"] == {
        "currency": "EUR",
        "line_count": 2,
        "subtotal": "109.97",
        "tax": "21.99",
        "total": "131.96",
    }
    assert status["question"]["details"]["vendor"] == "Initech"
    assert decided["output"] == {"vendor": "Initech", "known": False, "approved": True}
    assert code == 0, logs
    assert "connected to" in logs
    assert TOKEN not in logs
    assert "SECRET-LINE" not in logs
    assert "131.96" not in logs
