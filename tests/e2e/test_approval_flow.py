"""An expense run through HTTP against the real servers: start, pending, decide, completed, audited."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.infra.temporal.payload_codec import payload_org
from tests.support import EXPENSE, Stack, history_payloads, make_org, wait_for_status


async def test_start_pending_approve_completed_with_audit_in_order(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        started = await http.post(
            "/v1/runs",
            json={"workflow": "expense_approval", "input": EXPENSE},
            headers=org["operator"].headers,
        )
        assert started.status_code == 201, started.text
        run_id = started.json()["id"]

        pending = await wait_for_status(
            http, run_id, org["operator"].headers, status="running", stage="awaiting_approval"
        )
        [step] = pending["pending_steps"]
        assert step["step_id"] == "approve"
        assert step["approvers"] == ["role:approver"]
        assert step["title"] == "Expense of 120.50 EUR: Team lunch"

        decided = await http.post(
            f"/v1/runs/{run_id}/steps/approve/decisions",
            json={"decision": "approve", "comment": "fine"},
            headers=org["approver"].headers,
        )
        assert decided.status_code == 200, decided.text
        assert decided.json()["state"] == "approved"
        assert decided.json()["decided_by"] == str(org["approver"].user_id)

        done = await wait_for_status(http, run_id, org["operator"].headers, status="completed")
        assert done["result"] == {"status": "approved", "approved_by": str(org["approver"].user_id)}
        assert done["pending_steps"] == []

        audit = await http.get(f"/v1/runs/{run_id}/audit-events", headers=org["auditor"].headers)
        assert audit.status_code == 200, audit.text
        events = audit.json()["events"]
        assert [e["action"] for e in events] == [
            "run.started",
            "step.opened",
            "step.decided",
            "step.closed",
            "run.completed",
        ]
        assert events[0]["actor_id"] == str(org["operator"].user_id)
        assert events[2]["actor_id"] == str(org["approver"].user_id)
        assert events[2]["data"]["decision"] == "approve"
        assert events[2]["data"]["step_state"] == "approved"
        assert events[3]["data"]["state"] == "approved"
        assert events[2]["data"]["channel"] == "api"
        assert events[2]["data"]["comment"] == "fine"
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs)
        # Each event links to the one before it in the organization's chain.
        everything = (await http.get("/v1/audit-events", headers=org["auditor"].headers)).json()[
            "events"
        ]
        for previous, current in itertools.pairwise(everything):
            assert current["prev_hash"] == previous["hash"]
            assert current["seq"] == previous["seq"] + 1


async def test_rejection_completes_the_run_as_rejected(stack: Stack, engine: AsyncEngine) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        run_id = (
            await http.post(
                "/v1/runs",
                json={"workflow": "expense_approval", "input": EXPENSE},
                headers=org["operator"].headers,
            )
        ).json()["id"]
        await wait_for_status(
            http, run_id, org["operator"].headers, status="running", stage="awaiting_approval"
        )
        decided = await http.post(
            f"/v1/runs/{run_id}/steps/approve/decisions",
            json={"decision": "reject"},
            headers=org["approver"].headers,
        )
        assert decided.status_code == 200, decided.text
        done = await wait_for_status(http, run_id, org["operator"].headers, status="completed")
        assert done["result"] == {"status": "rejected", "rejected_by": str(org["approver"].user_id)}


async def test_list_runs_shows_only_this_organizations_runs(
    stack: Stack, engine: AsyncEngine
) -> None:
    org_a, org_b = await make_org(engine), await make_org(engine)
    async with stack.http() as http:
        run_a = (
            await http.post(
                "/v1/runs",
                json={"workflow": "expense_approval", "input": EXPENSE},
                headers=org_a["operator"].headers,
            )
        ).json()["id"]
        await wait_for_status(
            http, run_a, org_a["operator"].headers, status="running", stage="awaiting_approval"
        )
        listed_a = await _eventually_listed(http, org_a["operator"].headers, run_a)
        assert listed_a["workflow"] == "expense_approval"
        listed_b = await http.get("/v1/runs", headers=org_b["operator"].headers)
        assert listed_b.status_code == 200
        assert listed_b.json()["runs"] == []


async def _eventually_listed(http, headers, run_id):  # type: ignore[no-untyped-def]
    # Visibility is eventually consistent; it catches up within moments on the dev server.
    for _ in range(100):
        runs = (await http.get("/v1/runs", headers=headers)).json()["runs"]
        match = [r for r in runs if r["id"] == run_id]
        if match:
            return match[0]
        await asyncio.sleep(0.1)
    raise AssertionError("run never appeared in the list")


async def test_sla_passes_before_any_decision(
    skipping_stack: Stack, time_skipping_env: WorkflowEnvironment, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with skipping_stack.http() as http:
        started = await http.post(
            "/v1/runs",
            json={"workflow": "expense_approval", "input": {**EXPENSE, "sla_hours": 24}},
            headers=org["operator"].headers,
        )
        assert started.status_code == 201, started.text
        run_id = started.json()["id"]
        await wait_for_status(
            http, run_id, org["operator"].headers, status="running", stage="awaiting_approval"
        )

        await time_skipping_env.sleep(timedelta(hours=25))

        done = await wait_for_status(http, run_id, org["operator"].headers, status="completed")
        assert done["result"] == {"status": "expired"}
        late = await http.post(
            f"/v1/runs/{run_id}/steps/approve/decisions",
            json={"decision": "approve"},
            headers=org["approver"].headers,
        )
        assert late.status_code == 409, late.text
        events = (
            await http.get(f"/v1/runs/{run_id}/audit-events", headers=org["auditor"].headers)
        ).json()["events"]
        assert [e["action"] for e in events] == [
            "run.started",
            "step.opened",
            "step.sla_breached",
            "step.closed",
            "run.completed",
        ]


async def test_temporal_history_holds_only_ciphertext(stack: Stack, engine: AsyncEngine) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        run_id = (
            await http.post(
                "/v1/runs",
                json={
                    "workflow": "expense_approval",
                    "input": {**EXPENSE, "description": "Secret merger dinner"},
                },
                headers=org["operator"].headers,
            )
        ).json()["id"]
        await wait_for_status(
            http, run_id, org["operator"].headers, status="running", stage="awaiting_approval"
        )
        decided = await http.post(
            f"/v1/runs/{run_id}/steps/approve/decisions",
            json={"decision": "approve", "comment": "Confidential note"},
            headers=org["approver"].headers,
        )
        assert decided.status_code == 200
        await wait_for_status(http, run_id, org["operator"].headers, status="completed")
    history = await stack.temporal.get_workflow_handle(f"run-{run_id}").fetch_history()
    payloads = [p for event in history.events for p in history_payloads(event)]
    assert len(payloads) >= 4  # input, update argument and result, activity input, run result
    for payload in payloads:
        # The SDK's own bookkeeping is the only plain JSON: local-activity markers (seq, attempt,
        # type, time) and patch markers (the patch's name, e.g. blocks.notices-after-audit).
        if payload.metadata["encoding"] == b"json/plain":
            plain = json.loads(payload.data)
            if set(plain) == {"id", "deprecated"}:
                assert plain["id"].startswith("blocks.")  # a patch of Blocks' own, by name
                continue
            assert set(plain) <= {
                "seq",
                "attempt",
                "activity_id",
                "activity_type",
                "complete_time",
                "backoff",
                "original_schedule_time",
                "activation_index",
            }
            continue
        assert payload.metadata["encoding"] == b"binary/encrypted"
        # Sealed under this organization's own data key, which can be destroyed alone.
        assert payload_org(payload) == org.id
        for secret in ("Secret merger dinner", "Confidential note", str(org["approver"].user_id)):
            assert secret.encode() not in payload.data
