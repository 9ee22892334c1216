"""`GET /v1/runs/{id}/input`: the parameters a run started with, read back from its Temporal
history (sealed there under the organization's key), for those who may read the run only."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import EXPENSE, Stack, audit_actions, make_org, run_sql, wait_for_status


async def test_a_run_shows_the_input_it_started_with_to_those_who_may_read_it(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    other = await make_org(engine)
    async with stack.http() as http:
        started = await http.post(
            "/v1/runs",
            json={"workflow": "expense_approval", "input": EXPENSE},
            headers=org["operator"].headers,
        )
        assert started.status_code == 201, started.text
        run_id = started.json()["id"]
        await wait_for_status(http, run_id, org["operator"].headers, status="running")

        answer = await http.get(f"/v1/runs/{run_id}/input", headers=org["auditor"].headers)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {
            "run_id": run_id,
            "workflow": "expense_approval",
            "kept": True,
            "input": EXPENSE,
        }
        # Another organization's run does not exist for this caller.
        elsewhere = await http.get(f"/v1/runs/{run_id}/input", headers=other["owner"].headers)
        assert elsewhere.status_code == 404
        # A member without run:read is refused, and the refusal is audited.
        refused = await http.get(f"/v1/runs/{run_id}/input", headers=org["nobody"].headers)
        assert refused.status_code == 403
        assert ("access.denied", "denied", "missing permission run:read") in await audit_actions(
            engine, org.id
        )


async def test_a_run_temporal_does_not_know_says_its_input_is_not_kept(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        started = await http.post(
            "/v1/runs",
            json={"workflow": "expense_approval", "input": EXPENSE},
            headers=org["operator"].headers,
        )
        run_id = started.json()["id"]
        # As if Temporal's retention had passed: the row names a workflow Temporal never had.
        await run_sql(
            engine,
            "UPDATE runs SET workflow_id = 'run-gone-' || id::text WHERE id = CAST(:run AS uuid)",
            org=org.id,
            run=run_id,
        )
        answer = await http.get(f"/v1/runs/{run_id}/input", headers=org["operator"].headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["kept"] is False
    assert answer.json()["input"] is None
