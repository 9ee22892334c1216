"""Approval chains through the API: quorum across groups, rejection, separation of duties, forms,
and reminders, escalation and breach on durable timers (time-skipping server)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from tests.support import Org, Stack, make_org, wait_for_status


def _purchase(org: Org, **overrides: Any) -> dict[str, Any]:
    return {
        "workflow": "purchase_approval",
        "input": {
            "amount": "25000.00",
            "description": "Annual licence",
            "finance": [str(org["approver"].user_id), str(org["approver2"].user_id)],
            "legal": [str(org["admin"].user_id)],
            "director": str(org["owner"].user_id),
            **overrides,
        },
    }


async def _start(http: httpx.AsyncClient, org: Org, **overrides: Any) -> str:
    response = await http.post(
        "/v1/runs", json=_purchase(org, **overrides), headers=org["operator"].headers
    )
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    await wait_for_status(
        http, run_id, org["operator"].headers, status="running", stage="awaiting_approval"
    )
    return run_id


async def _decide(
    http: httpx.AsyncClient,
    org: Org,
    run_id: str,
    step: str,
    who: str,
    decision: str = "approve",
    **body: Any,
) -> httpx.Response:
    return await http.post(
        f"/v1/runs/{run_id}/steps/{step}/decisions",
        json={"decision": decision, **body},
        headers=org[who].headers,
    )


async def _events(http: httpx.AsyncClient, org: Org, run_id: str) -> list[dict[str, Any]]:
    response = await http.get(f"/v1/runs/{run_id}/audit-events", headers=org["auditor"].headers)
    assert response.status_code == 200, response.text
    return response.json()["events"]  # type: ignore[no-any-return]


async def test_two_from_finance_and_one_from_legal_then_the_director(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        run_id = await _start(http, org)
        first = await _decide(http, org, run_id, "review", "approver")
        assert first.status_code == 200, first.text
        assert first.json()["state"] == "pending"  # one of three seats filled
        legal = await _decide(http, org, run_id, "review", "admin")
        assert legal.json()["state"] == "pending"
        again = await _decide(http, org, run_id, "review", "approver", "reject")
        assert again.status_code == 409  # one vote per person per step
        done = await _decide(http, org, run_id, "review", "approver2")
        assert done.json()["state"] == "approved"

        body = (await http.get(f"/v1/runs/{run_id}", headers=org["operator"].headers)).json()
        for _ in range(100):
            if body["pending_steps"] and body["pending_steps"][0]["step_id"] == "director":
                break
            body = (await http.get(f"/v1/runs/{run_id}", headers=org["operator"].headers)).json()
        assert body["pending_steps"][0]["approvers"] == [f"user:{org['owner'].user_id}"]

        # The director's decision must carry a valid form.
        bad = await _decide(http, org, run_id, "director", "owner", form={"budget_code": "nope"})
        assert bad.status_code == 422, bad.text
        assert bad.json()["errors"][0]["field"] == "form.budget_code"
        missing = await _decide(http, org, run_id, "director", "owner")
        assert missing.status_code == 422
        ok = await _decide(http, org, run_id, "director", "owner", form={"budget_code": "FI-2026"})
        assert ok.status_code == 200, ok.text
        result = await wait_for_status(http, run_id, org["operator"].headers, status="completed")
        assert result["result"] == {"status": "approved", "budget_code": "FI-2026"}

    async with stack.http() as http:
        actions = [e["action"] for e in await _events(http, org, run_id)]
    assert actions == [
        "run.started",
        "step.opened",
        "step.decided",
        "step.decided",
        "step.decided",
        "step.closed",
        "step.opened",
        "step.decided",
        "step.closed",
        "run.completed",
    ]


async def test_first_rejection_ends_the_step_and_the_run(stack: Stack, engine: AsyncEngine) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        run_id = await _start(http, org)
        assert (await _decide(http, org, run_id, "review", "approver")).json()["state"] == "pending"
        rejected = await _decide(
            http, org, run_id, "review", "admin", "reject", comment="contract terms"
        )
        assert rejected.json()["state"] == "rejected"
        result = await wait_for_status(http, run_id, org["operator"].headers, status="completed")
        assert result["result"] == {"status": "rejected", "step": "review"}


async def test_one_person_cannot_approve_twice_in_a_chain(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        # The owner sits in finance and is also the director.
        run_id = await _start(
            http, org, finance=[str(org["owner"].user_id), str(org["approver"].user_id)]
        )
        for who in ("owner", "approver", "admin"):
            assert (await _decide(http, org, run_id, "review", who)).status_code == 200
        for _ in range(100):
            body = (await http.get(f"/v1/runs/{run_id}", headers=org["operator"].headers)).json()
            if body["pending_steps"] and body["pending_steps"][0]["step_id"] == "director":
                break
        refused = await _decide(
            http, org, run_id, "director", "owner", form={"budget_code": "FI-2026"}
        )
        assert refused.status_code == 403, refused.text
        assert "earlier step" in refused.json()["detail"]
        # Rejecting is still allowed: separation of duties limits approvals only.
        assert (
            await _decide(
                http, org, run_id, "director", "owner", "reject", form={"budget_code": "FI-2026"}
            )
        ).status_code == 200


async def test_24h_sla_reminds_escalates_at_20h_and_rejects_at_breach(
    skipping_stack: Stack, time_skipping_env: WorkflowEnvironment, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with skipping_stack.http() as http:
        run_id = await _start(http, org)
        opened = next(e for e in await _events(http, org, run_id) if e["action"] == "step.opened")
        opened_at = datetime.fromisoformat(opened["data"]["opened_at"])
        assert datetime.fromisoformat(opened["data"]["deadline"]) - opened_at == timedelta(hours=24)

        await time_skipping_env.sleep(timedelta(hours=19))
        pending = (await http.get(f"/v1/runs/{run_id}", headers=org["operator"].headers)).json()[
            "pending_steps"
        ][0]
        assert f"user:{org['owner'].user_id}" not in pending["approvers"]

        await time_skipping_env.sleep(timedelta(hours=2))  # 21 h: escalated at 20 h
        pending = (await http.get(f"/v1/runs/{run_id}", headers=org["operator"].headers)).json()[
            "pending_steps"
        ][0]
        assert f"user:{org['owner'].user_id}" in pending["approvers"]

        await time_skipping_env.sleep(timedelta(hours=4))  # 25 h: breached at 24 h
        result = await wait_for_status(http, run_id, org["operator"].headers, status="completed")
        assert result["result"] == {"status": "rejected", "step": "review"}

        events = await _events(http, org, run_id)
        # Timers fire at their due time; the test server reports them within a second.
        at = {
            (e["action"], e["data"].get("reminder")): round(
                (datetime.fromisoformat(e["data"]["at"]) - opened_at).total_seconds() / 60
            )
            for e in events
            if "at" in e["data"] and e["action"] != "step.decided"
        }
        assert at == {
            ("step.reminded", 1): 8 * 60,
            ("step.reminded", 2): 16 * 60,
            ("step.escalated", None): 20 * 60,
            ("step.sla_breached", None): 24 * 60,
        }
        escalated = next(e for e in events if e["action"] == "step.escalated")
        assert f"user:{org['owner'].user_id}" in escalated["data"]["approvers_after"]
        closed = next(e for e in events if e["action"] == "step.closed")
        assert closed["data"]["state"] == "rejected"
        assert closed["data"]["reminders"] == 2
        assert closed["data"]["escalated"] is True


async def test_business_hours_sla_counts_working_time_only(
    skipping_stack: Stack, time_skipping_env: WorkflowEnvironment, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with skipping_stack.http() as http:
        run_id = await _start(http, org, sla_hours=16, business_hours_time_zone="Europe/Berlin")
        opened = next(e for e in await _events(http, org, run_id) if e["action"] == "step.opened")
        opened_at = datetime.fromisoformat(opened["data"]["opened_at"])
        deadline = datetime.fromisoformat(opened["data"]["deadline"])
        assert opened["data"]["business_hours"] is True
        # 16 working hours is two full working days: at least 16 h of wall time, and the
        # deadline falls inside a Berlin working window.
        assert deadline - opened_at >= timedelta(hours=16)
        berlin = deadline.astimezone(ZoneInfo("Europe/Berlin"))
        assert berlin.weekday() < 5
        assert (9, 0) <= (berlin.hour, berlin.minute) <= (17, 0)


async def _inbox(http: httpx.AsyncClient, org: Org, who: str) -> list[tuple[str, str]]:
    response = await http.get("/v1/inbox", headers=org[who].headers)
    assert response.status_code == 200, response.text
    return [(item["run_id"], item["step_id"]) for item in response.json()["items"]]


async def _eventually(check: Any) -> None:
    # Visibility (what the inbox searches) catches up with workflow state within moments.
    for _ in range(100):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the inbox never showed the expected items")


async def test_inbox_lists_what_each_person_may_decide_now(
    stack: Stack, engine: AsyncEngine
) -> None:
    org, other = await make_org(engine), await make_org(engine)
    async with stack.http() as http:
        purchase = await _start(http, org)
        expense = (
            await http.post(
                "/v1/runs",
                json={
                    "workflow": "expense_approval",
                    "input": {"amount": "5", "currency": "EUR", "description": "x"},
                },
                headers=org["operator_approver"].headers,
            )
        ).json()["id"]
        await wait_for_status(
            http, expense, org["operator"].headers, status="running", stage="awaiting_approval"
        )

        async def approver_sees_both() -> bool:
            return set(await _inbox(http, org, "approver")) == {
                (purchase, "review"),
                (expense, "approve"),
            }

        await _eventually(approver_sees_both)
        # The requester of the expense does not see it, though they hold the approver role.
        assert (expense, "approve") not in await _inbox(http, org, "operator_approver")
        assert await _inbox(http, org, "admin") == [(purchase, "review")]  # named in legal

        assert (await _decide(http, org, purchase, "review", "approver")).status_code == 200
        assert (purchase, "review") not in await _inbox(http, org, "approver")  # already voted
        assert (purchase, "review") in await _inbox(http, org, "approver2")

        assert await _inbox(http, other, "approver") == []
        assert (await http.get("/v1/inbox", headers=org["auditor"].headers)).status_code == 403


async def _expense(http: httpx.AsyncClient, org: Org) -> str:
    response = await http.post(
        "/v1/runs",
        json={
            "workflow": "expense_approval",
            "input": {"amount": "5", "currency": "EUR", "description": "x"},
        },
        headers=org["operator"].headers,
    )
    run_id: str = response.json()["id"]
    await wait_for_status(
        http, run_id, org["operator"].headers, status="running", stage="awaiting_approval"
    )
    return run_id


async def test_a_delegate_decides_for_the_delegator_until_revoked(
    stack: Stack, engine: AsyncEngine
) -> None:
    org, other = await make_org(engine), await make_org(engine)
    async with stack.http() as http:
        run_id = await _expense(http, org)
        # The owner may decide steps in general but is not an approver of this one.
        assert (await _decide(http, org, run_id, "approve", "owner")).status_code == 403

        bad = [
            (
                {
                    "delegate_user_id": str(org["approver"].user_id),
                    "ends_at": "2099-01-01T00:00:00Z",
                },
                422,
            ),
            (
                {"delegate_user_id": str(org["owner"].user_id), "ends_at": "2001-01-01T00:00:00Z"},
                422,
            ),
            (
                {"delegate_user_id": str(org["owner"].user_id), "ends_at": "2099-01-01T00:00:00"},
                422,
            ),
            (
                {
                    "delegate_user_id": str(other["owner"].user_id),
                    "ends_at": "2099-01-01T00:00:00Z",
                },
                404,
            ),
            (
                {
                    "delegate_user_id": str(org["owner"].user_id),
                    "ends_at": "2099-01-01T00:00:00Z",
                    "x": 1,
                },
                422,
            ),
        ]
        for body, status in bad:
            response = await http.post(
                "/v1/delegations", json=body, headers=org["approver"].headers
            )
            assert response.status_code == status, (body, response.text)

        made = await http.post(
            "/v1/delegations",
            json={"delegate_user_id": str(org["owner"].user_id), "ends_at": "2099-01-01T00:00:00Z"},
            headers=org["approver"].headers,
        )
        assert made.status_code == 201, made.text
        delegation_id = made.json()["id"]

        async def owner_sees_it() -> bool:
            return (run_id, "approve") in await _inbox(http, org, "owner")

        await _eventually(owner_sees_it)
        decided = await _decide(
            http, org, run_id, "approve", "owner", comment="covering for approver"
        )
        assert decided.status_code == 200, decided.text
        await wait_for_status(http, run_id, org["operator"].headers, status="completed")
        vote = next(e for e in await _events(http, org, run_id) if e["action"] == "step.decided")
        assert vote["actor_id"] == str(org["owner"].user_id)
        assert vote["data"]["on_behalf_of"] == str(org["approver"].user_id)

        # Only the delegator revokes; then the delegate is back to being no approver.
        assert (
            await http.delete(f"/v1/delegations/{delegation_id}", headers=org["owner"].headers)
        ).status_code == 404
        revoked = await http.delete(
            f"/v1/delegations/{delegation_id}", headers=org["approver"].headers
        )
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"] is not None
        second = await _expense(http, org)
        assert (await _decide(http, org, second, "approve", "owner")).status_code == 403

    actions = [e["action"] for e in await _all_events(stack, org)]
    assert actions.count("delegation.created") == 1
    assert actions.count("delegation.revoked") == 1


async def _all_events(stack: Stack, org: Org) -> list[dict[str, Any]]:
    async with stack.http() as http:
        response = await http.get("/v1/audit-events?limit=1000", headers=org["auditor"].headers)
        return response.json()["events"]  # type: ignore[no-any-return]


async def test_parallel_steps_wait_together_and_both_must_approve(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        started = await http.post(
            "/v1/runs",
            json={
                "workflow": "contract_review",
                "input": {
                    "counterparty": "Acme",
                    "legal": [str(org["admin"].user_id)],
                    "security": [str(org["approver"].user_id)],
                },
            },
            headers=org["operator"].headers,
        )
        assert started.status_code == 201, started.text
        run_id = started.json()["id"]
        for _ in range(100):
            body = (await http.get(f"/v1/runs/{run_id}", headers=org["operator"].headers)).json()
            if len(body["pending_steps"]) == 2:
                break
            await asyncio.sleep(0.05)
        assert {s["step_id"] for s in body["pending_steps"]} == {"legal", "security"}

        async def both_inboxes() -> bool:
            return await _inbox(http, org, "admin") == [(run_id, "legal")] and await _inbox(
                http, org, "approver"
            ) == [(run_id, "security")]

        await _eventually(both_inboxes)  # the pending-approvers attribute holds both steps' people

        assert (await _decide(http, org, run_id, "security", "approver")).status_code == 200
        body = (await http.get(f"/v1/runs/{run_id}", headers=org["operator"].headers)).json()
        assert body["status"] == "running"
        assert (await _decide(http, org, run_id, "legal", "admin")).status_code == 200
        done = await wait_for_status(http, run_id, org["operator"].headers, status="completed")
        assert done["result"] == {"status": "approved", "legal": "approved", "security": "approved"}


async def test_a_member_group_fills_a_policy_group(stack: Stack, engine: AsyncEngine) -> None:
    org, other = await make_org(engine), await make_org(engine)
    async with stack.http() as http:
        assert (
            await http.post("/v1/groups", json={"name": "finance"}, headers=org["operator"].headers)
        ).status_code == 403
        assert (
            await http.post("/v1/groups", json={"name": "Fin Ance"}, headers=org["admin"].headers)
        ).status_code == 422
        made = await http.post("/v1/groups", json={"name": "finance"}, headers=org["admin"].headers)
        assert made.status_code == 201, made.text
        group_id = made.json()["id"]
        assert (
            await http.post("/v1/groups", json={"name": "finance"}, headers=org["admin"].headers)
        ).status_code == 409
        for who in ("approver", "approver2"):
            added = await http.put(
                f"/v1/groups/{group_id}/members/{org[who].user_id}", headers=org["admin"].headers
            )
            assert added.status_code == 200, added.text
        outsider = await http.put(
            f"/v1/groups/{group_id}/members/{other['owner'].user_id}", headers=org["admin"].headers
        )
        assert outsider.status_code == 404
        assert sorted(
            map(
                str,
                (await http.get("/v1/groups", headers=org["operator"].headers)).json()[0][
                    "members"
                ],
            )
        ) == sorted([str(org["approver"].user_id), str(org["approver2"].user_id)])

        run_id = await _start(http, org, finance=[], finance_group="finance")
        pending = (await http.get(f"/v1/runs/{run_id}", headers=org["operator"].headers)).json()[
            "pending_steps"
        ][0]
        assert "group:finance" in pending["approvers"]

        async def finance_sees_it() -> bool:
            return (run_id, "review") in await _inbox(http, org, "approver2")

        await _eventually(finance_sees_it)
        # Someone outside the group (and not named) is no approver of the finance seats.
        assert (await _decide(http, org, run_id, "review", "operator_approver")).status_code == 403
        for who in ("approver", "approver2", "admin"):
            assert (await _decide(http, org, run_id, "review", who)).status_code == 200
        body = (await http.get(f"/v1/runs/{run_id}", headers=org["operator"].headers)).json()
        for _ in range(100):
            if body["pending_steps"] and body["pending_steps"][0]["step_id"] == "director":
                break
            body = (await http.get(f"/v1/runs/{run_id}", headers=org["operator"].headers)).json()
        assert body["pending_steps"][0]["step_id"] == "director"

        removed = await http.delete(
            f"/v1/groups/{group_id}/members/{org['approver2'].user_id}",
            headers=org["admin"].headers,
        )
        assert removed.status_code == 200
        assert str(org["approver2"].user_id) not in map(str, removed.json()["members"])
