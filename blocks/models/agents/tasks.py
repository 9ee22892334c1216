"""Tasks in flight to remote agents: stored from dispatch until the agent has them, then metadata.

A task's row is written by the dispatch activity (its input sealed under the organization's
data key, the current attempt's Temporal task token) and `NOTIFY blocks_agent_tasks` wakes the
relay. A delivery is claimed under the row's lock (`SKIP LOCKED`: two relays never send one
delivery twice) and sent again after `ACK_SECONDS` until the agent acknowledges it; the
acknowledgement deletes the stored input (task content is transient). An answer to the agent's
question is stored and delivered the same way. A finished task keeps only metadata: state,
outcome, attempts, deliveries and latency (the agent metrics).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import Column, LargeBinary, text
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blocks.core.agents import protocol as p
from blocks.core.context import OrgContext
from blocks.infra.crypto.org_keys import OrgDataKey
from blocks.infra.db import bind_org
from blocks.models.base import org_fk_column, timestamp_column, utcnow
from blocks.models.keys.org_keys import live_org_key, org_key_by_id, process_org_keys

NOTIFY_CHANNEL = "blocks_agent_tasks"
# How long a delivery waits for the agent's acknowledgement before it is sent again.
ACK_SECONDS = 10.0
_LISTEN_RETRY_SECONDS = 2.0
_log = logging.getLogger("blocks.agents")

QUEUED = "queued"
DELIVERED = "delivered"
WORKING = "working"
INPUT_REQUIRED = "input_required"
ANSWERED = "answered"
DELIVERABLE = (QUEUED, DELIVERED, ANSWERED)
FINAL = ("completed", "failed", "canceled", "rejected")


class AgentTask(SQLModel, table=True):
    __tablename__ = "agent_tasks"

    id: uuid.UUID = Field(primary_key=True)
    org_id: uuid.UUID = Field(sa_column=org_fk_column(index=False))
    agent_id: uuid.UUID
    skill: str = Field(max_length=200)
    run_id: str = Field(max_length=100)
    workflow_id: str = Field(max_length=200)
    step: str = Field(max_length=200)
    state: str = Field(max_length=24)
    attempt: int = 1
    task_token: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    content_key_id: uuid.UUID | None = None
    input_sealed: bytes | None = Field(
        default=None, sa_column=Column(LargeBinary, nullable=True), repr=False
    )
    answer_sealed: bytes | None = Field(
        default=None, sa_column=Column(LargeBinary, nullable=True), repr=False
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    delivered_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    acked_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    redeliver_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    last_heartbeat_at: datetime | None = Field(
        default=None, sa_column=timestamp_column(nullable=True)
    )
    finished_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    outcome: str | None = Field(default=None, max_length=24)
    latency_ms: int | None = None
    deliveries: int = 0


@dataclass(frozen=True)
class Delivery:
    """What to send an agent for one task: the task with its input, or the answer it asked for."""

    task: AgentTask
    input: dict[str, Any] | None = None
    answer: dict[str, Any] | None = None

    def message(self) -> p.Message:
        """The message that carries it to the agent, on any transport."""
        task = self.task
        if self.answer is not None:
            return p.InputMessage(task_id=str(task.id), answer=self.answer)
        return p.TaskMessage(
            task_id=str(task.id),
            skill=task.skill,
            input=self.input,
            attempt=task.attempt,
            run_id=task.run_id,
            step=task.step,
        )


def _aad(org_id: uuid.UUID, task_id: uuid.UUID, part: str) -> bytes:
    return f"blocks.agent-task.v1|{org_id}|{task_id}|{part}".encode()


def _seal(key: OrgDataKey, task_id: uuid.UUID, part: str, value: dict[str, Any]) -> bytes:
    plain = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    return key.seal(plain, _aad(key.org_id, task_id, part))


def open_sealed(key: OrgDataKey, task_id: uuid.UUID, part: str, sealed: bytes) -> dict[str, Any]:
    """A task's sealed input (`part` "input") or answer ("answer"), opened."""
    aad = _aad(key.org_id, task_id, part)
    opened = json.loads(key.open_sealed(sealed, aad))
    return opened if isinstance(opened, dict) else {}


async def listen_for_tasks(
    database_url: str,
    notified: Callable[[str], None],
    connected: Callable[[], None],
    *,
    who: str,
) -> None:
    """LISTEN on `NOTIFY_CHANNEL` until cancelled: each notice's payload to `notified`;
    `connected` after each (re)connection, since notices sent while away are lost (the caller
    looks again). PostgreSQL away: logged and tried again every 2 s."""
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                database_url, autocommit=True
            ) as connection:
                await connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
                connected()
                async for notice in connection.notifies():
                    notified(notice.payload)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # PostgreSQL away: try again shortly
            _log.warning("%s lost PostgreSQL (%s); retrying", who, type(exc).__name__)
            await asyncio.sleep(_LISTEN_RETRY_SECONDS)


async def _live_key(session: AsyncSession, org_id: uuid.UUID) -> OrgDataKey:
    """The organization's live key, from the process's key cache when it serves this database."""
    source = process_org_keys()
    if source is not None and source.serves(session):
        return await source.active_key(org_id)
    return await live_org_key(session, org_id)


async def _key_by_id(session: AsyncSession, org_id: uuid.UUID, key_id: uuid.UUID) -> OrgDataKey:
    source = process_org_keys()
    if source is not None and source.serves(session):
        return await source.key(org_id, key_id)
    return await org_key_by_id(session, org_id, key_id)


async def _notify(session: AsyncSession, agent_id: uuid.UUID, *extra: str) -> None:
    """Wake the relays (sent at commit, so never before the row is visible)."""
    payload = ":".join((str(agent_id), *extra))
    await session.exec(  # type: ignore[call-overload]
        text("SELECT pg_notify(:channel, :payload)").bindparams(
            channel=NOTIFY_CHANNEL, payload=payload
        )
    )


async def dispatch_task(
    ctx: OrgContext,
    session: AsyncSession,
    *,
    task_id: uuid.UUID,
    agent_id: uuid.UUID,
    skill: str,
    run_id: str,
    workflow_id: str,
    step: str,
    input: dict[str, Any],
    task_token: bytes,
    attempt: int,
) -> AgentTask:
    """Store the task for delivery (a new attempt of a task already stored queues it again,
    with its input sealed anew and the new attempt's token); wakes the relays."""
    await bind_org(session, ctx.org_id)
    key = await _live_key(session, ctx.org_id)
    task = await session.get(AgentTask, task_id, with_for_update=True)
    if task is None:
        task = AgentTask(
            id=task_id,
            org_id=ctx.org_id,
            agent_id=agent_id,
            skill=skill,
            run_id=run_id,
            workflow_id=workflow_id,
            step=step,
            state=QUEUED,
        )
    elif task.state in FINAL:
        return task
    task.state = QUEUED
    task.attempt = attempt
    task.task_token = task_token
    task.content_key_id = key.key_id
    task.input_sealed = _seal(key, task_id, "input", input)
    task.redeliver_at = None
    session.add(task)
    await session.flush()
    await _notify(session, agent_id)
    return task


async def answer_task(
    ctx: OrgContext,
    session: AsyncSession,
    *,
    task_id: uuid.UUID,
    answer: dict[str, Any],
    task_token: bytes,
) -> AgentTask | None:
    """Store the answer to the task's question for delivery, with the token of the activity
    that now waits for the agent; None if the task is not waiting for an answer."""
    await bind_org(session, ctx.org_id)
    task = await session.get(AgentTask, task_id, with_for_update=True)
    if task is None or task.org_id != ctx.org_id or task.state in FINAL:
        return None
    key = await _live_key(session, ctx.org_id)
    task.state = ANSWERED
    task.task_token = task_token
    task.content_key_id = key.key_id
    task.answer_sealed = _seal(key, task_id, "answer", answer)
    task.redeliver_at = None
    session.add(task)
    await session.flush()
    await _notify(session, task.agent_id)
    return task


async def claim_deliveries(
    ctx: OrgContext,
    session: AsyncSession,
    *,
    agent_id: uuid.UUID,
    skills: frozenset[str],
    limit: int = 50,
) -> list[Delivery]:
    """The agent's tasks due for (re)delivery now, locked and marked delivered, with their
    content opened; tasks of skills outside `skills` stay queued for another token."""
    await bind_org(session, ctx.org_id)
    now = utcnow()
    rows = (
        await session.exec(
            select(AgentTask)
            .where(
                AgentTask.org_id == ctx.org_id,
                AgentTask.agent_id == agent_id,
                col(AgentTask.state).in_(DELIVERABLE),
                col(AgentTask.skill).in_(sorted(skills)),
                (col(AgentTask.redeliver_at).is_(None)) | (col(AgentTask.redeliver_at) <= now),
            )
            .order_by(col(AgentTask.created_at))
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    keys: dict[uuid.UUID, OrgDataKey] = {}
    deliveries: list[Delivery] = []
    for task in rows:
        key_id = task.content_key_id
        sealed = task.answer_sealed if task.state == ANSWERED else task.input_sealed
        if key_id is None or sealed is None:
            continue
        if key_id not in keys:
            keys[key_id] = await _key_by_id(session, ctx.org_id, key_id)
        opened = open_sealed(
            keys[key_id], task.id, "answer" if task.state == ANSWERED else "input", sealed
        )
        if task.state == QUEUED:
            task.state = DELIVERED
        task.deliveries += 1
        task.delivered_at = now
        task.redeliver_at = now + timedelta(seconds=ACK_SECONDS)
        session.add(task)
        if task.state == ANSWERED:
            deliveries.append(Delivery(task=task, answer=opened))
        else:
            deliveries.append(Delivery(task=task, input=opened))
    await session.flush()
    return deliveries


async def task_of_agent(
    ctx: OrgContext, session: AsyncSession, task_id: uuid.UUID, agent_id: uuid.UUID
) -> AgentTask | None:
    """The task, locked, if it belongs to `agent_id` (else None: another agent's, or unknown)."""
    await bind_org(session, ctx.org_id)
    task = await session.get(AgentTask, task_id, with_for_update=True)
    if task is None or task.org_id != ctx.org_id or task.agent_id != agent_id:
        return None
    return task


def acknowledge(task: AgentTask) -> bool:
    """The agent has the task (or the answer): its stored content is deleted. True if this
    acknowledgement changed anything (the first one)."""
    if task.state == DELIVERED:
        task.input_sealed = None
    elif task.state == ANSWERED:
        task.answer_sealed = None
    else:
        return False
    task.state = WORKING
    task.acked_at = utcnow()
    task.redeliver_at = None
    return True


def finish(task: AgentTask, outcome: str) -> None:
    """The task is over: only metadata stays."""
    task.state = outcome
    task.outcome = outcome
    task.finished_at = utcnow()
    task.latency_ms = round((task.finished_at - task.created_at).total_seconds() * 1000)
    task.task_token = None
    task.input_sealed = None
    task.answer_sealed = None
    task.redeliver_at = None


async def cancel_task(
    ctx: OrgContext, session: AsyncSession, task_id: uuid.UUID
) -> AgentTask | None:
    """Cancel a task not yet over (the run was cancelled); wakes the relays to tell the agent."""
    await bind_org(session, ctx.org_id)
    task = await session.get(AgentTask, task_id, with_for_update=True)
    if task is None or task.org_id != ctx.org_id or task.state in FINAL:
        return None
    finish(task, "canceled")
    session.add(task)
    await session.flush()
    await _notify(session, task.agent_id, "cancel", str(task.id))
    return task
