"""Starting a run is exactly-once and self-healing: Idempotency-Key, the truth on reads, and the
reconciler that settles a start a crash interrupted (confirmed, or abandoned and audited)."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from starlette.requests import Request
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from blocks.api.approvals.runs.starts import _start_workflow, start_fingerprint
from blocks.core.approvals import search_attributes as sa
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.db import bind_org, session_factory
from blocks.infra.temporal.client import find_execution
from blocks.models.approvals.runs import Run, create_run
from blocks.workers.run_start_reconciler import RunStartReconciler
from blocks.workflows.types import RunInput
from tests.support import EXPENSE, Org, Stack, audit_actions, make_org, wait_for_status

START = {"workflow": "expense_approval", "input": EXPENSE}


def _key_headers(org: Org, key: str) -> dict[str, str]:
    return {**org["operator"].headers, "Idempotency-Key": key}


async def _start_state(stack: Stack, org: Org, run_id: str) -> str:
    async with session_factory(stack.engine)() as session, session.begin():
        await bind_org(session, org.id)
        row = await session.exec(  # type: ignore[call-overload]
            text("SELECT start_state FROM runs WHERE id = CAST(:id AS uuid)").bindparams(id=run_id)
        )
        return str(row.one()[0])


async def _interrupted_row(stack: Stack, org: Org, *, idempotency_key: str | None = None) -> Run:
    """A run's row as an API process leaves it when it dies right after committing it."""
    ctx = OrgContext(
        org_id=OrgId(org.id), user_id=org["operator"].user_id, roles=(), auth=AuthMethod.API_KEY
    )
    async with session_factory(stack.engine)() as session, session.begin():
        run = await create_run(
            ctx,
            session,
            workflow_name="expense_approval",
            idempotency_key=idempotency_key,
            request_hash=start_fingerprint("expense_approval", EXPENSE),
        )
        assert run is not None
        return run


def _reconciler(stack: Stack, bound: float = 0.2) -> RunStartReconciler:
    return RunStartReconciler(
        session_factory(stack.engine), stack.temporal, bound_seconds=bound, interval_seconds=0.1
    )


async def test_a_retry_with_the_same_key_is_the_same_run(stack: Stack) -> None:
    org = await make_org(stack.engine)
    async with stack.http() as http:
        first = await http.post("/v1/runs", json=START, headers=_key_headers(org, "order-1"))
        again = await http.post("/v1/runs", json=START, headers=_key_headers(org, "order-1"))
        other = await http.post("/v1/runs", json=START, headers=_key_headers(org, "order-2"))
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["status"] == "running"
    assert other.status_code == 201
    assert other.json()["id"] != first.json()["id"]
    # Two runs, each recorded once (the workflow writes its own start).
    counts: list[tuple[str, str, str | None]] = []
    for _ in range(200):
        counts = [a for a in await audit_actions(stack.engine, org.id) if a[0] == "run.started"]
        if len(counts) >= 2:
            break
        await asyncio.sleep(0.05)
    assert len(counts) == 2


async def test_the_same_key_with_another_body_is_refused(stack: Stack) -> None:
    org = await make_org(stack.engine)
    async with stack.http() as http:
        first = await http.post("/v1/runs", json=START, headers=_key_headers(org, "k"))
        changed = {"workflow": "expense_approval", "input": {**EXPENSE, "amount": "9999.00"}}
        refused = await http.post("/v1/runs", json=changed, headers=_key_headers(org, "k"))
    assert first.status_code == 201
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["errors"] == [
        {"field": "Idempotency-Key", "reason": "already used for a different request"}
    ]


async def test_a_malformed_key_is_refused(stack: Stack) -> None:
    org = await make_org(stack.engine)
    async with stack.http() as http:
        spaced = await http.post("/v1/runs", json=START, headers=_key_headers(org, "a b"))
        long = await http.post("/v1/runs", json=START, headers=_key_headers(org, "x" * 256))
    assert spaced.status_code == 422
    assert long.status_code == 422


async def test_concurrent_retries_with_one_key_make_one_run(stack: Stack) -> None:
    org = await make_org(stack.engine)
    async with stack.http() as http:
        answers = await asyncio.gather(
            *(
                http.post("/v1/runs", json=START, headers=_key_headers(org, "burst"))
                for _ in range(8)
            )
        )
    assert all(a.status_code in (200, 201) for a in answers), [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum(a.status_code == 201 for a in answers) == 1


async def test_a_start_whose_answer_was_lost_reads_the_truth_and_is_confirmed(
    stack: Stack,
) -> None:
    org = await make_org(stack.engine)
    run = await _interrupted_row(stack, org)
    # The API died after Temporal took the start, before it could mark the row.
    await stack.temporal.start_workflow(
        "expense_approval",
        RunInput(
            org_id=str(org.id),
            run_id=str(run.id),
            workflow_name="expense_approval",
            requested_by=str(org["operator"].user_id),
            params=EXPENSE,
        ),
        id=run.workflow_id,
        task_queue=stack.settings.task_queue,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(sa.ORG_ID, str(org.id)),
                SearchAttributePair(sa.WORKFLOW_NAME, "expense_approval"),
            ]
        ),
    )
    async with stack.http() as http:
        # Before any reconciliation the API already reports the workflow's state, not "starting".
        body = await wait_for_status(
            http, str(run.id), org["operator"].headers, status="running", stage="awaiting_approval"
        )
        assert body["pending_steps"]
        await asyncio.sleep(0.3)
        await _reconciler(stack).reconcile_once()
        assert await _start_state(stack, org, str(run.id)) == "started"
        decided = await http.post(
            f"/v1/runs/{run.id}/steps/approve/decisions",
            json={"decision": "approve"},
            headers=org["approver"].headers,
        )
        assert decided.status_code == 200, decided.text
        await wait_for_status(http, str(run.id), org["operator"].headers, status="completed")
    actions = [a[0] for a in await audit_actions(stack.engine, org.id)]
    assert actions.count("run.started") == 1
    assert "run.start_abandoned" not in actions


async def test_a_start_that_never_reached_temporal_is_abandoned_and_audited(
    stack: Stack,
) -> None:
    org = await make_org(stack.engine)
    run = await _interrupted_row(stack, org, idempotency_key="lost-1")
    reconciler = _reconciler(stack, bound=30)
    # Within the bound nothing is judged: the start may still be under way.
    await reconciler.reconcile_once()
    assert await _start_state(stack, org, str(run.id)) == "starting"
    async with stack.http() as http:
        shown = await http.get(f"/v1/runs/{run.id}", headers=org["operator"].headers)
        assert shown.json()["status"] == "starting"
        await asyncio.sleep(0.3)
        await _reconciler(stack).reconcile_once()
        assert await _start_state(stack, org, str(run.id)) == "abandoned"
        shown = await http.get(f"/v1/runs/{run.id}", headers=org["operator"].headers)
        assert shown.json()["status"] == "abandoned"
        # The client's retry with its key learns the outcome; nothing starts afterwards.
        retry = await http.post("/v1/runs", json=START, headers=_key_headers(org, "lost-1"))
    assert retry.status_code == 200, retry.text
    assert retry.json()["status"] == "abandoned"
    assert await find_execution(stack.temporal, run.workflow_id) is None
    events = await audit_actions(stack.engine, org.id)
    assert [e for e in events if e[0] == "run.start_abandoned"] == [
        (
            "run.start_abandoned",
            "failure",
            "no workflow was started within 0.2 s (the request that asked for it was interrupted)",
        )
    ]
    assert "run.started" not in [e[0] for e in events]
    # A second pass finds nothing left to do for this run.
    await _reconciler(stack).reconcile_once()
    again = [e for e in await audit_actions(stack.engine, org.id) if e[0] == "run.start_abandoned"]
    assert len(again) == 1


async def test_a_start_under_way_is_never_abandoned_under_it(stack: Stack) -> None:
    """A row another reconciler holds (locked) is skipped, never judged twice at once."""
    org = await make_org(stack.engine)
    run = await _interrupted_row(stack, org)
    await asyncio.sleep(0.3)
    ctx = OrgContext(org_id=OrgId(org.id), user_id=None, roles=(), auth=AuthMethod.SYSTEM)
    async with session_factory(stack.engine)() as holder, holder.begin():
        await bind_org(holder, ctx.org_id)
        await holder.exec(  # type: ignore[call-overload]
            text("SELECT id FROM runs WHERE id = :id FOR UPDATE").bindparams(id=run.id)
        )
        await _reconciler(stack).reconcile_once()
        assert await _start_state(stack, org, str(run.id)) == "starting"


async def test_a_start_that_lands_after_the_run_was_abandoned_is_revoked(stack: Stack) -> None:
    """No connection is held while Temporal takes a start, so the reconciler may give a run up
    while an API that stalled past the bound is still starting it: the API's compare-and-set
    then finds the run abandoned, terminates the workflow it started and audits the revocation."""
    org = await make_org(stack.engine)
    run = await _interrupted_row(stack, org)
    await asyncio.sleep(0.3)
    await _reconciler(stack).reconcile_once()
    assert await _start_state(stack, org, str(run.id)) == "abandoned"
    ctx = OrgContext(
        org_id=OrgId(org.id), user_id=org["operator"].user_id, roles=(), auth=AuthMethod.API_KEY
    )
    request = Request({"type": "http", "headers": [], "client": ("127.0.0.1", 1)})
    run_input = RunInput(
        org_id=str(org.id),
        run_id=str(run.id),
        workflow_name="expense_approval",
        requested_by=str(ctx.user_id),
        params=EXPENSE,
    )
    async with session_factory(stack.engine)() as session:
        # The stalled request's start, arriving now.
        settled = await _start_workflow(
            request, ctx, session, stack.temporal, run, stack.settings.task_queue, run_input
        )
    assert settled.start_state == "abandoned"
    state = await find_execution(stack.temporal, run.workflow_id)
    assert state is not None
    assert state.status == WorkflowExecutionStatus.TERMINATED
    actions = [a[0] for a in await audit_actions(stack.engine, org.id)]
    assert actions.count("run.start_abandoned") == 1
    assert actions.count("run.start_revoked") == 1
