"""What an agent's messages do, whatever transport carried them: acknowledge a delivery, keep the
task's activity alive, answer its question, finish it.

Each message is checked against the agent that sent it (a token never touches another agent's
task: refused and audited). A `status` is the activity's heartbeat; a cancellation Temporal
reports back through it becomes a `cancel` for the agent. A `result`, or a question, completes the
activity by the task's stored token (the Temporal client's codec seals it under the run's
organization key) and is acknowledged to the agent only once taken. A message about a finished
task, or for an attempt Temporal has already given up on, changes nothing: the next attempt
delivers the task again and the agent re-sends its result.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import AsyncActivityCancelledError, AsyncActivityHandle, Client
from temporalio.converter import ActivitySerializationContext
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from blocks.core.agents import protocol as p
from blocks.core.audit.ids import workflow_event_id
from blocks.core.audit.records import ActorType, AuditRecord, Outcome
from blocks.models.agents.registry import mark_seen
from blocks.models.agents.tasks import (
    ANSWERED,
    FINAL,
    INPUT_REQUIRED,
    AgentTask,
    acknowledge,
    finish,
    task_of_agent,
)
from blocks.models.agents.tokens import AgentPrincipal
from blocks.models.audit.events import append_events
from blocks.models.keys.org_keys import process_org_keys

_log = logging.getLogger("blocks.agents")
# The activity type the codec is told (any activity of the run other than the LLM call is
# sealed under the organization's key).
_ACTIVITY_TYPE = "blocks.agents.dispatch"
_OUTCOMES = {
    p.COMPLETED: "completed",
    p.FAILED: "failed",
    p.REJECTED: "rejected",
    p.CANCELED: "canceled",
}


class TaskNotTaken(Exception):
    """Temporal could not take a result now (unreachable): the agent must send it again."""


@dataclass(frozen=True)
class AgentLink:
    """One agent's connection to Blocks, as a transport hands its messages in."""

    principal: AgentPrincipal
    sessions: async_sessionmaker[AsyncSession]
    client: Client


def _record(
    link: AgentLink,
    task: AgentTask,
    action: str,
    *,
    outcome: Outcome = Outcome.SUCCESS,
    **data: object,
) -> AuditRecord:
    return AuditRecord(
        action=action,
        actor_type=ActorType.AGENT,
        actor_id=str(link.principal.agent_id),
        target_type="agent_task",
        target_id=str(task.id),
        run_id=task.run_id,
        outcome=outcome,
        data={
            "agent": link.principal.agent_name,
            "skill": task.skill,
            "step": task.step,
            **link.principal.audit_marks(),
            **data,
        },
        event_id=str(workflow_event_id(task.workflow_id, f"{action}:{task.id}:{task.attempt}")),
    )


async def record_denied(link: AgentLink, task_id: str, what: str) -> None:
    """A message about a task that is not this agent's: refused, and audited."""
    principal = link.principal
    async with link.sessions() as session, session.begin():
        await append_events(
            principal.context(),
            session,
            [
                AuditRecord(
                    action="agent.access_denied",
                    actor_type=ActorType.AGENT,
                    actor_id=str(principal.agent_id),
                    target_type="agent_task",
                    target_id=task_id[:100],
                    outcome=Outcome.DENIED,
                    reason=f"{what} for a task that is not this agent's",
                    data={
                        "agent": principal.agent_name,
                        "token_id": str(principal.token_id),
                        **principal.audit_marks(),
                    },
                )
            ],
        )


def _activity(link: AgentLink, task: AgentTask, token: bytes) -> AsyncActivityHandle:
    # The codec seals what completes the activity under the run's organization key: tell it the
    # organization the row already names, sparing it a lookup of the run.
    keys = process_org_keys()
    if keys is not None:
        keys.remember_run(task.workflow_id, task.org_id)
    handle = link.client.get_async_activity_handle(task_token=token)
    return handle.with_context(
        ActivitySerializationContext(
            namespace=link.client.namespace,
            activity_id=None,
            activity_type=_ACTIVITY_TYPE,
            activity_task_queue=None,
            workflow_id=task.workflow_id,
            workflow_type=None,
            is_local=False,
        )
    )


def _task_id(message: p.Message) -> uuid.UUID | None:
    try:
        return uuid.UUID(message.task_id)
    except ValueError:
        return None


async def handle_message(link: AgentLink, message: p.Message) -> Sequence[p.Message]:
    """Act on one message from the agent; what to send back to it (acks, cancels)."""
    task_id = _task_id(message)
    if task_id is None:
        await record_denied(link, message.task_id, message.type)
        return ()
    ctx = link.principal.context()
    if isinstance(message, p.AckMessage):
        async with link.sessions() as session, session.begin():
            task = await task_of_agent(ctx, session, task_id, link.principal.agent_id)
            if task is None:
                denied = True
            else:
                denied = False
                if acknowledge(task):
                    session.add(task)
                    await append_events(ctx, session, [_record(link, task, "agent.task_delivered")])
                    await mark_seen(ctx, session, link.principal.agent_id)
        if denied:
            await record_denied(link, message.task_id, "an acknowledgement")
        return ()
    if isinstance(message, p.StatusMessage) and message.state == p.WORKING:
        return await _heartbeat(link, task_id, message)
    if isinstance(message, p.StatusMessage | p.ResultMessage):
        return await _conclude(link, task_id, message)
    # An agent has nothing to send of Blocks' own kinds (task, cancel, input).
    await record_denied(link, message.task_id, f"a {message.type} message")
    return ()


async def _heartbeat(
    link: AgentLink, task_id: uuid.UUID, message: p.StatusMessage
) -> Sequence[p.Message]:
    ctx = link.principal.context()
    async with link.sessions() as session, session.begin():
        task = await task_of_agent(ctx, session, task_id, link.principal.agent_id)
        token = task.task_token if task is not None else None
    if task is None:
        await record_denied(link, message.task_id, "a status")
        return ()
    if task.state in FINAL:
        return (p.CancelMessage(task_id=message.task_id, reason="the task has ended"),)
    if token is None or task.state == INPUT_REQUIRED:
        return ()
    try:
        await _activity(link, task, token).heartbeat(message.message or "working")
    except AsyncActivityCancelledError:
        return (p.CancelMessage(task_id=message.task_id, reason="the run was cancelled"),)
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        # That attempt is over (timed out): the next one delivers the task again.
    return ()


async def _conclude(
    link: AgentLink, task_id: uuid.UUID, message: p.StatusMessage | p.ResultMessage
) -> Sequence[p.Message]:
    """A question or a result: complete the activity, then record the task's new state."""
    ctx = link.principal.context()
    ack = p.AckMessage(task_id=message.task_id)
    async with link.sessions() as session, session.begin():
        task = await task_of_agent(ctx, session, task_id, link.principal.agent_id)
        if task is None:
            denied = True
        elif (
            task.state in FINAL
            or task.task_token is None
            # The question again, before the agent acknowledged its answer: a re-send.
            or (isinstance(message, p.StatusMessage) and task.state == ANSWERED)
        ):
            return (ack,)  # taken already (a re-sent result or question)
        else:
            denied = False
            try:
                record = await _complete(link, task, task.task_token, message)
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND:
                    # That attempt timed out: the next one delivers the task again.
                    return (ack,)
                raise TaskNotTaken(str(err)) from err
            session.add(task)
            await append_events(ctx, session, [record])
            await mark_seen(ctx, session, link.principal.agent_id)
    if denied:
        await record_denied(link, message.task_id, f"a {message.type}")
        return ()
    return (ack,)


async def _complete(
    link: AgentLink, task: AgentTask, token: bytes, message: p.StatusMessage | p.ResultMessage
) -> AuditRecord:
    activity = _activity(link, task, token)
    if isinstance(message, p.StatusMessage):  # input required
        await activity.complete({"state": p.INPUT_REQUIRED, "question": message.question})
        task.state = INPUT_REQUIRED
        task.task_token = None
        return _record(link, task, "agent.input_requested")
    if message.state == p.COMPLETED:
        await activity.complete({"state": p.COMPLETED, "output": message.output})
        finish(task, "completed")
        return _record(link, task, "agent.task_completed", latency_ms=task.latency_ms)
    outcome = _OUTCOMES[message.state]
    await activity.fail(
        ApplicationError(
            f"the agent answered {outcome}: {message.error or 'no reason given'}",
            type=p.AGENT_TASK_FAILED,
            non_retryable=True,
        )
    )
    finish(task, outcome)
    return _record(
        link,
        task,
        "agent.task_failed",
        outcome=Outcome.FAILURE,
        state=outcome,
        latency_ms=task.latency_ms,
    )
