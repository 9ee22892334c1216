"""Routes for runs: start a registered workflow, read one, list the organization's, decide a step."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from temporalio.api.enums.v1 import WorkflowExecutionStatus
from temporalio.client import (
    WorkflowExecutionStatus as Status,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.service import RPCError

from blocks.api.approvals.decisions import submit_decision
from blocks.api.deps import (
    CanDecide,
    CanReadRuns,
    CanStartRuns,
    DbSession,
    TemporalClient,
)
from blocks.api.errors import Problem, not_found, validation_problem
from blocks.api.schemas import (
    DecisionIn,
    DecisionOut,
    RunListOut,
    RunOut,
    RunSummaryOut,
    StartRunIn,
    StepOut,
)
from blocks.api.security_audit import request_audit_fields
from blocks.core.approvals import search_attributes as sa
from blocks.core.approvals.eligibility import Decision
from blocks.core.audit.records import AuditRecord, Outcome
from blocks.core.context import OrgContext
from blocks.infra.temporal.client import describe_execution
from blocks.models.approvals.runs import Run, StartState, create_run, get_run, set_start_state
from blocks.models.audit.events import append_events
from blocks.workflows.registry import REGISTRY
from blocks.workflows.sdk import STATUS_QUERY
from blocks.workflows.types import RunInput, RunOutcome, RunView

router = APIRouter(prefix="/v1/runs", tags=["runs"])

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


@router.post("", status_code=201, response_model=RunOut)
async def start_run(
    body: StartRunIn,
    request: Request,
    ctx: CanStartRuns,
    session: DbSession,
    client: TemporalClient,
) -> RunOut:
    entry = REGISTRY.get(body.workflow)
    if entry is None:
        raise Problem(
            422,
            "Invalid Request",
            f"workflow: no registered workflow is named {body.workflow!r}",
            code="unknown_workflow",
            errors=[{"field": "workflow", "reason": f"unknown workflow {body.workflow!r}"}],
        )
    try:
        params = entry.params_model.model_validate(body.input)
    except ValidationError as err:
        raise validation_problem(
            [{**e, "loc": ("body", "input", *e["loc"])} for e in err.errors()]
        ) from None

    run = await create_run(ctx, session, workflow_name=entry.name)
    audit = request_audit_fields(request, ctx)
    await append_events(
        ctx,
        session,
        [
            AuditRecord(
                action="run.started",
                target_type="run",
                target_id=str(run.id),
                run_id=str(run.id),
                data={"workflow": entry.name},
                **audit,
            )
        ],
    )
    # Commit before starting, so a rollback can never leave a workflow running that nothing records.
    await session.commit()

    try:
        await client.start_workflow(
            entry.name,
            RunInput(
                org_id=str(ctx.org_id),
                run_id=str(run.id),
                workflow_name=entry.name,
                requested_by=str(ctx.user_id) if ctx.user_id else None,
                params=params.model_dump(mode="json"),
            ),
            id=run.workflow_id,
            task_queue=request.app.state.settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(sa.ORG_ID, str(ctx.org_id)),
                    SearchAttributePair(sa.WORKFLOW_NAME, entry.name),
                    SearchAttributePair(sa.STATUS, "running"),
                ]
            ),
        )
    except RPCError as err:
        await set_start_state(ctx, session, run, StartState.START_FAILED)
        await append_events(
            ctx,
            session,
            [
                AuditRecord(
                    action="run.start_failed",
                    target_type="run",
                    target_id=str(run.id),
                    run_id=str(run.id),
                    outcome=Outcome.FAILURE,
                    reason=err.message[:500],
                    **audit,
                )
            ],
        )
        await session.commit()
        raise Problem(
            503,
            "Service Unavailable",
            "the workflow engine did not accept the run; retry later",
            code="engine_unavailable",
        ) from err
    await set_start_state(ctx, session, run, StartState.STARTED)
    return _run_out(run, status="running", stage="running", view=None, result=None)


@router.get("", response_model=RunListOut)
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


@router.get("/{run_id}", response_model=RunOut)
async def read_run(
    run_id: uuid.UUID, ctx: CanReadRuns, session: DbSession, client: TemporalClient
) -> RunOut:
    run = await _run_or_404(ctx, session, run_id)
    if run.start_state != StartState.STARTED:
        return _run_out(run, status=run.start_state, stage=None, view=None, result=None)
    handle = client.get_workflow_handle(run.workflow_id, result_type=RunOutcome)
    state = await describe_execution(client, run.workflow_id)
    view: RunView | None = None
    result: RunOutcome | None = None
    if state.status == Status.RUNNING:
        view = await handle.query(STATUS_QUERY, result_type=RunView)
    elif state.status == Status.COMPLETED:
        result = await handle.result()
    return _run_out(
        run, status=_status_name(state.status), stage=state.stage, view=view, result=result
    )


@router.post("/{run_id}/steps/{step_id}/decisions", response_model=DecisionOut)
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


def _run_out(
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
