"""The workflow catalogue from outside: what workers published is listed, starts are validated
against it (never by importing workflow code), and an organization may restrict it, audited."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import EXPENSE, Org, Stack, audit_actions, make_org, row_counts

PURCHASE = {
    "amount": "5000.00",
    "description": "Laptops",
    "finance_group": "finance",
    "legal": [str(uuid.uuid4())],
    "director": str(uuid.uuid4()),
}


async def test_the_catalogue_lists_what_workers_published(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        listed = await http.get("/v1/workflows", headers=org["approver"].headers)
    assert listed.status_code == 200, listed.text
    by_name = {w["name"]: w for w in listed.json()["workflows"]}
    assert {"expense_approval", "purchase_approval", "contract_review"} <= set(by_name)
    expense = by_name["expense_approval"]
    assert expense["version"] == "1"
    assert expense["allowed"] is True
    assert expense["description"].startswith("An expense waits")
    assert set(expense["input_schema"]["required"]) == {"amount", "currency", "description"}
    # Decision forms are published per step; approver fields carry their mark.
    purchase = by_name["purchase_approval"]
    assert purchase["forms"]["director"]["required"] == ["budget_code"]
    assert purchase["input_schema"]["properties"]["director"]["x-blocks-approver"] == {}
    queues = {s["task_queue"] for s in expense["served_by"]}
    assert stack.settings.task_queue in queues
    assert listed.json()["allowed_workflows"] is None


async def test_a_start_is_checked_against_the_published_schema(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    bad = {**EXPENSE, "amount": "-5", "currency": "euro", "colour": "red"}
    async with stack.http() as http:
        refused = await http.post(
            "/v1/runs",
            json={"workflow": "expense_approval", "input": bad},
            headers=org["operator"].headers,
        )
        unknown = await http.post(
            "/v1/runs",
            json={"workflow": "never_published", "input": {}},
            headers=org["operator"].headers,
        )
    assert refused.status_code == 422, refused.text
    fields = {e["field"]: e["reason"] for e in refused.json()["errors"]}
    assert set(fields) == {"input.amount", "input.currency", "input.colour"}
    assert "red" not in refused.text  # a reason names the rule, it does not echo the value
    assert unknown.status_code == 422
    assert unknown.json()["code"] == "unknown_workflow"
    assert await row_counts(engine, org.id) == (0, 0)


async def _restrict(stack: Stack, org: Org, who: str, names: list[str] | None) -> int:
    async with stack.http() as http:
        response = await http.put(
            "/v1/org/workflows", json={"allowed_workflows": names}, headers=org[who].headers
        )
    return response.status_code


async def test_an_organization_restricts_what_its_members_may_start(
    stack: Stack, engine: AsyncEngine
) -> None:
    org, other = await make_org(engine), await make_org(engine)
    assert await _restrict(stack, org, "operator", ["expense_approval"]) == 403
    assert await _restrict(stack, org, "admin", ["expense_approval", "no_such_flow"]) == 422
    assert await _restrict(stack, org, "admin", ["expense_approval"]) == 200

    async with stack.http() as http:
        listed = (await http.get("/v1/workflows", headers=org["operator"].headers)).json()
        purchase = await http.post(
            "/v1/runs",
            json={"workflow": "purchase_approval", "input": PURCHASE},
            headers=org["operator"].headers,
        )
        expense = await http.post(
            "/v1/runs",
            json={"workflow": "expense_approval", "input": EXPENSE},
            headers=org["operator"].headers,
        )
        elsewhere = (await http.get("/v1/workflows", headers=other["operator"].headers)).json()
    assert listed["allowed_workflows"] == ["expense_approval"]
    allowed = {w["name"]: w["allowed"] for w in listed["workflows"]}
    assert allowed["expense_approval"]
    assert not allowed["purchase_approval"]
    assert purchase.status_code == 422
    assert purchase.json()["code"] == "workflow_not_allowed"
    assert expense.status_code == 201, expense.text
    # Another organization's choice is its own.
    assert elsewhere["allowed_workflows"] is None

    assert await _restrict(stack, org, "owner", None) == 200
    actions = [a for a, _, _ in await audit_actions(engine, org.id)]
    assert actions.count("org.workflows_restricted") == 2
    assert "access.denied" in actions
