"""Routes for runs: read one, list the organization's, decide a step (starting one: `run_starts`)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from temporalio.api.enums.v1 import WorkflowExecutionStatus
from temporalio.client import Client
from temporalio.client import WorkflowExecutionStatus as Status
from temporalio.service import RPCError, RPCStatusCode

from blocks.api.approvals.decisions import submit_decision
from blocks.api.deps import (
    CanDecide,
    CanReadRuns,
    DbSession,
    TemporalClient,
)
from blocks.api.errors import not_found, service_unavailable
from blocks.api.schemas import (
    DecisionIn,
    DecisionOut,
    RunListOut,
    RunOut,
    RunSummaryOut,
    StepOut,
)
from blocks.core.approvals import search_attributes as sa
from blocks.core.approvals.eligibility import Decision
from blocks.core.context import OrgContext
from blocks.infra.temporal.client import find_execution
from blocks.models.approvals.runs import Run, StartState, get_run
from blocks.workflows.sdk import STATUS_QUERY
from blocks.workflows.types import RunOutcome, RunView

router = APIRouter(prefix="/v1/runs", tags=["approvals"])

# A running run's steps come from a query, which only a worker answers; without one it would wait.
_QUERY_TIMEOUT = timedelta(seconds=5)

_STATUS_NAMES: dict[int, str] = {
    Status.RUNNING: "running",
    Status.COMPLETED: "completed",
    Status.FAILED: "failed",
    Status.CANCELED: "canceled",
    Status.TERMINATED: "terminated",
    Status.CONTINUED_AS_NEW: "running",
    Status.TIMED_OUT: "timed_out",
}


def _status_name(status: Status | WorkflowExecutionStatus | None) -> str:
    return _STATUS_NAMES.get(int(status), "unknown") if status is not None else "unknown"


@router.get("", response_model=RunListOut, summary="List runs, newest first")
async def list_runs(
    ctx: CanReadRuns,
    client: TemporalClient,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> RunListOut:
    # The org id comes from the resolved context (a UUID), never from the caller's input.
    # Visibility returns newest first; ORDER BY is not supported by every visibility store.
    query = f'{sa.ORG_ID.name} = "{ctx.org_id}"'
    runs: list[RunSummaryOut] = []
    async for execution in client.list_workflows(query, limit=limit):
        run_id = execution.id.removeprefix("run-")
        attributes = execution.typed_search_attributes
        runs.append(
            RunSummaryOut(
                id=uuid.UUID(run_id),
                workflow=attributes.get(sa.WORKFLOW_NAME) or execution.workflow_type,
                status=_status_name(execution.status),
                stage=attributes.get(sa.STATUS),
                started_at=execution.start_time,
                closed_at=execution.close_time,
            )
        )
    return RunListOut(runs=runs)


@router.get("/{run_id}", response_model=RunOut, summary="Read a run and its open steps")
async def read_run(
    run_id: uuid.UUID, ctx: CanReadRuns, session: DbSession, client: TemporalClient
) -> RunOut:
    return await current_run_out(await _run_or_404(ctx, session, run_id), client)


async def current_run_out(run: Run, client: Client) -> RunOut:
    """The run as it stands, read from the truth: Temporal's, once a workflow exists.

    A row still `starting` may already have its workflow (the API that started it died before it
    could say so): then the workflow's state is the answer, until the reconciler settles the row.
    """
    if run.start_state not in (StartState.STARTED, StartState.STARTING):
        return run_out(run, status=run.start_state, stage=None, view=None, result=None)
    state = await find_execution(client, run.workflow_id)
    if state is None:
        return run_out(run, status=run.start_state, stage=None, view=None, result=None)
    handle = client.get_workflow_handle(run.workflow_id, result_type=RunOutcome)
    view: RunView | None = None
    result: RunOutcome | None = None
    if state.status == Status.RUNNING:
        try:
            view = await handle.query(STATUS_QUERY, result_type=RunView, rpc_timeout=_QUERY_TIMEOUT)
        except RPCError as err:
            if err.status not in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
                raise
            # Only a worker answers a query: none is serving this run's task queue right now.
            raise service_unavailable(
                "no worker answered for this run; retry in a few seconds", code="worker_unavailable"
            ) from err
    elif state.status == Status.COMPLETED:
        result = await handle.result()
    return run_out(
        run, status=_status_name(state.status), stage=state.stage, view=view, result=result
    )


@router.post(
    "/{run_id}/steps/{step_id}/decisions",
    response_model=DecisionOut,
    summary="Approve or reject a step",
)
async def decide_step(
    run_id: uuid.UUID,
    step_id: str,
    body: DecisionIn,
    request: Request,
    ctx: CanDecide,
    session: DbSession,
    client: TemporalClient,
) -> DecisionOut:
    return await submit_decision(
        request,
        ctx,
        session,
        client,
        run_id,
        step_id,
        Decision(body.decision),
        channel="api",
        comment=body.comment,
        form=body.form,
    )


async def _run_or_404(ctx: OrgContext, session: DbSession, run_id: uuid.UUID) -> Run:
    run = await get_run(ctx, session, run_id)
    if run is None:
        raise not_found("run")
    return run


def run_out(
    run: Run, *, status: str, stage: str | None, view: RunView | None, result: RunOutcome | None
) -> RunOut:
    steps = [
        StepOut(
            step_id=s.step_id,
            title=s.title,
            state=s.state,
            approvers=s.approvers,
            opened_at=s.opened_at,
            deadline=s.deadline,
            decided_by=s.decided_by,
            decided_at=s.decided_at,
            comment=s.decision_comment,
        )
        for s in (view.steps if view else [])
        if s.state == "pending"
    ]
    return RunOut(
        id=run.id,
        workflow=run.workflow_name,
        status=status,
        stage=stage,
        requested_by=run.requested_by,
        created_at=run.created_at,
        pending_steps=steps,
        result={"status": result.status, **result.detail} if result else None,
    )
