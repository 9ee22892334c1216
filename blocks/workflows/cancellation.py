"""A run's cancellation (or failure) is recorded wherever it lands: an interceptor around `run`.

`POST /v1/runs/{id}/cancel` may reach a run while a step waits, but also while the author's own
activity runs or while a step's approvers are being checked. Whichever await the cancellation
interrupts, it leaves the author's `run` method as a cancellation (`asyncio.CancelledError`, or
an activity error caused by one); `RunCancellation` then closes the steps that still wait as
`cancelled` and writes `run.completed` (status `cancelled`) once, through
`StepTimers._cancel_run`, and re-raises so the workflow ends as canceled.

A run whose code fails it (an `ApplicationError` or another `FailureError`, which ends the
workflow as failed) is recorded the same way: waiting steps close as cancelled and `run.completed`
says `failed` with the error's type, behind `workflow.patched(FAILURE_RECORDED)`.

Every worker and every replay must run it (`blocks.workers.main.INTERCEPTORS`): a history holds
the commands it adds. It adds none to a run that was never cancelled, so histories written before
it existed replay unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError, FailureError, is_cancelled_exception
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from blocks.workflows.sdk import BlocksWorkflow

# Runs that failed before failures were recorded replay as they were: no end, no closed steps.
FAILURE_RECORDED = "blocks.failure-recorded"


class RunCancellation(Interceptor):
    """Give to a `Worker` or `Replayer` as `interceptors=[RunCancellation()]`."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _RecordCancellation


class _RecordCancellation(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        try:
            return await self.next.execute_workflow(input)
        except (Exception, asyncio.CancelledError) as err:
            # Only the run's own cancellation: an author who cancels a task of theirs, or an
            # activity cancelled by other means, is not a cancelled run.
            if is_cancelled_exception(err) and workflow.cancellation_reason() is not None:
                run = workflow.instance()
                if isinstance(run, BlocksWorkflow):  # Blocks' system workflows have no steps
                    # Part of the SDK, as the step wait is: it may call the SDK's own method.
                    await run._cancel_run()
            # An error that fails the workflow (not one that fails a task, which is retried):
            # the run records its end and closes its steps, as a cancelled run does.
            elif isinstance(err, FailureError) and workflow.patched(FAILURE_RECORDED):
                run = workflow.instance()
                if isinstance(run, BlocksWorkflow):
                    kind = err.type if isinstance(err, ApplicationError) else None
                    await run._fail_run(kind or type(err).__name__)
            raise
