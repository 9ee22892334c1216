"""The agent step's activities: hand a task (or an answer) to a remote agent and wait for it.

`dispatch` stores the task for delivery (models.agents.tasks; the relay or PubNub carries it) and
completes asynchronously: the agent's result, or its question, completes the activity by the
stored task token (models.agents.completion). The agent's status messages are the activity's
heartbeats, so a dead agent or a lost message times the attempt out and Temporal retries it:
the same task id is delivered again, and the agent drops what it has already done. `answer`
hands the agent the decision on its question and waits the same way. `cancel` tells the agent
to stop (the run was cancelled). Each is audited with metadata only, in the run's custody.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from blocks.core.audit.ids import workflow_event_id
from blocks.core.audit.records import ActorType, AuditRecord
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.models.agents.registry import agent_by_name
from blocks.models.agents.tasks import FINAL, answer_task, cancel_task, dispatch_task
from blocks.models.audit.events import append_events

DISPATCH = "blocks.agents.dispatch"
ANSWER = "blocks.agents.answer"
CANCEL = "blocks.agents.cancel"
# The error type of a dispatch no retry can change (no such agent or skill).
AGENT_REFUSED = "AgentTaskRefused"


@dataclass(frozen=True)
class AgentTaskCall:
    """What the workflow asks: the agent by name, the skill, the input; `task_id` is derived
    from the run and the step, so every attempt is the same task to the agent."""

    org_id: str
    run_id: str
    step: str
    agent: str
    skill: str
    task_id: str
    input: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AgentAnswerCall:
    org_id: str
    run_id: str
    step: str
    task_id: str
    answer: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AgentCancelCall:
    org_id: str
    run_id: str
    task_id: str


@dataclass(frozen=True)
class AgentOutcome:
    """How the agent answered: `TASK_STATE_COMPLETED` with `output`, or
    `TASK_STATE_INPUT_REQUIRED` with `question` ({"title", "details"})."""

    state: str
    output: dict[str, Any] | None = None
    question: dict[str, Any] | None = None


def _ctx(org_id: str) -> OrgContext:
    return OrgContext(
        org_id=OrgId(uuid.UUID(org_id)), user_id=None, roles=(), auth=AuthMethod.WORKFLOW
    )


def _record(run_id: str, task_id: str, action: str, **data: Any) -> AuditRecord:
    attempt = activity.info().attempt
    return AuditRecord(
        action=action,
        actor_type=ActorType.WORKFLOW,
        target_type="agent_task",
        target_id=task_id,
        run_id=run_id,
        data={**data, "attempt": attempt},
        event_id=str(
            workflow_event_id(activity.info().workflow_id, f"{action}:{task_id}:{attempt}")
        ),
    )


class AgentActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    @activity.defn(name=DISPATCH)
    async def dispatch(self, call: AgentTaskCall) -> AgentOutcome:
        ctx = _ctx(call.org_id)
        info = activity.info()
        async with self._sessions() as session, session.begin():
            agent = await agent_by_name(ctx, session, call.agent)
            if agent is None:
                raise ApplicationError(
                    f"no agent named {call.agent!r} in this organization "
                    "(register one: POST /v1/agents)",
                    type=AGENT_REFUSED,
                    non_retryable=True,
                )
            if call.skill not in agent.skill_ids():
                raise ApplicationError(
                    f"agent {call.agent!r} declares no skill {call.skill!r} "
                    f"(its skills: {', '.join(agent.skill_ids()) or 'none'})",
                    type=AGENT_REFUSED,
                    non_retryable=True,
                )
            task = await dispatch_task(
                ctx,
                session,
                task_id=uuid.UUID(call.task_id),
                agent_id=agent.id,
                skill=call.skill,
                run_id=call.run_id,
                workflow_id=info.workflow_id or "",
                step=call.step,
                input=call.input,
                task_token=info.task_token,
                attempt=info.attempt,
            )
            if task.state in FINAL:
                raise ApplicationError(
                    f"task {call.task_id} already ended ({task.state})",
                    type=AGENT_REFUSED,
                    non_retryable=True,
                )
            await append_events(
                ctx,
                session,
                [
                    _record(
                        call.run_id,
                        call.task_id,
                        "agent.task_dispatched",
                        agent=call.agent,
                        agent_id=str(agent.id),
                        skill=call.skill,
                        step=call.step,
                        transport=agent.transport,
                    )
                ],
            )
        activity.raise_complete_async()

    @activity.defn(name=ANSWER)
    async def answer(self, call: AgentAnswerCall) -> AgentOutcome:
        ctx = _ctx(call.org_id)
        async with self._sessions() as session, session.begin():
            task = await answer_task(
                ctx,
                session,
                task_id=uuid.UUID(call.task_id),
                answer=call.answer,
                task_token=activity.info().task_token,
            )
            if task is None:
                raise ApplicationError(
                    f"task {call.task_id} no longer waits for an answer",
                    type=AGENT_REFUSED,
                    non_retryable=True,
                )
            await append_events(
                ctx,
                session,
                [_record(call.run_id, call.task_id, "agent.input_answered", step=call.step)],
            )
        activity.raise_complete_async()

    @activity.defn(name=CANCEL)
    async def cancel(self, call: AgentCancelCall) -> bool:
        ctx = _ctx(call.org_id)
        async with self._sessions() as session, session.begin():
            task = await cancel_task(ctx, session, uuid.UUID(call.task_id))
            if task is not None:
                await append_events(
                    ctx,
                    session,
                    [_record(call.run_id, call.task_id, "agent.task_canceled", step=task.step)],
                )
        return task is not None
