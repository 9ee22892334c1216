"""`GET /v1/runs/{id}/input`: the parameters a run was started with, for whoever may read the run.

Blocks keeps no copy of a run's input: it is the first event of the run's Temporal history,
sealed under the organization's key by the payload codec. This route reads that one event and
decodes it with the API's own data converter. Once Temporal no longer keeps the run (after its
namespace's retention), the answer says so (`kept: false`) rather than inventing one.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from blocks.api.deps import CanReadRuns, DbSession, TemporalClient
from blocks.api.errors import not_found
from blocks.api.reference import examples as ex
from blocks.api.reference.examples import example
from blocks.models.approvals.runs import Run, StartState, get_run
from blocks.workflows.types import RunInput

router = APIRouter(prefix="/v1/runs", tags=["approvals"])


class RunInputOut(BaseModel):
    model_config = example(
        run_id=ex.RUN_ID, workflow="expense_approval", kept=True, input=ex.EXPENSE
    )

    run_id: uuid.UUID
    workflow: str = Field(description="The workflow the run started")
    kept: bool = Field(
        description="False once Temporal no longer keeps the run's history (its retention "
        "passed) or the run never started: `input` is then null"
    )
    input: dict[str, Any] | None = Field(description="The parameters the run was started with")


@router.get(
    "/{run_id}/input", response_model=RunInputOut, summary="Read the input a run was started with"
)
async def read_run_input(
    run_id: uuid.UUID, ctx: CanReadRuns, session: DbSession, client: TemporalClient
) -> RunInputOut:
    run = await get_run(ctx, session, run_id)
    if run is None:
        raise not_found("run")
    params = await started_with(client, run)
    return RunInputOut(
        run_id=run.id, workflow=run.workflow_name, kept=params is not None, input=params
    )


async def started_with(client: Client, run: Run) -> dict[str, Any] | None:
    """The run's params from its history's first event, or None where Temporal has none."""
    if run.start_state not in (StartState.STARTED, StartState.STARTING):
        return None
    handle = client.get_workflow_handle(run.workflow_id)
    try:
        async for event in handle.fetch_history_events(page_size=1):
            if not event.HasField("workflow_execution_started_event_attributes"):
                return None
            payloads = event.workflow_execution_started_event_attributes.input.payloads
            [start] = await client.data_converter.decode(payloads, [RunInput])
            return dict(start.params) if isinstance(start, RunInput) else None
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
    return None
