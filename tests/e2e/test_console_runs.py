"""The operators' console pages over HTTP (as a browser sends them): the runs list and a run's
page, starting from the generated form and cancelling, through the API's own route functions;
refusals re-render the form with the API's words and change nothing; a role without `run:read`
gets the 403 page and an audit event; a form posted from another origin is refused (CSRF)."""

from __future__ import annotations

import re
import uuid

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import (
    EXPENSE,
    Org,
    Stack,
    audit_actions,
    make_org,
    row_counts,
    signed_in_headers,
    wait_for_status,
)


async def _waiting_run(http: httpx.AsyncClient, org: Org) -> str:
    started = await http.post(
        "/v1/runs",
        json={"workflow": "expense_approval", "input": EXPENSE},
        headers=org["operator"].headers,
    )
    assert started.status_code == 201, started.text
    run_id: str = started.json()["id"]
    await wait_for_status(
        http, run_id, org["operator"].headers, status="running", stage="awaiting_approval"
    )
    return run_id


async def test_a_role_without_run_read_gets_the_403_page_and_is_audited(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    nobody = await signed_in_headers(stack, org, "nobody")
    async with stack.http() as http:
        for path in ("/console/runs", f"/console/runs/{uuid.uuid4()}", "/console/runs/new"):
            page = await http.get(path, headers=nobody)
            assert page.status_code == 403, (path, page.text)
            assert page.headers["content-type"].startswith("text/html")
            assert "your roles do not grant" in page.text
    denied = [
        reason
        for action, _, reason in await audit_actions(engine, org.id)
        if action == "access.denied"
    ]
    assert denied == [
        "missing permission run:read",
        "missing permission run:read",
        "missing permission run:start",
    ]


async def test_the_list_and_the_run_page_show_the_run_and_its_step(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    operator = await signed_in_headers(stack, org, "operator")
    async with stack.http() as http:
        run_id = await _waiting_run(http, org)
        page = await http.get(f"/console/runs/{run_id}", headers=operator)
        assert page.status_code == 200, page.text
        assert "Expense of 120.50 EUR: Team lunch" in page.text
        assert f'href="/console/runs/{run_id}/steps/approve"' in page.text
        assert "<strong>Opened</strong>" in page.text
        assert "role:approver" in page.text
        assert 'data-confirm="Cancel this run?' in page.text
        # Visibility is eventually consistent: the new run is listed a moment later.
        for _ in range(100):
            listed = await http.get(
                "/console/runs",
                params={"status": "awaiting_approval", "workflow": "expense_approval"},
                headers=operator,
            )
            assert listed.status_code == 200, listed.text
            if run_id in listed.text:
                break
        assert f'href="/console/runs/{run_id}"' in listed.text
        # A filter the API refuses is shown beside the form, with the API's reason.
        bad = await http.get(
            "/console/runs", params={"workflow": "x y", "requested_by": ""}, headers=operator
        )
        assert bad.status_code == 422
        assert "workflow: not a workflow name" in bad.text
        unknown = await http.get(f"/console/runs/{uuid.uuid4()}", headers=operator)
        assert unknown.status_code == 404
        assert "run not found" in unknown.text


async def test_starting_from_the_form_and_refusals_that_start_nothing(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    operator = await signed_in_headers(stack, org, "operator")
    async with stack.http() as http:
        picker = await http.get("/console/runs/new", headers=operator)
        assert picker.status_code == 200
        assert 'href="/console/runs/new?workflow=expense_approval"' in picker.text
        form = await http.get(
            "/console/runs/new", params={"workflow": "expense_approval"}, headers=operator
        )
        assert form.status_code == 200
        assert 'name="field.currency"' in form.text
        key = re.search(r'name="idempotency_key" value="([0-9a-f-]{36})"', form.text)
        assert key is not None
        fields = {
            "workflow": "expense_approval",
            "idempotency_key": key.group(1),
            "field.amount": "120.50",
            "field.currency": "eur",
            "field.description": "Team lunch",
        }
        before = await row_counts(engine, org.id)
        refused = await http.post("/console/runs/new", data=fields, headers=operator)
        assert refused.status_code == 422, refused.text
        assert 'id="field-currency-error"' in refused.text
        assert "input.currency" in refused.text
        assert 'value="eur"' in refused.text  # what was typed is shown again
        assert await row_counts(engine, org.id) == before

        started = await http.post(
            "/console/runs/new", data={**fields, "field.currency": "EUR"}, headers=operator
        )
        assert started.status_code == 303, started.text
        location = started.headers["location"]
        assert location.endswith("?done=started")
        run_id = location.removeprefix("/console/runs/").split("?")[0]
        # Sent twice (a double click): the same run, not a second one.
        again = await http.post(
            "/console/runs/new", data={**fields, "field.currency": "EUR"}, headers=operator
        )
        assert again.status_code == 303
        assert again.headers["location"] == location
        runs, _ = await row_counts(engine, org.id)
        assert runs == before[0] + 1
        body = await wait_for_status(http, run_id, org["operator"].headers, status="running")
        assert body["workflow"] == "expense_approval"
        shown = await http.get(location, headers=operator)
        assert "The run was started." in shown.text


async def test_cancel_from_the_run_page_and_from_another_origin(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    operator = await signed_in_headers(stack, org, "operator")
    async with stack.http() as http:
        run_id = await _waiting_run(http, org)
        cancel = f"/console/runs/{run_id}/cancel"
        forged = await http.post(
            cancel,
            data={"reason": "forged"},
            headers={**operator, "Origin": "https://evil.example"},
        )
        assert forged.status_code == 403
        assert forged.headers["content-type"].startswith("text/html")
        approver = await signed_in_headers(stack, org, "approver")
        not_theirs = await http.post(cancel, data={"reason": "no"}, headers=approver)
        assert not_theirs.status_code == 403
        assert "your roles do not grant run:cancel" in not_theirs.text
        empty = await http.post(cancel, data={"reason": " "}, headers=operator)
        assert empty.status_code == 422
        assert "reason" in empty.text
        await wait_for_status(http, run_id, org["operator"].headers, status="running")
        actions = await audit_actions(engine, org.id)
        assert ("access.denied", "denied", "csrf: cross-origin request refused") in actions
        assert ("access.denied", "denied", "missing permission run:cancel") in actions
        assert "run.cancel_requested" not in [a for a, _, _ in actions]

        done = await http.post(cancel, data={"reason": "duplicate request"}, headers=operator)
        assert done.status_code == 303, done.text
        assert done.headers["location"] == f"/console/runs/{run_id}?done=cancel_requested"
        await wait_for_status(http, run_id, org["operator"].headers, status="canceled")
        # A run that has ended: the API's refusal on the run page, with its status.
        late = await http.post(cancel, data={"reason": "again"}, headers=operator)
        assert late.status_code == 409
        assert "the run has already ended" in late.text
