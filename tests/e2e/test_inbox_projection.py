"""`GET /v1/inbox` reads the pending-steps projection of the audit log, not the runs themselves: it
answers while no worker polls, and follows each vote, escalation and closing of a real run."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.infra.crypto.signing import parse_signing_key
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.workers.main import build_worker
from tests.support import (
    EXAMPLE_WORKFLOWS,
    EXPENSE,
    SIGNING_KEY,
    Org,
    Stack,
    make_org,
    running_stack,
    wait_for_status,
)


async def _items(http: httpx.AsyncClient, org: Org, who: str) -> dict[tuple[str, str], Any]:
    response = await http.get("/v1/inbox", headers=org[who].headers)
    assert response.status_code == 200, response.text
    return {(item["run_id"], item["step_id"]): item for item in response.json()["items"]}


async def _eventually(check: Callable[[], Awaitable[bool]]) -> None:
    # A workflow's events land at its next flush, moments after the API has answered.
    for _ in range(200):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the inbox never showed the expected items")


async def _start(http: httpx.AsyncClient, org: Org, workflow: str, params: dict[str, Any]) -> str:
    response = await http.post(
        "/v1/runs", json={"workflow": workflow, "input": params}, headers=org["operator"].headers
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_the_inbox_answers_while_no_worker_polls(
    engine: AsyncEngine, temporal_env: WorkflowEnvironment, postgres: PostgresCredentials
) -> None:
    org = await make_org(engine)
    task_queue = f"blocks-inbox-{uuid.uuid4().hex[:8]}"
    async with running_stack(
        engine=engine,
        temporal=temporal_env.client,
        database_url=postgres.url(),
        task_queue=task_queue,
        with_worker=False,
    ) as stack:
        worker = build_worker(
            temporal_env.client,
            engine,
            task_queue=task_queue,
            signer=parse_signing_key(SIGNING_KEY),
            workflows=EXAMPLE_WORKFLOWS,
        )
        worker_task = asyncio.create_task(worker.run())
        async with stack.http() as http:
            try:
                run_id = await _start(http, org, "expense_approval", EXPENSE)

                async def listed() -> bool:
                    return (run_id, "approve") in await _items(http, org, "approver")

                await _eventually(listed)
            finally:
                await worker.shutdown()
                await worker_task
            # Nobody serves the run now: a query to it could not be answered. The inbox still
            # lists its step, as it was when the last event was written.
            item = (await _items(http, org, "approver"))[(run_id, "approve")]
            assert item["workflow"] == "expense_approval"
            assert item["title"] == "Expense of 120.50 EUR: Team lunch"
            assert item["approvers"] == ["role:approver"]
            assert item["votes_so_far"] == 0
            assert (run_id, "approve") in await _items(http, org, "approver2")
            assert await _items(http, org, "owner") == {}  # not an approver of it


async def test_a_vote_the_closing_and_the_next_step_show_at_once(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    finance = [str(org["approver"].user_id), str(org["approver2"].user_id)]
    async with stack.http() as http:
        run_id = await _start(
            http,
            org,
            "purchase_approval",
            {
                "amount": "25000.00",
                "description": "Annual licence",
                "finance": finance,
                "legal": [str(org["admin"].user_id)],
                "director": str(org["owner"].user_id),
            },
        )

        async def listed() -> bool:
            return (run_id, "review") in await _items(http, org, "approver2")

        await _eventually(listed)
        voted = await http.post(
            f"/v1/runs/{run_id}/steps/review/decisions",
            json={"decision": "approve"},
            headers=org["approver"].headers,
        )
        assert voted.status_code == 200, voted.text
        # The vote is in the log when the API answers (the Update completes after the flush).
        assert (run_id, "review") not in await _items(http, org, "approver")
        assert (await _items(http, org, "approver2"))[(run_id, "review")]["votes_so_far"] == 1
        assert (await _items(http, org, "admin"))[(run_id, "review")]["votes_so_far"] == 1

        for who in ("admin", "approver2"):
            decided = await http.post(
                f"/v1/runs/{run_id}/steps/review/decisions",
                json={"decision": "approve"},
                headers=org[who].headers,
            )
            assert decided.status_code == 200, decided.text
        assert decided.json()["state"] == "approved"
        assert (run_id, "review") not in await _items(http, org, "admin")

        async def director_step() -> bool:
            return (run_id, "director") in await _items(http, org, "owner")

        await _eventually(director_step)
        item = (await _items(http, org, "owner"))[(run_id, "director")]
        assert item["approvers"] == [f"user:{org['owner'].user_id}"]
        assert item["workflow"] == "purchase_approval"

        cancelled = await http.post(
            f"/v1/runs/{run_id}/cancel", json={"reason": "test"}, headers=org["operator"].headers
        )
        assert cancelled.status_code == 202, cancelled.text
        await wait_for_status(http, run_id, org["operator"].headers, status="canceled")
        assert (run_id, "director") not in await _items(http, org, "owner")


async def test_an_escalation_reaches_the_new_approver_and_the_breach_closes_it(
    skipping_stack: Stack, time_skipping_env: WorkflowEnvironment, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with skipping_stack.http() as http:
        run_id = await _start(
            http,
            org,
            "purchase_approval",
            {
                "amount": "900.00",
                "description": "Laptops",
                "finance": [str(org["approver"].user_id), str(org["approver2"].user_id)],
                "legal": [str(org["admin"].user_id)],
                "director": str(org["owner"].user_id),
            },
        )

        async def listed() -> bool:
            return (run_id, "review") in await _items(http, org, "approver")

        await _eventually(listed)
        before = (await _items(http, org, "approver"))[(run_id, "review")]
        assert (run_id, "review") not in await _items(http, org, "owner")

        await time_skipping_env.sleep(timedelta(hours=21))  # escalated to the director at 20 h

        async def escalated() -> bool:
            return (run_id, "review") in await _items(http, org, "owner")

        await _eventually(escalated)
        item = (await _items(http, org, "owner"))[(run_id, "review")]
        assert set(item["approvers"]) == {*before["approvers"], f"user:{org['owner'].user_id}"}
        assert item["deadline"] == before["deadline"]

        await time_skipping_env.sleep(timedelta(hours=4))  # 25 h: rejected at the 24 h breach
        await wait_for_status(http, run_id, org["operator"].headers, status="completed")
        assert (run_id, "review") not in await _items(http, org, "owner")
        assert (run_id, "review") not in await _items(http, org, "approver")
