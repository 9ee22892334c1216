"""`POST /v1/runs/{id}/cancel`: an operator stops a run; the steps that wait close as cancelled.

The API appends `run.cancel_requested` (who, why, from where) in the request's transaction, then
asks Temporal to cancel the workflow, then commits. The append holds the organization's chain head
until the commit, so the request comes before anything the workflow writes about it in the run's
chain of custody; if Temporal does not take the request, nothing is recorded. The workflow then
closes each waiting step as `cancelled` (its reminders and timers stop, decisions are refused),
records `run.completed` with status `cancelled` and ends as canceled
(`blocks.workflows.step_timers`).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from temporalio.client import WorkflowExecutionStatus as Status
from temporalio.service import RPCError, RPCStatusCode

from blocks.api.approvals.runs.detail import status_name
from blocks.api.deps import CanCancelRuns, DbSession, TemporalClient
from blocks.api.errors import PROBLEM_JSON, Problem, not_found
from blocks.api.reference import examples as ex
from blocks.api.schemas import RunCancelIn, RunCancelOut
from blocks.api.security_audit import request_audit_fields, request_origin
from blocks.core.audit.records import AuditRecord
from blocks.infra.temporal.client import find_execution
from blocks.models.approvals.runs import StartState, get_run
from blocks.models.audit.events import append_events

router = APIRouter(prefix="/v1/runs", tags=["approvals"])

# The chain head is held while Temporal is asked: the wait is bounded.
_CANCEL_RPC_TIMEOUT = timedelta(seconds=10)
# Rows whose workflow never started: nothing runs that could be cancelled.
_NEVER_STARTED = frozenset({StartState.START_FAILED, StartState.ABANDONED})

_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {
        "description": "The run has already ended (or has not started yet)",
        "content": {
            PROBLEM_JSON: {
                "schema": {"$ref": "#/components/schemas/ProblemOut"},
                "example": {
                    "type": "/problems/run_closed",
                    "title": "Conflict",
                    "status": 409,
                    "detail": "the run has already ended (completed)",
                    "instance": f"/v1/runs/{ex.RUN_ID}/cancel",
                    "code": "run_closed",
                },
            }
        },
    }
}


@router.post(
    "/{run_id}/cancel",
    status_code=202,
    response_model=RunCancelOut,
    responses=_CONFLICT,
    summary="Cancel a run",
)
async def cancel_run(
    run_id: uuid.UUID,
    body: RunCancelIn,
    request: Request,
    ctx: CanCancelRuns,
    session: DbSession,
    client: TemporalClient,
) -> RunCancelOut:
    """Ask the run's workflow to stop. The answer comes once Temporal has taken the request; the
    workflow then closes the steps that wait as `cancelled` and the run reads `canceled`. The
    reason is kept in the audit log (`run.cancel_requested`), not in Temporal."""
    run = await get_run(ctx, session, run_id)
    if run is None:
        raise not_found("run")
    if run.start_state in _NEVER_STARTED:
        raise _closed(run.start_state)
    state = await find_execution(client, run.workflow_id)
    if state is None:
        # A `starting` row whose workflow Temporal does not have (yet): the start may still land.
        raise Problem(
            409,
            "Conflict",
            "the run has not started yet; retry in a few seconds",
            code="run_not_started",
        )
    if state.status != Status.RUNNING:
        raise _closed(status_name(state.status))
    event_id = uuid.uuid4()
    await append_events(
        ctx,
        session,
        [
            AuditRecord(
                action="run.cancel_requested",
                target_type="run",
                target_id=str(run.id),
                run_id=str(run.id),
                reason=body.reason,
                data={
                    "workflow": run.workflow_name,
                    "workflow_version": run.workflow_version,
                    "credential": request_origin(request, ctx).credential(),
                },
                event_id=str(event_id),
                **request_audit_fields(request, ctx),
            )
        ],
    )
    handle = client.get_workflow_handle(run.workflow_id)
    try:
        # Temporal keeps a cancellation's reason unencrypted in the run's history: it gets the
        # id of the event that holds the person's words, and the workflow records that id.
        await handle.cancel(reason=str(event_id), rpc_timeout=_CANCEL_RPC_TIMEOUT)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:  # it ended between the look and the request
            raise _closed("ended") from err
        raise  # unreachable and the like: a 503 (api.outages); the event is rolled back
    return RunCancelOut(id=run.id, status="cancel_requested", reason=body.reason)


def _closed(how: str) -> Problem:
    return Problem(409, "Conflict", f"the run has already ended ({how})", code="run_closed")
