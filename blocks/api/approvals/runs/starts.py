"""Starting a run, exactly once: `POST /v1/runs`, idempotent with `Idempotency-Key`.

The run's row is committed as `starting` first, so no workflow ever exists that nothing records;
then the workflow `run-<run id>` is started, with no database connection held while Temporal
answers, and the row is settled `started` by a compare-and-set. The workflow writes its own
`run.started` event (an id derived from the run), so the log never records a start that did not
happen. A crash between the two leaves a `starting` row that a retry with the same key resumes
while it is young, or that the worker's reconciler settles (confirms the workflow, or records
`run.start_abandoned`). A start Temporal took only after the reconciler gave the run up (the API
stalled past the bound) is revoked: the workflow is terminated and `run.start_revoked` recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Request, Response
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client
from temporalio.common import (
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from blocks.api.approvals.approver_checks import check_named_approvers
from blocks.api.approvals.catalogue import startable_workflow
from blocks.api.approvals.runs.detail import current_run_out, run_out
from blocks.api.deps import CanStartRuns, DbSession, TemporalClient
from blocks.api.errors import Problem, service_unavailable
from blocks.api.schemas import RunOut, StartRunIn
from blocks.api.security_audit import request_audit_fields, request_origin
from blocks.core.approvals import search_attributes as sa
from blocks.core.audit.chain import canonical_json
from blocks.core.audit.ids import workflow_event_id
from blocks.core.audit.records import AuditRecord, Outcome
from blocks.core.context import OrgContext
from blocks.models.approvals.catalogue import PublishedWorkflow
from blocks.models.approvals.runs import (
    Run,
    StartState,
    create_run,
    may_resume_start,
    run_by_idempotency_key,
    settle_start,
)
from blocks.models.audit.events import append_events
from blocks.models.keys.org_keys import process_org_keys
from blocks.workflows.types import RunInput

router = APIRouter(prefix="/v1/runs", tags=["approvals"])
_log = logging.getLogger("blocks.api.runs")

# Temporal's answers that mean "this start will never be accepted as asked"; any other error may
# be passing (the engine unreachable, a timeout after the start was taken), so the row stays
# `starting` for a retry or the reconciler to settle.
_DEFINITE_REFUSALS = frozenset(
    {
        RPCStatusCode.INVALID_ARGUMENT,
        RPCStatusCode.FAILED_PRECONDITION,
        RPCStatusCode.PERMISSION_DENIED,
        RPCStatusCode.UNAUTHENTICATED,
        RPCStatusCode.NOT_FOUND,
    }
)
# How long the API waits for Temporal to take a start. Far below the reconciler's bound, so a
# start still in flight is never judged abandoned.
_START_RPC_TIMEOUT = timedelta(seconds=10)

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description=(
            "Any unique string (a UUID is best). A retry with the same key and body returns the "
            "same run (200, `Idempotent-Replayed: true`) instead of starting another; the same "
            "key with another body is refused (422)."
        ),
    ),
]


@router.post(
    "",
    status_code=201,
    response_model=RunOut,
    responses={200: {"model": RunOut, "description": "A retry: the run this key started"}},
    summary="Start a run of a workflow",
)
async def start_run(
    body: StartRunIn,
    request: Request,
    response: Response,
    ctx: CanStartRuns,
    session: DbSession,
    client: TemporalClient,
    idempotency_key: IdempotencyKey = None,
) -> RunOut:
    settings = request.app.state.settings
    published, task_queue = await startable_workflow(
        ctx, session, body.workflow, body.input, prefer_task_queue=settings.task_queue
    )
    await check_named_approvers(ctx, session, published.input_schema, body.input)
    # The checks' reads are done: their pooled connection goes back before the wait for a slot.
    # Held while waiting, a burst's queued starts would take every connection, and those with a
    # slot could not claim or settle their rows.
    await session.commit()
    async with _start_slot(request.app):
        return await _claim_and_start(
            request, response, ctx, session, client, published, task_queue, body, idempotency_key
        )


@asynccontextmanager
async def _start_slot(app: FastAPI) -> AsyncIterator[None]:
    """One of the process's `run_start_concurrency` slots, held from the row's claim to its
    settling; a 503 after `run_start_queue_seconds` without one.

    A burst of starts otherwise claims rows faster than Temporal takes them, and the settling
    of those it took waits for pooled connections behind yet more claims: a row could stay
    `starting` past the reconciler's bound and its run be abandoned although it started.
    """
    settings = app.state.settings
    gate: asyncio.Semaphore | None = getattr(app.state, "run_start_gate", None)
    if gate is None:  # the first start of this process (one event loop: no race)
        gate = app.state.run_start_gate = asyncio.Semaphore(settings.run_start_concurrency)
    try:
        async with asyncio.timeout(settings.run_start_queue_seconds):
            await gate.acquire()
    except TimeoutError:
        raise service_unavailable(
            "too many runs are being started at once; retry (with the same Idempotency-Key)",
            code="starts_busy",
        ) from None
    try:
        yield
    finally:
        gate.release()


async def _claim_and_start(
    request: Request,
    response: Response,
    ctx: OrgContext,
    session: AsyncSession,
    client: Client,
    published: PublishedWorkflow,
    task_queue: str,
    body: StartRunIn,
    idempotency_key: str | None,
) -> RunOut:
    settings = request.app.state.settings
    request_hash = start_fingerprint(published.name, body.input)
    run, replayed = await _claim_run(ctx, session, published, idempotency_key, request_hash)
    if replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    # A retry resumes a start only well inside the reconciler's bound, so the two rarely meet.
    resume = run.start_state == StartState.STARTING and (
        not replayed
        or await may_resume_start(
            ctx, session, run.id, within_seconds=settings.run_start_bound_seconds / 2
        )
    )
    # The row exists before any workflow does: a crash from here on leaves a `starting` row.
    await session.commit()
    if not resume:
        return await current_run_out(run, client)
    run_input = RunInput(
        org_id=str(ctx.org_id),
        run_id=str(run.id),
        workflow_name=published.name,
        requested_by=str(ctx.user_id) if ctx.user_id else None,
        params=body.input,
        origin=request_origin(request, ctx),
    )
    started = await _start_workflow(request, ctx, session, client, run, task_queue, run_input)
    if started.start_state != StartState.STARTED:
        return await current_run_out(started, client)
    return run_out(started, status="running", stage="running", view=None, result=None)


def start_fingerprint(workflow_name: str, params: dict[str, Any]) -> str:
    """What makes two starts the same request: the workflow and its input, canonically encoded."""
    return hashlib.sha256(canonical_json({"workflow": workflow_name, "input": params})).hexdigest()


async def _claim_run(
    ctx: OrgContext,
    session: AsyncSession,
    published: PublishedWorkflow,
    idempotency_key: str | None,
    request_hash: str,
) -> tuple[Run, bool]:
    """(the run, whether an earlier request with this key made it).

    The insert comes first (it does nothing when the key is taken): a first request, by far the
    most common, costs one statement, a retry two."""
    run = await create_run(
        ctx,
        session,
        workflow_name=published.name,
        workflow_version=published.version,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )
    if run is not None:
        return run, False
    # An earlier or concurrent request with the same key committed its row first.
    assert idempotency_key is not None
    earlier = await run_by_idempotency_key(ctx, session, idempotency_key)
    if earlier is None:  # pragma: no cover - the unique index said it exists
        raise Problem(409, "Conflict", "retry the request", code="idempotency_conflict")
    return _same_request(earlier, request_hash), True


def _same_request(run: Run, request_hash: str) -> Run:
    if run.request_hash != request_hash:
        raise Problem(
            422,
            "Invalid Request",
            "Idempotency-Key: this key was used for a request with another body",
            code="idempotency_key_reused",
            errors=[{"field": "Idempotency-Key", "reason": "already used for a different request"}],
        )
    return run


async def _start_workflow(
    request: Request,
    ctx: OrgContext,
    session: AsyncSession,
    client: Client,
    run: Run,
    task_queue: str,
    run_input: RunInput,
) -> Run:
    """Start the run's workflow, then settle its row; returns the row as it now stands."""
    # The codec seals the input under the organization's key; it need not look the run up.
    codec_keys = process_org_keys()
    if codec_keys is not None:
        codec_keys.remember_run(run.workflow_id, ctx.org_id)
    try:
        await client.start_workflow(
            run_input.workflow_name,
            run_input,
            id=run.workflow_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            # A closed workflow of this run is never started again by a late retry.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=sa.at_start(
                str(ctx.org_id), run_input.workflow_name, run_input.requested_by
            ),
            rpc_timeout=_START_RPC_TIMEOUT,
        )
    except WorkflowAlreadyStartedError:
        pass  # an earlier attempt or a concurrent retry started it: this is that run
    except RPCError as err:
        if err.status not in _DEFINITE_REFUSALS:
            raise service_unavailable(
                "the workflow engine did not answer; retry with the same Idempotency-Key",
                code="engine_unavailable",
            ) from err
        await _record_refusal(request, ctx, session, run, run_input, err)
        raise Problem(
            503,
            "Service Unavailable",
            "the workflow engine did not accept the run",
            code="engine_refused",
        ) from err
    settled, _ = await settle_start(ctx, session, run.id, StartState.STARTED)
    settled = settled or run
    if settled.start_state == StartState.ABANDONED:
        await _revoke(request, ctx, session, client, settled)
    await session.commit()
    return settled


async def _record_refusal(
    request: Request,
    ctx: OrgContext,
    session: AsyncSession,
    run: Run,
    run_input: RunInput,
    err: RPCError,
) -> None:
    """Close the run as `start_failed` and audit it, unless something settled it first."""
    _, moved = await settle_start(ctx, session, run.id, StartState.START_FAILED)
    if moved:
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
                    data={"workflow": run_input.workflow_name},
                    **request_audit_fields(request, ctx),
                )
            ],
        )
    await session.commit()


async def _revoke(
    request: Request, ctx: OrgContext, session: AsyncSession, client: Client, run: Run
) -> None:
    """The reconciler gave this run up before Temporal took its start: end that workflow, so no
    run goes on that the organization's record says never started."""
    try:
        await client.get_workflow_handle(run.workflow_id).terminate(
            reason="the run was abandoned before its start reached the workflow engine"
        )
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            _log.warning("could not revoke the late start of run %s", run.id)
            raise service_unavailable(
                "the workflow engine did not answer", code="engine_unavailable"
            ) from err
    await append_events(
        ctx,
        session,
        [
            AuditRecord(
                action="run.start_revoked",
                target_type="run",
                target_id=str(run.id),
                run_id=str(run.id),
                outcome=Outcome.FAILURE,
                reason="the start reached the workflow engine after the run was abandoned",
                data={"workflow": run.workflow_name},
                event_id=str(workflow_event_id(run.workflow_id, "start:revoked")),
                **request_audit_fields(request, ctx),
            )
        ],
    )
