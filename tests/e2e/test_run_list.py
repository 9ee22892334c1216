"""Listing runs: each filter (status and stage, workflow, requester, pending approver, SLA deadline
before/after) shown to include and to exclude, cursor pagination that walks every run once, no
run of another organization ever, and bad values refused (422) naming the parameter.

Temporal's visibility is eventually consistent, so each expectation is polled until it holds."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import EXPENSE, Org, Stack, make_org, wait_for_status

Params = dict[str, Any] | list[tuple[str, str]]


async def _start(
    http: httpx.AsyncClient, org: Org, who: str, workflow: str, params: dict[str, Any]
) -> str:
    response = await http.post(
        "/v1/runs", json={"workflow": workflow, "input": params}, headers=org[who].headers
    )
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    await wait_for_status(
        http, run_id, org[who].headers, status="running", stage="awaiting_approval"
    )
    return run_id


async def _listed(
    http: httpx.AsyncClient, org: Org, params: Params, expected: set[str], *, within: float = 20
) -> list[dict[str, Any]]:
    """The runs `params` lists (one page), once they are exactly `expected`."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        response = await http.get("/v1/runs", params=params, headers=org["auditor"].headers)
        assert response.status_code == 200, response.text
        runs: list[dict[str, Any]] = response.json()["runs"]
        found = {run["id"] for run in runs}
        if found == expected:
            return runs
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{params} listed {found}, not {expected}")
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
async def runs(stack: Stack, engine: AsyncEngine) -> dict[str, Any]:
    """One organization's runs in known states, and another organization's run."""
    org, other = await make_org(engine), await make_org(engine)
    contract = {
        "counterparty": "Initech",
        "legal": [str(org["approver"].user_id)],
        "security": [str(org["approver2"].user_id)],
    }
    async with stack.http() as http:
        ids = {
            # Waiting for any approver, due in 24 h.
            "day": await _start(http, org, "operator", "expense_approval", EXPENSE),
            # Started by another member, due in 100 h.
            "long": await _start(
                http, org, "operator_approver", "expense_approval", {**EXPENSE, "sla_hours": 100}
            ),
            # Waiting for two named approvers, due in 72 h.
            "contract": await _start(http, org, "operator", "contract_review", contract),
            "approved": await _start(http, org, "operator", "expense_approval", EXPENSE),
            "cancelled": await _start(http, org, "operator", "expense_approval", EXPENSE),
        }
        decided = await http.post(
            f"/v1/runs/{ids['approved']}/steps/approve/decisions",
            json={"decision": "approve"},
            headers=org["approver"].headers,
        )
        assert decided.status_code == 200, decided.text
        cancelled = await http.post(
            f"/v1/runs/{ids['cancelled']}/cancel",
            json={"reason": "no longer needed"},
            headers=org["operator"].headers,
        )
        assert cancelled.status_code == 202, cancelled.text
        await wait_for_status(http, ids["approved"], org["operator"].headers, status="completed")
        await wait_for_status(http, ids["cancelled"], org["operator"].headers, status="canceled")
        foreign = await _start(http, other, "operator", "expense_approval", EXPENSE)
        # Every run listed in its final state before any test reads the list.
        await _listed(http, org, [("status", "completed")], {ids["approved"]})
        await _listed(http, org, [("status", "canceled")], {ids["cancelled"]})
        await _listed(
            http,
            org,
            [("status", "awaiting_approval")],
            {ids[k] for k in ("day", "long", "contract")},
        )
    return {"org": org, "other": other, "ids": ids, "foreign": foreign, "at": datetime.now(UTC)}


async def test_each_filter_includes_and_excludes(stack: Stack, runs: dict[str, Any]) -> None:
    org: Org = runs["org"]
    ids: dict[str, str] = runs["ids"]
    waiting = {ids["day"], ids["long"], ids["contract"]}
    now: datetime = runs["at"]
    cases: list[tuple[Params, set[str]]] = [
        ([], set(ids.values())),
        ([("status", "running")], waiting),
        ([("status", "awaiting_approval")], waiting),
        ([("status", "completed"), ("status", "canceled")], {ids["approved"], ids["cancelled"]}),
        ([("status", "failed")], set()),
        ({"workflow": "contract_review"}, {ids["contract"]}),
        ({"workflow": "expense_approval"}, set(ids.values()) - {ids["contract"]}),
        ({"workflow": "purchase_approval"}, set()),
        ({"requested_by": str(org["operator_approver"].user_id)}, {ids["long"]}),
        ({"requested_by": str(org["operator"].user_id)}, set(ids.values()) - {ids["long"]}),
        ({"requested_by": str(org["approver"].user_id)}, set()),
        # A member named by a step's policy, by id or by label; a role; a member group.
        ({"pending_approver": str(org["approver"].user_id)}, {ids["contract"]}),
        ({"pending_approver": f"user:{org['approver2'].user_id}"}, {ids["contract"]}),
        ({"pending_approver": "role:approver"}, {ids["day"], ids["long"]}),
        ({"pending_approver": "role:admin"}, set()),
        ({"pending_approver": "group:finance"}, set()),
        # Nearest deadlines: day +24 h, contract +72 h, long +100 h; closed runs have none.
        ({"sla_deadline_before": (now + timedelta(hours=48)).isoformat()}, {ids["day"]}),
        ({"sla_deadline_after": (now + timedelta(hours=80)).isoformat()}, {ids["long"]}),
        (
            {
                "sla_deadline_after": (now + timedelta(hours=48)).isoformat(),
                "sla_deadline_before": (now + timedelta(hours=80)).isoformat(),
            },
            {ids["contract"]},
        ),
        ({"sla_deadline_before": (now - timedelta(hours=1)).isoformat()}, set()),
        # Filters combine.
        (
            [("status", "awaiting_approval"), ("workflow", "expense_approval")],
            {ids["day"], ids["long"]},
        ),
        (
            {"workflow": "contract_review", "requested_by": str(org["operator_approver"].user_id)},
            set(),
        ),
    ]
    async with stack.http() as http:
        for params, expected in cases:
            await _listed(http, org, params, expected)
        [contract] = await _listed(http, org, {"workflow": "contract_review"}, {ids["contract"]})
    assert contract["requested_by"] == str(org["operator"].user_id)
    assert sorted(contract["pending_approvers"]) == sorted(
        [f"user:{org['approver'].user_id}", f"user:{org['approver2'].user_id}"]
    )
    assert contract["stage"] == "awaiting_approval"
    assert contract["sla_deadline"] is not None


async def test_pages_walk_every_run_once(stack: Stack, runs: dict[str, Any]) -> None:
    org: Org = runs["org"]
    ids: dict[str, str] = runs["ids"]
    seen: list[str] = []
    pages = 0
    params: dict[str, Any] = {"limit": 2}
    async with stack.http() as http:
        while True:
            response = await http.get("/v1/runs", params=params, headers=org["auditor"].headers)
            assert response.status_code == 200, response.text
            body = response.json()
            assert len(body["runs"]) <= 2
            seen += [run["id"] for run in body["runs"]]
            pages += 1
            if body["next_cursor"] is None:
                break
            params = {"limit": 2, "cursor": body["next_cursor"]}
            assert pages < 10
        # A filtered walk: its cursor carries on under the same filters only.
        first = await http.get(
            "/v1/runs",
            params={"limit": 1, "workflow": "expense_approval"},
            headers=org["auditor"].headers,
        )
        cursor = first.json()["next_cursor"]
        assert cursor is not None
        second = await http.get(
            "/v1/runs",
            params={"limit": 1, "workflow": "expense_approval", "cursor": cursor},
            headers=org["auditor"].headers,
        )
        assert second.status_code == 200, second.text
        assert second.json()["runs"][0]["id"] != first.json()["runs"][0]["id"]
        elsewhere = await http.get(
            "/v1/runs",
            params={"limit": 1, "workflow": "contract_review", "cursor": cursor},
            headers=org["auditor"].headers,
        )
        assert elsewhere.status_code == 422, elsewhere.text
        assert elsewhere.json()["errors"][0]["field"] == "cursor"
    assert len(seen) == len(set(seen)), seen
    assert set(seen) == set(ids.values())
    assert pages >= 3


async def test_another_organizations_runs_never_appear(stack: Stack, runs: dict[str, Any]) -> None:
    org: Org = runs["org"]
    other: Org = runs["other"]
    foreign: str = runs["foreign"]
    async with stack.http() as http:
        await _listed(http, other, [], {foreign})
        ids: dict[str, str] = runs["ids"]
        # Filters that the other organization's run matches list none of it.
        await _listed(http, org, [], set(ids.values()))
        await _listed(http, org, {"requested_by": str(other["operator"].user_id)}, set())
        await _listed(http, org, {"pending_approver": "role:approver"}, {ids["day"], ids["long"]})
        await _listed(http, other, {"pending_approver": "role:approver"}, {foreign})
        # A cursor of one organization is not one of another's.
        first = await http.get("/v1/runs", params={"limit": 1}, headers=org["auditor"].headers)
        cursor = first.json()["next_cursor"]
        stolen = await http.get(
            "/v1/runs", params={"limit": 1, "cursor": cursor}, headers=other["auditor"].headers
        )
        assert stolen.status_code == 422, stolen.text


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "paused"}, "status"),
        ({"workflow": 'expense_approval" OR BlocksOrgId != "x'}, "workflow"),
        ({"workflow": ""}, "workflow"),
        ({"requested_by": "operator"}, "requested_by"),
        ({"requested_by": '" OR 1=1'}, "requested_by"),
        ({"pending_approver": "role:king"}, "pending_approver"),
        ({"pending_approver": "user:alice"}, "pending_approver"),
        ({"pending_approver": 'group:x" OR "1"="1'}, "pending_approver"),
        ({"pending_approver": "approver"}, "pending_approver"),
        ({"sla_deadline_before": "tomorrow"}, "sla_deadline_before"),
        ({"sla_deadline_after": "2025-13-01T00:00:00Z"}, "sla_deadline_after"),
        ({"sla_deadline_after": "0001-01-01T00:00:00+01:00"}, "sla_deadline_after"),
        (
            {
                "sla_deadline_after": "2025-03-05T00:00:00Z",
                "sla_deadline_before": "2025-03-04T00:00:00Z",
            },
            "sla_deadline_before",
        ),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"cursor": "!!!not base64!!!"}, "cursor"),
        ({"cursor": "AAAAAAAAAAAAAAAA"}, "cursor"),
    ],
)
async def test_bad_filter_values_are_refused(
    stack: Stack, runs: dict[str, Any], params: dict[str, Any], field: str
) -> None:
    org: Org = runs["org"]
    async with stack.http() as http:
        response = await http.get("/v1/runs", params=params, headers=org["auditor"].headers)
    assert response.status_code == 422, response.text
    # A repeated parameter is named with the index of the bad value (`status.0`).
    assert response.json()["errors"][0]["field"].split(".")[0] == field
