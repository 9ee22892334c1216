"""The agent SDK (blocks.agent, `blocks agent run`) against the real API: its agent session, its
relay and the agent step of a running workflow, with the agent in this process or its own."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.agent import AccessRefused, Agent, Backoff, Task
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import Role
from blocks.infra.db import session_factory
from blocks.models.agents.tokens import revoke_agent_tokens
from tests.e2e.agent_stack import RegisteredAgent, register_agent
from tests.support import Org, Stack, make_org, wait_for_status

FAST = Backoff(base=0.05, cap=0.5)
# The workflow's heartbeat timeout: above the 10 s the session tells agents to report at.
HEARTBEAT_TIMEOUT = 15


async def _start(http: httpx.AsyncClient, org: Org, agent: RegisteredAgent, **params: Any) -> str:
    started = await http.post(
        "/v1/runs",
        json={
            "workflow": "tests_agent_totals",
            "input": {
                "agent": agent.name,
                "lines": [{"amount": 40}, {"amount": 2}],
                "heartbeat_seconds": HEARTBEAT_TIMEOUT,
                **params,
            },
        },
        headers=org["operator"].headers,
    )
    assert started.status_code == 201, started.text
    return str(started.json()["id"])


async def _actions(http: httpx.AsyncClient, org: Org, run_id: str) -> list[str]:
    answer = await http.get(f"/v1/runs/{run_id}/audit-events", headers=org["auditor"].headers)
    assert answer.status_code == 200, answer.text
    return [event["action"] for event in answer.json()["events"]]


@asynccontextmanager
async def _serving(agent: Agent, stack: Stack, token: str) -> AsyncIterator[asyncio.Task[None]]:
    run = asyncio.create_task(agent.run(url=stack.base_url, token=token, backoff=FAST))
    try:
        yield run
    finally:
        run.cancel()
        with suppress(asyncio.CancelledError):
            await run


def _totals_agent(calls: list[tuple[str, int]]) -> Agent:
    agent = Agent()

    @agent.skill("extract-totals")
    async def totals(task: Task) -> dict[str, Any]:
        calls.append((task.id, task.attempt))
        await task.progress("adding up")
        return {"total": sum(int(line["amount"]) for line in task.input["lines"])}

    @agent.skill("check-vendor")
    async def vendor(task: Task) -> dict[str, Any]:
        answer = await task.ask("Vendor ACME is unknown: pay anyway?", details={"vendor": "ACME"})
        total = sum(int(line["amount"]) for line in task.input["lines"])
        return {"total": total, "approved": answer.get("approved") is True}

    return agent


async def test_an_sdk_agent_answers_a_run_and_its_question_goes_to_an_approver(
    agents: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    registered = await register_agent(engine, org.id)
    calls: list[tuple[str, int]] = []
    async with agents.http() as http, _serving(_totals_agent(calls), agents, registered.token):
        run_id = await _start(http, org, registered)
        await wait_for_status(http, run_id, org["operator"].headers, status="completed")
        shown = (await http.get(f"/v1/runs/{run_id}", headers=org["operator"].headers)).json()
        assert shown["result"] == {"status": "done", "total": 42}
        assert len(calls) == 1

        asking = await _start(http, org, registered, skill="check-vendor")
        await wait_for_status(
            http, asking, org["operator"].headers, status="running", stage="awaiting_approval"
        )
        pending = (await http.get(f"/v1/runs/{asking}", headers=org["approver"].headers)).json()
        [step] = pending["pending_steps"]
        assert step["title"] == "Vendor ACME is unknown: pay anyway?"
        decided = await http.post(
            f"/v1/runs/{asking}/steps/{step['step_id']}/decisions",
            json={"decision": "approve", "comment": "known to us"},
            headers=org["approver"].headers,
        )
        assert decided.status_code == 200, decided.text
        await wait_for_status(http, asking, org["operator"].headers, status="completed")
        answered = (await http.get(f"/v1/runs/{asking}", headers=org["operator"].headers)).json()
        actions = await _actions(http, org, asking)
    assert answered["result"] == {"status": "done", "total": 42, "approved": True}
    assert actions.count("agent.task_completed") == 1
    assert "agent.input_requested" in actions


async def test_a_revoked_token_stops_the_sdk_agent(agents: Stack, engine: AsyncEngine) -> None:
    org = await make_org(engine)
    registered = await register_agent(engine, org.id)
    agent = _totals_agent([])
    run = asyncio.create_task(agent.run(url=agents.base_url, token=registered.token, backoff=FAST))
    try:
        async with agents.http() as http:
            run_id = await _start(http, org, registered)
            await wait_for_status(http, run_id, org["operator"].headers, status="completed")
            ctx = OrgContext(
                org_id=OrgId(org.id), user_id=None, roles=(Role.ADMIN,), auth=AuthMethod.SYSTEM
            )
            async with session_factory(engine)() as session, session.begin():
                assert await revoke_agent_tokens(ctx, session, registered.id)
            # The agent's next message (the ack of its next task) is refused, and so is its
            # session when it reconnects: it stops rather than retrying.
            await _start(http, org, registered)
            with pytest.raises(AccessRefused, match="refused the agent token"):
                await asyncio.wait_for(run, 60)
    finally:
        run.cancel()
        with suppress(asyncio.CancelledError, AccessRefused):
            await run


AGENT_MODULE = """
    import asyncio
    from pathlib import Path

    from blocks.agent import Agent, Task

    agent = Agent()
    LOG = Path({log!r})
    HOLD = Path({hold!r})


    @agent.skill("extract-totals")
    async def totals(task: Task) -> dict:
        with LOG.open("a") as log:
            log.write(f"start {{task.id}} {{task.attempt}}\\n")
        while HOLD.exists():  # this process is about to lose its network
            await asyncio.sleep(0.05)
        with LOG.open("a") as log:
            log.write(f"done {{task.id}}\\n")
        return {{"total": sum(int(line["amount"]) for line in task.input["lines"])}}
"""


async def _agent_process(stack: Stack, token: str, app_dir: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "blocks.cli",
        "agent",
        "run",
        "--url",
        stack.base_url,
        "--app-dir",
        str(app_dir),
        "lossy_agent:agent",
        env={**os.environ, "BLOCKS_AGENT_TOKEN": token},
        stderr=asyncio.subprocess.DEVNULL,
    )


async def test_an_agent_process_killed_mid_task_and_started_again_completes_it_once(
    agents: Stack, engine: AsyncEngine, tmp_path: Path
) -> None:
    org = await make_org(engine)
    registered = await register_agent(engine, org.id)
    log, hold = tmp_path / "calls.log", tmp_path / "hold"
    hold.touch()
    (tmp_path / "lossy_agent.py").write_text(
        textwrap.dedent(AGENT_MODULE.format(log=str(log), hold=str(hold)))
    )
    first = await _agent_process(agents, registered.token, tmp_path)
    second: asyncio.subprocess.Process | None = None
    try:
        async with agents.http() as http:
            run_id = await _start(http, org, registered)
            deadline = asyncio.get_running_loop().time() + 60
            while not (log.exists() and log.read_text().startswith("start")):
                assert asyncio.get_running_loop().time() < deadline, "the task never arrived"
                await asyncio.sleep(0.1)
            first.send_signal(signal.SIGKILL)  # mid-task: no result, no goodbye
            await first.wait()
            hold.unlink()
            second = await _agent_process(agents, registered.token, tmp_path)
            # No heartbeat from the lost agent: the attempt times out and the task comes again.
            await wait_for_status(
                http, run_id, org["operator"].headers, status="completed", within=120
            )
            shown = (await http.get(f"/v1/runs/{run_id}", headers=org["operator"].headers)).json()
            actions = await _actions(http, org, run_id)
    finally:
        for process in (first, second):
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await process.wait()
    assert shown["result"] == {"status": "done", "total": 42}
    lines = log.read_text().splitlines()
    [task_id] = {line.split()[1] for line in lines}
    assert lines[0] == f"start {task_id} 1"
    assert [line for line in lines if line.startswith("done")] == [f"done {task_id}"]
    assert actions.count("agent.task_completed") == 1
