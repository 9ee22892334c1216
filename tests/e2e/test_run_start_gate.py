"""A burst of starts waits for one of the API process's start slots, and past a short queue is
answered 503 + Retry-After with nothing recorded, instead of leaving rows `starting` that the
reconciler would abandon although Temporal took them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.api.approvals.runs.starts import start_fingerprint
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.infra.db import bind_org, session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.models.approvals.runs import create_run
from tests.support import EXPENSE, Stack, make_org, running_stack

START = {"workflow": "expense_approval", "input": EXPENSE}


@pytest.fixture(scope="module")
async def one_slot(
    engine: AsyncEngine, temporal_env: WorkflowEnvironment, postgres: PostgresCredentials
) -> AsyncIterator[Stack]:
    async with running_stack(
        engine=engine,
        temporal=temporal_env.client,
        database_url=postgres.url(),
        task_queue=f"blocks-start-gate-{uuid.uuid4().hex[:8]}",
        with_worker=False,
        extra_settings={"run_start_concurrency": 1, "run_start_queue_seconds": 0.3},
    ) as running:
        yield running


async def test_a_start_past_the_queue_is_refused_with_nothing_recorded(one_slot: Stack) -> None:
    org = await make_org(one_slot.engine)
    operator = org["operator"]
    ctx = OrgContext(
        org_id=OrgId(org.id), user_id=operator.user_id, roles=(), auth=AuthMethod.API_KEY
    )
    async with one_slot.http() as http:
        # Another request's uncommitted row holds key "held": a start with that key waits on it,
        # inside the process's only slot.
        async with session_factory(one_slot.engine)() as holder, holder.begin():
            held = await create_run(
                ctx,
                holder,
                workflow_name="expense_approval",
                idempotency_key="held",
                request_hash=start_fingerprint("expense_approval", EXPENSE),
            )
            assert held is not None
            waiting = asyncio.create_task(
                http.post(
                    "/v1/runs", json=START, headers={**operator.headers, "Idempotency-Key": "held"}
                )
            )
            await asyncio.sleep(0.3)  # it has taken the slot and waits on the row lock
            refused = await http.post(
                "/v1/runs", json=START, headers={**operator.headers, "Idempotency-Key": "other"}
            )
            assert refused.status_code == 503, refused.text
            assert refused.headers["Retry-After"]
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert refused.json()["code"] == "starts_busy"
            await holder.rollback()  # the holder gives the key up: the waiting start goes on
        answered = await waiting
        assert answered.status_code == 201, answered.text
        # The refused start left no row; a retry with its key starts the run.
        async with session_factory(one_slot.engine)() as session, session.begin():
            await bind_org(session, org.id)
            keys = (
                await session.exec(  # type: ignore[call-overload]
                    text("SELECT idempotency_key FROM runs WHERE org_id = :org").bindparams(
                        org=org.id
                    )
                )
            ).all()
        assert [k for (k,) in keys] == ["held"]
        again = await http.post(
            "/v1/runs", json=START, headers={**operator.headers, "Idempotency-Key": "other"}
        )
        assert again.status_code == 201, again.text
