"""Where an agent task's time goes: each database transaction and RPC of the relay path timed alone.

One task at a time, the pieces in the order a task meets them (dispatch, token check, claim, ack,
the result's transaction, Temporal's async completion), each sample a fresh task of an agent that
has no connection (so the real relay, woken by the dispatch's NOTIFY, has nobody to send it to).
Also the bare side's activity and the worker-side timeline read back from `agent_tasks`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter, process_time
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio import activity
from temporalio.client import Client

from bench.agent_bare import WAIT_ACTIVITY, BareWait
from bench.agent_echo import total
from bench.stats import percentile
from blocks.core.agents import protocol as p
from blocks.core.audit.ids import workflow_event_id
from blocks.core.audit.records import ActorType, AuditRecord
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.db import bind_org, session_factory
from blocks.models.agents.registry import agent_by_name, mark_seen
from blocks.models.agents.tasks import (
    AgentTask,
    acknowledge,
    claim_deliveries,
    dispatch_task,
    finish,
    task_of_agent,
)
from blocks.models.agents.tokens import AgentPrincipal, check_agent_token
from blocks.models.audit.events import append_events

__all__ = ["BareActivities", "PartsTarget", "measure_parts", "task_timeline", "xact_commits"]

NUMBERS = list(range(10))


class BareActivities:
    """The baseline's activities, in the worker process: the sum itself, and one that waits to be
    completed by its task token (the token handed to the bench through a queue)."""

    def __init__(self) -> None:
        self.tokens: asyncio.Queue[bytes] = asyncio.Queue()

    @activity.defn(name="bench.bare_sum")
    async def bare_sum(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"total": total(params.get("numbers"))}

    @activity.defn(name=WAIT_ACTIVITY)
    async def bare_wait(self, _: dict[str, Any]) -> dict[str, Any]:
        self.tokens.put_nowait(activity.info().task_token)
        activity.raise_complete_async()


@dataclass(frozen=True)
class PartsTarget:
    """An organization's agent with no connection, its token, and the bare worker's queue."""

    org_id: uuid.UUID
    agent_name: str
    token: str
    bare_client: Client
    bare_queue: str
    bare: BareActivities


def _record(task: AgentTask, action: str, actor: ActorType, actor_id: str | None) -> AuditRecord:
    """An audit record as the activity and the relay write them (metadata only)."""
    return AuditRecord(
        action=action,
        actor_type=actor,
        actor_id=actor_id,
        target_type="agent_task",
        target_id=str(task.id),
        run_id=task.run_id,
        data={"agent": "bench", "skill": task.skill, "step": task.step},
        event_id=str(workflow_event_id(task.workflow_id, f"{action}:{task.id}:{task.attempt}")),
    )


async def measure_parts(
    engine: AsyncEngine, target: PartsTarget, samples: int
) -> dict[str, dict[str, float]]:
    """Median and p95 in ms, and this process's mean CPU ms, of each piece over `samples` tasks."""
    sessions = session_factory(engine)
    worker_ctx = OrgContext(
        org_id=OrgId(target.org_id), user_id=None, roles=(), auth=AuthMethod.WORKFLOW
    )
    async with sessions() as session, session.begin():
        checked = await check_agent_token(session, target.token)
    assert isinstance(checked, AgentPrincipal), checked
    principal = checked
    ctx = principal.context()
    state: dict[str, Any] = {}

    async def dispatch() -> None:
        """The dispatch activity's transaction: the agent by name, the task row (input sealed),
        NOTIFY, the `agent.task_dispatched` audit event."""
        task_id = uuid.uuid4()
        run_id = str(uuid.uuid4())
        async with sessions() as session, session.begin():
            agent = await agent_by_name(worker_ctx, session, target.agent_name)
            assert agent is not None
            task = await dispatch_task(
                worker_ctx,
                session,
                task_id=task_id,
                agent_id=agent.id,
                skill="echo-sum",
                run_id=run_id,
                workflow_id=f"run-{run_id}",
                step="sum",
                input={"numbers": NUMBERS},
                task_token=uuid.uuid4().bytes * 4,
                attempt=1,
            )
            record = _record(task, "agent.task_dispatched", ActorType.WORKFLOW, None)
            await _append(worker_ctx, session, record)
        state["task_id"] = task_id

    async def token_check() -> None:
        """What the relay does before each message from the agent: the token looked up again."""
        async with sessions() as session, session.begin():
            await check_agent_token(session, target.token)

    async def claim() -> None:
        async with sessions() as session, session.begin():
            found = await claim_deliveries(
                ctx, session, agent_id=principal.agent_id, skills=principal.skills
            )
        assert [d.task.id for d in found] == [state["task_id"]], found

    async def ack() -> None:
        """The `ack` message's transaction: the task locked, its input deleted, audited, seen."""
        async with sessions() as session, session.begin():
            task = await task_of_agent(ctx, session, state["task_id"], principal.agent_id)
            assert task is not None
            assert acknowledge(task)
            session.add(task)
            await _append(
                ctx, session, _record(task, "agent.task_delivered", ActorType.AGENT, "bench")
            )
            await mark_seen(ctx, session, principal.agent_id)

    async def conclude_db() -> None:
        """The `result` message's transaction without the Temporal call it makes inside it."""
        async with sessions() as session, session.begin():
            task = await task_of_agent(ctx, session, state["task_id"], principal.agent_id)
            assert task is not None
            finish(task, "completed")
            session.add(task)
            await _append(
                ctx, session, _record(task, "agent.task_completed", ActorType.AGENT, "bench")
            )
            await mark_seen(ctx, session, principal.agent_id)

    async def complete_rpc() -> None:
        """Temporal's RespondActivityTaskCompleted by task token (the activity waits already)."""
        await target.bare_client.get_async_activity_handle(task_token=state["token"]).complete(
            {"state": p.COMPLETED, "output": {"total": 45}}
        )

    async def wait_started() -> None:
        handle = await target.bare_client.start_workflow(
            BareWait.run, {}, id=f"bench-wait-{uuid.uuid4()}", task_queue=target.bare_queue
        )
        state["token"] = await asyncio.wait_for(target.bare.tokens.get(), 30)
        state["wait"] = handle

    parts: dict[str, Callable[[], Awaitable[None]]] = {
        "dispatch_txn": dispatch,
        "token_check_txn": token_check,
        "claim_txn": claim,
        "ack_txn": ack,
        "result_txn_without_rpc": conclude_db,
        "complete_rpc": complete_rpc,
    }
    timings: dict[str, list[float]] = {name: [] for name in parts}
    cpu: dict[str, float] = dict.fromkeys(parts, 0.0)
    for round_ in range(samples + 1):  # the first round warms connections up, not timed
        await wait_started()
        for name, part in parts.items():
            began, cpu0 = perf_counter(), process_time()
            await part()
            if round_:
                timings[name].append((perf_counter() - began) * 1000)
                cpu[name] += process_time() - cpu0
        await state["wait"].result()
    result: dict[str, dict[str, float]] = {}
    for name, values in timings.items():
        ordered = sorted(values)
        result[name] = {
            "p50_ms": round(percentile(ordered, 50), 3),
            "p95_ms": round(percentile(ordered, 95), 3),
            "cpu_ms": round(cpu[name] * 1000 / samples, 3),
        }
    return result


async def _append(ctx: OrgContext, session: AsyncSession, record: AuditRecord) -> None:
    await append_events(ctx, session, [record])


async def task_timeline(
    engine: AsyncEngine, org_id: uuid.UUID, run_ids: list[str]
) -> dict[str, list[float]]:
    """Per finished task of these runs, in ms, from the rows' own timestamps (worker and API share
    the machine's clock): dispatched -> claimed (NOTIFY, LISTEN, claim), claimed -> acked (sent,
    the agent, the ack back, its transaction), acked -> finished (the result, its transaction and
    Temporal's completion RPC), and dispatched -> finished."""
    out: dict[str, list[float]] = {"to_claim": [], "to_ack": [], "to_finish": [], "total": []}
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org_id)
        rows = (
            await session.exec(
                select(AgentTask).where(
                    AgentTask.org_id == org_id, col(AgentTask.run_id).in_(run_ids)
                )
            )
        ).all()
    for task in rows:
        if not (task.delivered_at and task.acked_at and task.finished_at):
            continue
        ms = [
            (b - a).total_seconds() * 1000
            for a, b in (
                (task.created_at, task.delivered_at),
                (task.delivered_at, task.acked_at),
                (task.acked_at, task.finished_at),
                (task.created_at, task.finished_at),
            )
        ]
        for key, value in zip(out, ms, strict=True):
            out[key].append(value)
    return out


async def xact_commits(engine: AsyncEngine) -> int:
    """Transactions committed in this database so far (pg_stat_database; flushed by each backend
    within about 10 s of going idle, so read it after a pause)."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT pg_stat_clear_snapshot()"))
        value = await connection.scalar(
            text("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        )
    return int(value or 0)
