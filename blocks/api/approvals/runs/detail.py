"""Routes for runs: read one, decide a step (starting: `run_starts`, listing: `run_list`,
cancelling: `run_cancel`)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta

from fastapi import APIRouter, Request
from temporalio.api.enums.v1 import WorkflowExecutionStatus
from temporalio.client import Client, WorkflowHandle, WorkflowQueryFailedError
from temporalio.client import WorkflowExecutionStatus as Status
from temporalio.service import RPCError, RPCStatusCode

from blocks.api.approvals.decisions import submit_decision
from blocks.api.approvals.runs.history import run_events, step_histories
from blocks.api.deps import (
    CanDecide,
    CanReadRuns,
    DbSession,
    TemporalClient,
)
from blocks.api.errors import not_found, service_unavailable
from blocks.api.schemas import DecisionIn, DecisionOut, RunOut, StepDetailOut, StepOut
from blocks.core.approvals.eligibility import Decision
from blocks.core.approvals.policy import policy_memberships
from blocks.core.context import OrgContext
from blocks.core.roles import Permission
from blocks.infra.temporal.client import find_execution
from blocks.models.approvals.delegations import active_delegators
from blocks.models.approvals.groups import group_names_of
from blocks.models.approvals.runs import Run, StartState, get_run
from blocks.workflows.sdk import STATUS_QUERY
from blocks.workflows.types import RunOutcome, RunView, StatusViewer

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


def status_name(status: Status | WorkflowExecutionStatus | None) -> str:
    return _STATUS_NAMES.get(int(status), "unknown") if status is not None else "unknown"


@router.get("/{run_id}", response_model=RunOut, summary="Read a run and the history of its steps")
async def read_run(
    run_id: uuid.UUID, ctx: CanReadRuns, session: DbSession, client: TemporalClient
) -> RunOut:
    """The run as Temporal has it now, with every step it opened and each step's history
    (opened, reminders, escalations, votes with their channel, breaches, closing) read from the
    run's audit events, which outlive the run. `pending_steps` repeats the steps that wait,
    each with its `context` (what its approvers see to decide, e.g. a model's draft) if the
    caller may decide that step now; to anyone else it is null and `context_hidden` is true."""
    run = await _run_or_404(ctx, session, run_id)
    out = await current_run_out(run, client, viewer=await status_viewer(ctx, session))
    steps = step_histories(await run_events(ctx, session, run.id))
    return out.model_copy(update={"steps": _with_live_view(steps, out)})


def _with_live_view(steps: list[StepDetailOut], out: RunOut) -> list[StepDetailOut]:
    """A waiting step's approvers and deadline as the workflow holds them now: an escalating
    breach moves the deadline without an event saying where to (the next one does)."""
    live = {s.step_id: s for s in out.pending_steps}
    return [
        step.model_copy(
            update={
                "approvers": live[step.step_id].approvers,
                "deadline": live[step.step_id].deadline,
            }
        )
        if step.step_id in live and step.state == "pending"
        else step
        for step in steps
    ]


async def status_viewer(ctx: OrgContext, session: DbSession) -> StatusViewer | None:
    """The caller as the decision path resolves them (roles, member groups, who delegated to
    them now), for the workflow to judge whose steps' contexts they see; None if they may not
    decide steps at all."""
    if ctx.user_id is None or not ctx.can(Permission.STEP_DECIDE):
        return None
    groups = await group_names_of(ctx, session, ctx.user_id)
    return StatusViewer(
        user_id=str(ctx.user_id),
        roles=policy_memberships((role.value for role in ctx.roles), groups),
        delegators=tuple(await active_delegators(ctx, session)),
    )


async def current_run_out(
    run: Run, client: Client, *, viewer: StatusViewer | None = None
) -> RunOut:
    """The run as it stands, read from the truth: Temporal's, once a workflow exists.

    A row still `starting` may already have its workflow (the API that started it died before it
    could say so): then the workflow's state is the answer, until the reconciler settles the row.
    A step's context shows only where the workflow found that `viewer` may decide it.
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
            view = await _status(handle, viewer)
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
        run, status=status_name(state.status), stage=state.stage, view=view, result=result
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
        attachment_ids=body.attachment_ids,
    )


async def _run_or_404(ctx: OrgContext, session: DbSession, run_id: uuid.UUID) -> Run:
    run = await get_run(ctx, session, run_id)
    if run is None:
        raise not_found("run")
    return run


async def _status(
    handle: WorkflowHandle[object, RunOutcome], viewer: StatusViewer | None
) -> RunView:
    if viewer is not None:
        try:
            return await handle.query(
                STATUS_QUERY, viewer, result_type=RunView, rpc_timeout=_QUERY_TIMEOUT
            )
        except WorkflowQueryFailedError:
            # A worker older than step contexts takes no viewer (and keeps no contexts).
            pass
    view = await handle.query(STATUS_QUERY, result_type=RunView, rpc_timeout=_QUERY_TIMEOUT)
    # Asked for no one: the workflow shows every context, so none leaves here.
    return dataclasses.replace(
        view,
        steps=[
            dataclasses.replace(s, context=None, context_hidden=True)
            if s.context is not None
            else s
            for s in view.steps
        ],
    )


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
            context=s.context,
            context_hidden=s.context_hidden,
        )
        for s in (view.steps if view else [])
        if s.state == "pending"
    ]
    return RunOut(
        id=run.id,
        workflow=run.workflow_name,
        workflow_version=run.workflow_version,
        status=status,
        stage=stage,
        requested_by=run.requested_by,
        created_at=run.created_at,
        pending_steps=steps,
        result={"status": result.status, **result.detail} if result else None,
    )
