"""Cancelling a run wherever the cancel lands: in the author's own activity or timer, before any
step opens, the run still records its end (`run.completed`, status cancelled) exactly once."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Replayer

from blocks.infra.crypto.signing import parse_signing_key
from blocks.infra.db import session_factory
from blocks.models.approvals.catalogue import publish
from blocks.models.approvals.runs import workflow_id_for
from blocks.workers.main import INTERCEPTORS, SANDBOX, build_worker, catalogue_entries
from tests.e2e.cancel_workflows import Gate, GatedPurchase
from tests.e2e.test_run_cancel import _cancel, _custody, _run_events
from tests.support import (
    SIGNING_KEY,
    Stack,
    make_org,
    wait_for_audit,
    wait_for_status,
)

# The steps that wait once a run of each workflow has started.
REASON = "Duplicate of another request; the supplier withdrew"


@asynccontextmanager
async def _gated_worker(stack: Stack, gate: Gate) -> AsyncIterator[None]:
    """A worker serving the gated test workflow and its activity on a queue of its own."""
    task_queue = f"gated-{uuid.uuid4().hex[:8]}"
    async with session_factory(stack.engine)() as session, session.begin():
        entries = catalogue_entries([GatedPurchase], task_queue=task_queue)
        await publish(session, entries, worker=f"tests@{task_queue}")
    worker = build_worker(
        stack.temporal,
        stack.engine,
        task_queue=task_queue,
        signer=parse_signing_key(SIGNING_KEY),
        workflows=[GatedPurchase],
        author_activities=[gate.wait],
    )
    running = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        gate.opened.set()  # an activity still waiting returns, so the worker can stop
        await worker.shutdown()
        await running


async def _timer_started(client: Client, workflow_id: str) -> None:
    handle = client.get_workflow_handle(workflow_id)
    for _ in range(400):
        events = (await handle.fetch_history()).events
        if any(e.event_type == EventType.EVENT_TYPE_TIMER_STARTED for e in events):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{workflow_id} never started its timer")


@pytest.mark.parametrize("hold", ["activity", "timer"])
async def test_a_cancel_while_the_authors_own_work_runs_records_the_runs_end(
    stack: Stack, engine: AsyncEngine, hold: str
) -> None:
    """No step waits yet: the run is in the author's activity (the cancel reaches it through its
    heartbeat) or timer. The run still records its end, once, and ends canceled; its history
    replays only with the worker's interceptors."""
    org = await make_org(engine)
    gate = Gate()
    async with _gated_worker(stack, gate), stack.http() as http:
        started = await http.post(
            "/v1/runs",
            json={"workflow": "tests_gated_purchase", "input": {"item": "Desk", "hold": hold}},
            headers=org["operator"].headers,
        )
        assert started.status_code == 201, started.text
        run_id = started.json()["id"]
        workflow_id = workflow_id_for(uuid.UUID(run_id))
        if hold == "activity":
            await asyncio.wait_for(gate.entered.wait(), timeout=20)
        else:
            await _timer_started(stack.temporal, workflow_id)

        assert (await _cancel(http, org, run_id)).status_code == 202
        body = await wait_for_status(http, run_id, org["operator"].headers, status="canceled")
        assert (body["steps"], body["pending_steps"]) == ([], [])
        if hold == "activity":
            await asyncio.wait_for(gate.cancelled.wait(), timeout=20)
        await wait_for_audit(engine, org.id, "run.completed", run_id=run_id)
        events = await _run_events(http, org, run_id)
        custody = await _custody(http, org, run_id)
        handle = stack.temporal.get_workflow_handle(workflow_id)
        assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
        history = await handle.fetch_history()

    assert Counter(e["action"] for e in events) == {
        "run.started": 1,
        "run.cancel_requested": 1,
        "run.completed": 1,
    }
    actions = [e["action"] for e in events]
    assert actions.index("run.cancel_requested") < actions.index("run.completed")
    request, completed = events[actions.index("run.cancel_requested")], events[-1]
    assert completed["action"] == "run.completed"
    assert completed["data"] == {"status": "cancelled", "cancel_request": request["id"]}
    assert custody["intact"] is True

    def replayer(**interceptors: Any) -> Replayer:
        return Replayer(
            workflows=[GatedPurchase],
            workflow_runner=SANDBOX,
            data_converter=stack.temporal.data_converter,
            **interceptors,
        )

    # What the cancellation wrote is in the history: a replay must run the worker's interceptors.
    replayed = await replayer(interceptors=INTERCEPTORS).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert replayed.replay_failure is None
    bare = await replayer().replay_workflow(history, raise_on_replay_failure=False)
    assert bare.replay_failure is not None
