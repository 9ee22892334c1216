"""The agent step of the author SDK: `await self.agent(agent, skill, input)` hands a task to a
remote agent and returns its output.

`AgentSteps` is a mixin of `BlocksWorkflow`. The task runs as the `blocks.agents.dispatch`
activity (blocks.activities.agents), completed asynchronously by the agent's result. The agent's
status messages are heartbeats: a dead agent, a cut network or a lost message times the attempt
out (`heartbeat_timeout`), and Temporal sends the same task again until `timeout` has passed; then
the step fails, naming why. An agent that asks a question (A2A input required) gets an approval
step (`on_input`: its policy, SLA, reminders and escalation as any step) and the decision as its
answer, on the same task. Cancelling the run cancels the task at the agent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    TimeoutError,
    is_cancelled_exception,
)

from blocks.core.agents.protocol import (
    AGENT_TASK_FAILED,
    INPUT_REQUIRED,
    MAX_CONTENT_BYTES,
    content_size,
)
from blocks.core.approvals.eligibility import ApprovalStep
from blocks.core.approvals.policy import ApprovalPolicy

with workflow.unsafe.imports_passed_through():
    from blocks.activities.agents import (
        AGENT_REFUSED,
        AgentActivities,
        AgentAnswerCall,
        AgentCancelCall,
        AgentOutcome,
        AgentTaskCall,
    )

__all__ = ["AGENT_STEP_FAILED", "AGENT_STEP_NOT_APPROVED", "AgentSteps"]

AGENT_STEP_FAILED = "AgentStepFailed"
AGENT_STEP_NOT_APPROVED = "AgentStepNotApproved"
MIN_HEARTBEAT_TIMEOUT = timedelta(seconds=15)
_MAX_QUESTIONS = 20  # a loop of questions is a bug in the agent, not a conversation


class AgentSteps:
    """`self.agent(...)` of `BlocksWorkflow`; the hooks are the workflow's."""

    _agent_calls: int = 0

    @property
    def run_input(self) -> Any:
        raise NotImplementedError

    async def request_approval(self, step_id: str, **options: Any) -> ApprovalStep:
        raise NotImplementedError

    async def agent(
        self,
        agent: str,
        skill: str,
        input: Mapping[str, Any] | BaseModel | None = None,
        *,
        step: str | None = None,
        timeout: timedelta = timedelta(hours=1),  # noqa: ASYNC109 (the task's, Temporal's)
        heartbeat_timeout: timedelta = timedelta(seconds=60),
        on_input: ApprovalPolicy | None = None,
        input_sla: timedelta | None = None,
        input_form: type[BaseModel] | None = None,
        approve_first: ApprovalPolicy | None = None,
        approve_sla: timedelta | None = None,
    ) -> dict[str, Any]:
        """Run `skill` of the organization's agent named `agent` on `input` (a JSON object or a
        pydantic model) and return the agent's output (a JSON object).

        The agent must answer within `timeout` in all; while it works it reports at least every
        `heartbeat_timeout`, or the task is sent again (the agent drops a task it already has).
        If the agent asks a question, an approval step named `<step>-input-<n>` opens with the
        question as its title, decided under `on_input` (required for agents that ask) within
        `input_sla`, and the decision (`{"approved", "state", "comment", "form"}`) goes back to
        the agent. A task the agent fails or rejects, or that does not finish in time, raises
        ApplicationError of type `AgentStepFailed` naming why; uncaught, it fails the run.

        `approve_first` gates the task behind an approval step named `<step>-approval`: its
        approvers see the agent, the skill and the input that would be sent, and nothing is sent
        unless they approve within `approve_sla`; otherwise ApplicationError of type
        `AgentStepNotApproved` is raised (catch it to take another path).
        """
        self._agent_calls += 1
        name = step or f"agent-{self._agent_calls}"
        if heartbeat_timeout < MIN_HEARTBEAT_TIMEOUT:
            # Agents report every 10 s (their session says so): a shorter timeout would
            # time out every attempt of a healthy agent.
            raise _invalid(name, f"heartbeat_timeout must be at least {MIN_HEARTBEAT_TIMEOUT}")
        payload = (
            input.model_dump(mode="json") if isinstance(input, BaseModel) else dict(input or {})
        )
        if content_size(payload) > MAX_CONTENT_BYTES:
            raise _failed(name, f"the input is larger than {MAX_CONTENT_BYTES} bytes as JSON")
        if approve_first is not None:
            gate = await self.request_approval(
                f"{name}-approval",
                title=f"Send {skill!r} to agent {agent!r}?",
                policy=approve_first,
                sla=approve_sla,
                context={"agent": agent, "skill": skill, "input": payload},
            )
            if gate.state.value != "approved":
                raise ApplicationError(
                    f"agent step {name!r} was not approved ({gate.state.value}): nothing was sent",
                    type=AGENT_STEP_NOT_APPROVED,
                    non_retryable=True,
                )
        task_id = str(workflow.uuid4())
        org_id, run_id = self.run_input.org_id, self.run_input.run_id
        options: dict[str, Any] = {
            "start_to_close_timeout": timeout,
            "schedule_to_close_timeout": timeout,
            "heartbeat_timeout": heartbeat_timeout,
            "retry_policy": RetryPolicy(
                initial_interval=timedelta(seconds=1),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(seconds=30),
                non_retryable_error_types=[AGENT_REFUSED, AGENT_TASK_FAILED],
            ),
        }
        try:
            outcome = await workflow.execute_activity_method(
                AgentActivities.dispatch,
                AgentTaskCall(
                    org_id=org_id,
                    run_id=run_id,
                    step=name,
                    agent=agent,
                    skill=skill,
                    task_id=task_id,
                    input=payload,
                ),
                **options,
            )
            questions = 0
            while outcome.state == INPUT_REQUIRED:
                questions += 1
                if on_input is None or questions > _MAX_QUESTIONS:
                    await self._cancel_task(org_id, run_id, task_id)
                    reason = (
                        "the agent asked for input and the step has no `on_input` policy"
                        if on_input is None
                        else f"the agent asked more than {_MAX_QUESTIONS} questions"
                    )
                    raise _failed(name, reason)
                answer = await self._ask_approvers(
                    name, questions, agent, skill, outcome, on_input, input_sla, input_form
                )
                outcome = await workflow.execute_activity_method(
                    AgentActivities.answer,
                    AgentAnswerCall(
                        org_id=org_id, run_id=run_id, step=name, task_id=task_id, answer=answer
                    ),
                    **options,
                )
        except asyncio.CancelledError:
            # The run is being cancelled: tell the agent, then let the cancellation go on.
            await self._cancel_task(org_id, run_id, task_id)
            raise
        except ActivityError as error:
            if is_cancelled_exception(error):  # the awaited activity was cancelled with the run
                await self._cancel_task(org_id, run_id, task_id)
                raise
            raise _failed(name, _reason(agent, skill, timeout, error)) from error
        return outcome.output or {}

    async def _ask_approvers(
        self,
        name: str,
        number: int,
        agent: str,
        skill: str,
        outcome: AgentOutcome,
        policy: ApprovalPolicy,
        sla: timedelta | None,
        form: type[BaseModel] | None,
    ) -> dict[str, Any]:
        question = outcome.question or {}
        title = str(question.get("title") or "The agent asks for a decision")[:500]
        step = await self.request_approval(
            f"{name}-input-{number}",
            title=title,
            policy=policy,
            sla=sla,
            form=form,
            context={"agent": agent, "skill": skill, "question": question},
        )
        last = step.votes[-1] if step.votes else None
        return {
            "approved": step.state.value == "approved",
            "state": step.state.value,
            "comment": last.comment if last else None,
            "form": last.form if last else None,
        }

    async def _cancel_task(self, org_id: str, run_id: str, task_id: str) -> None:
        await workflow.execute_activity_method(
            AgentActivities.cancel,
            AgentCancelCall(org_id=org_id, run_id=run_id, task_id=task_id),
            start_to_close_timeout=timedelta(seconds=30),
        )


def _reason(agent: str, skill: str, timeout: timedelta, error: ActivityError) -> str:
    cause = error.cause
    if isinstance(cause, TimeoutError):
        return f"agent {agent!r} did not finish {skill!r} within {timeout}"
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(cause or error)


def _invalid(name: str, reason: str) -> ApplicationError:
    return ApplicationError(
        f"invalid agent step {name!r}: {reason}", type="AgentStepInvalid", non_retryable=True
    )


def _failed(name: str, reason: str) -> ApplicationError:
    return ApplicationError(
        f"agent step {name!r} failed: {reason}", type=AGENT_STEP_FAILED, non_retryable=True
    )
