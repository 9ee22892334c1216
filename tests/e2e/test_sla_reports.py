"""The SLA compliance report through HTTP on the time-skipping stack: steps met, breached (with
reminders and escalation) and open, summaries, CSV, filters, tenant isolation and permissions.

One scenario is built once for the module (25 h pass on the test server), then each test reads
the report its own way.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from tests.support import EXPENSE, Org, Stack, make_org, wait_for_status


@dataclass(frozen=True)
class Scenario:
    org: Org
    other: Org
    met: str  # expense approved at once, within its 24 h SLA
    breached: str  # expense with a 1 h SLA, left to expire
    purchase: str  # purchase review left past 24 h: two reminders, escalation, rejected
    still_open: str  # expense started after the others closed, still within its SLA
    foreign: str  # the other organization's run
    http: httpx.AsyncClient


async def _start(http: httpx.AsyncClient, org: Org, workflow: str, params: dict[str, Any]) -> str:
    response = await http.post(
        "/v1/runs", json={"workflow": workflow, "input": params}, headers=org["operator"].headers
    )
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    await wait_for_status(
        http, run_id, org["operator"].headers, status="running", stage="awaiting_approval"
    )
    return run_id


def _purchase(org: Org) -> dict[str, Any]:
    return {
        "amount": "25000.00",
        "description": "Annual licence",
        "finance": [str(org["approver"].user_id), str(org["approver2"].user_id)],
        "legal": [str(org["admin"].user_id)],
        "director": str(org["owner"].user_id),
    }


@pytest.fixture(scope="module")
async def scenario(
    skipping_stack: Stack, time_skipping_env: WorkflowEnvironment, engine: AsyncEngine
) -> AsyncIterator[Scenario]:
    org = await make_org(engine)
    other = await make_org(engine)
    async with skipping_stack.http() as http:
        met = await _start(http, org, "expense_approval", EXPENSE)
        decided = await http.post(
            f"/v1/runs/{met}/steps/approve/decisions",
            json={"decision": "approve"},
            headers=org["approver"].headers,
        )
        assert decided.status_code == 200, decided.text
        await wait_for_status(http, met, org["operator"].headers, status="completed")

        breached = await _start(http, org, "expense_approval", {**EXPENSE, "sla_hours": 1})
        purchase = await _start(http, org, "purchase_approval", _purchase(org))
        foreign = await _start(http, other, "expense_approval", EXPENSE)

        await time_skipping_env.sleep(timedelta(hours=25))
        for run_id in (breached, purchase):
            await wait_for_status(http, run_id, org["operator"].headers, status="completed")
        still_open = await _start(http, org, "expense_approval", EXPENSE)
        yield Scenario(org, other, met, breached, purchase, still_open, foreign, http)


async def _report(s: Scenario, who: str = "auditor", **params: str) -> dict[str, Any]:
    response = await s.http.get("/v1/reports/sla", params=params, headers=s.org[who].headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def _rows(s: Scenario, **params: str) -> dict[str, dict[str, Any]]:
    return {row["run_id"]: row for row in (await _report(s, **params))["steps"]}


def _hours(later: str, earlier: str) -> float:
    delta = datetime.fromisoformat(later) - datetime.fromisoformat(earlier)
    return round(delta.total_seconds() / 60) / 60  # timers fire within a second of their time


async def test_one_row_per_step_in_opening_order(scenario: Scenario) -> None:
    s = scenario
    report = await _report(s)
    assert [(r["run_id"], r["step_id"]) for r in report["steps"]] == [
        (s.met, "approve"),
        (s.breached, "approve"),
        (s.purchase, "review"),
        (s.still_open, "approve"),
    ]
    assert report["org_id"] == str(s.org.id)
    assert report["filters"] == {"workflow": None, "from": None, "to": None}
    assert report["through_seq"] > 0


async def test_decided_within_sla_is_met_with_decider_and_time(scenario: Scenario) -> None:
    s = scenario
    row = (await _rows(s))[s.met]
    assert (row["workflow"], row["state"], row["outcome"]) == (
        "expense_approval",
        "approved",
        "met",
    )
    assert [(d["user_id"], d["decision"]) for d in row["deciders"]] == [
        (str(s.org["approver"].user_id), "approve")
    ]
    assert row["decided_at"] == row["closed_at"]
    assert 0 < row["time_to_decision_seconds"] < 3600
    assert _hours(row["deadline"], row["opened_at"]) == 24
    assert (row["reminders"], row["escalated"], row["breached_at"]) == (0, False, None)


async def test_sla_passing_without_decision_is_breached(scenario: Scenario) -> None:
    s = scenario
    row = (await _rows(s))[s.breached]
    assert (row["state"], row["outcome"]) == ("expired", "breached")
    assert _hours(row["deadline"], row["opened_at"]) == 1
    assert _hours(row["breached_at"], row["opened_at"]) == 1
    assert row["closed_at"] == row["breached_at"]
    assert row["deciders"] == []
    assert row["decided_at"] is None
    assert row["time_to_decision_seconds"] is None


async def test_purchase_past_24h_shows_reminders_and_escalation(scenario: Scenario) -> None:
    s = scenario
    row = (await _rows(s))[s.purchase]
    assert (row["workflow"], row["step_id"], row["state"], row["outcome"]) == (
        "purchase_approval",
        "review",
        "rejected",
        "breached",
    )
    assert (row["reminders"], row["escalated"]) == (2, True)
    assert _hours(row["escalated_at"], row["opened_at"]) == 20
    assert _hours(row["breached_at"], row["opened_at"]) == 24


async def test_pending_within_sla_is_open(scenario: Scenario) -> None:
    s = scenario
    row = (await _rows(s))[s.still_open]
    assert (row["state"], row["outcome"]) == ("pending", "open")
    assert (row["closed_at"], row["decided_at"], row["deciders"]) == (None, None, [])


async def test_summary_per_workflow(scenario: Scenario) -> None:
    s = scenario
    report = await _report(s)
    met_seconds = next(r for r in report["steps"] if r["run_id"] == s.met)[
        "time_to_decision_seconds"
    ]
    summaries = {summary["workflow"]: summary for summary in report["summary"]}
    assert set(summaries) == {"expense_approval", "purchase_approval"}
    expense = summaries["expense_approval"]
    counts = ("steps", "met", "breached", "open", "overdue", "no_sla", "cancelled", "expired")
    assert [expense[k] for k in counts] == [3, 1, 1, 1, 0, 0, 0, 0]
    assert expense["compliance_percent"] == 50.0  # met / (met + breached): open counts neither
    assert expense["p50_time_to_decision_seconds"] == met_seconds
    assert expense["p90_time_to_decision_seconds"] == met_seconds
    purchase = summaries["purchase_approval"]
    assert [purchase[k] for k in counts] == [1, 0, 1, 0, 0, 0, 0, 0]
    assert purchase["compliance_percent"] == 0.0
    assert purchase["p50_time_to_decision_seconds"] is None
    assert (report["overall"]["steps"], report["overall"]["compliance_percent"]) == (4, 33.33)


async def test_csv_has_a_header_and_the_same_rows(scenario: Scenario) -> None:
    s = scenario
    report = await _report(s)
    response = await s.http.get(
        "/v1/reports/sla", params={"format": "csv"}, headers=s.org["auditor"].headers
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["x-blocks-through-seq"] == str(report["through_seq"])
    reader = csv.DictReader(io.StringIO(response.text))
    parsed = list(reader)
    assert reader.fieldnames is not None
    assert reader.fieldnames[:4] == ["run_id", "workflow", "step_id", "title"]
    assert [(r["run_id"], r["step_id"], r["state"], r["outcome"]) for r in parsed] == [
        (r["run_id"], r["step_id"], r["state"], r["outcome"]) for r in report["steps"]
    ]
    by_run = {r["run_id"]: r for r in parsed}
    met = next(r for r in report["steps"] if r["run_id"] == s.met)
    assert by_run[s.met]["deciders"] == f"{s.org['approver'].user_id}:approve"
    assert float(by_run[s.met]["time_to_decision_seconds"]) == met["time_to_decision_seconds"]
    assert datetime.fromisoformat(by_run[s.met]["opened_at"]) == datetime.fromisoformat(
        met["opened_at"]
    )
    assert (by_run[s.purchase]["reminders"], by_run[s.purchase]["escalated"]) == ("2", "true")
    assert by_run[s.still_open]["closed_at"] == ""


async def test_filters_by_workflow_and_opening_time(scenario: Scenario) -> None:
    s = scenario
    only = await _report(s, workflow="purchase_approval")
    assert [r["run_id"] for r in only["steps"]] == [s.purchase]
    assert [summary["workflow"] for summary in only["summary"]] == ["purchase_approval"]
    assert list(await _rows(s, workflow="expense_approval")) == [s.met, s.breached, s.still_open]
    assert await _rows(s, workflow="no_such_workflow") == {}
    # The open run opened after 25 h passed: `from` is inclusive, `to` exclusive.
    cut = (await _rows(s))[s.still_open]["opened_at"]
    assert list(await _rows(s, **{"from": cut})) == [s.still_open]
    assert list(await _rows(s, to=cut)) == [s.met, s.breached, s.purchase]
    echoed = (await _report(s, workflow="expense_approval", to=cut))["filters"]
    assert echoed["workflow"] == "expense_approval"
    assert datetime.fromisoformat(echoed["to"]) == datetime.fromisoformat(cut)


async def test_admins_read_it_and_another_org_sees_only_its_own(scenario: Scenario) -> None:
    s = scenario
    assert len(await _rows(s, who="admin")) == 4
    response = await s.http.get("/v1/reports/sla", headers=s.other["auditor"].headers)
    assert response.status_code == 200, response.text
    theirs = response.json()
    assert [r["run_id"] for r in theirs["steps"]] == [s.foreign]
    assert s.foreign not in await _rows(s)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"format": "xml"}, "format"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-13-01"}, "to"),
        ({"from": "2026-03-02T10:00:00Z", "to": "2026-03-02T09:00:00Z"}, "to"),
        ({"workflow": ""}, "workflow"),
    ],
)
async def test_bad_parameters_name_the_field(
    scenario: Scenario, params: dict[str, str], field: str
) -> None:
    response = await scenario.http.get(
        "/v1/reports/sla", params=params, headers=scenario.org["auditor"].headers
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == [field]


@pytest.mark.parametrize("fmt", ["json", "csv"])
async def test_operator_without_audit_read_is_forbidden(scenario: Scenario, fmt: str) -> None:
    response = await scenario.http.get(
        "/v1/reports/sla", params={"format": fmt}, headers=scenario.org["operator"].headers
    )
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "forbidden"
