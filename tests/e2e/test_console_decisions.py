"""Deciding from the console's step page over real HTTP: the decision goes through the API's own
route (refusals in its words and status, nothing changed), a form from another site is refused
and audited, and a step's decision form is generated from its published schema."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import (
    EXPENSE,
    Org,
    Stack,
    audit_actions,
    make_org,
    signed_in_headers,
    wait_for_status,
)

EVIL = "https://evil.example"


async def _start(http: httpx.AsyncClient, org: Org, who: str, workflow: str, params: Any) -> str:
    started = await http.post(
        "/v1/runs", json={"workflow": workflow, "input": params}, headers=org[who].headers
    )
    assert started.status_code == 201, started.text
    run_id: str = started.json()["id"]
    await wait_for_status(
        http, run_id, org[who].headers, status="running", stage="awaiting_approval"
    )
    return run_id


async def _decided(http: httpx.AsyncClient, org: Org, run_id: str) -> list[dict[str, Any]]:
    run = (await http.get(f"/v1/runs/{run_id}", headers=org["owner"].headers)).json()
    return [e for s in run["steps"] for e in s["history"] if e["event"] == "decided"]


async def test_refused_decisions_show_the_api_message_and_change_nothing(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        run_id = await _start(http, org, "operator_approver", "expense_approval", EXPENSE)
        page_url = f"/console/runs/{run_id}/steps/approve"
        approver = await signed_in_headers(stack, org, "approver")
        requester = await signed_in_headers(stack, org, "operator_approver")

        page = await http.get(page_url, headers=approver)
        assert page.status_code == 200, page.text
        assert "Expense of 120.50 EUR: Team lunch" in page.text
        assert 'value="approve"' in page.text
        assert '<label for="decision-comment">' in page.text

        # From another site, with the approver's own cookie: refused before anything is read.
        evil = await http.post(
            page_url, data={"decision": "approve"}, headers={**approver, "Origin": EVIL}
        )
        assert evil.status_code == 403
        assert "must come from this site" in evil.text
        # The requester may read the run but not approve their own request: the API says so.
        own = await http.post(
            page_url, data={"decision": "approve", "comment": "mine"}, headers=requester
        )
        assert own.status_code == 403
        assert "the run&#39;s requester cannot approve their own request" in own.text
        assert "Expense of 120.50 EUR: Team lunch" in own.text  # the page, shown again
        assert "mine</textarea>" in own.text
        odd = await http.post(page_url, data={"decision": "maybe"}, headers=approver)
        assert odd.status_code == 422
        assert "decision" in odd.text
        assert await _decided(http, org, run_id) == []
        reasons = [r for a, _, r in await audit_actions(engine, org.id) if a == "access.denied"]
        assert any(r and r.startswith("csrf: cross-origin") for r in reasons)
        assert "decision refused: self_approval" in reasons

        approved = await http.post(
            page_url,
            data={"decision": "approve", "comment": "Within **budget**"},
            headers=approver,
        )
        assert approved.status_code == 303, approved.text
        assert approved.headers["location"] == "/console/inbox?done=approved"
        done = await wait_for_status(http, run_id, org["operator"].headers, status="completed")
        assert done["result"]["status"] == "approved"
        inbox = await http.get(approved.headers["location"], headers=approver)
        assert "Your approval is recorded." in inbox.text

        again = await http.post(page_url, data={"decision": "reject"}, headers=approver)
        assert again.status_code == 409
        assert "you already decided approve on this step" in again.text
        other = await signed_in_headers(stack, org, "approver2")
        late = await http.post(page_url, data={"decision": "reject"}, headers=other)
        assert late.status_code == 409
        assert "the step is already closed" in late.text
        [vote] = await _decided(http, org, run_id)
        assert vote["decision"] == "approve"


async def _wait_for_step(http: httpx.AsyncClient, org: Org, run_id: str, step: str) -> None:
    for _ in range(400):
        run = (await http.get(f"/v1/runs/{run_id}", headers=org["operator"].headers)).json()
        if [s["step_id"] for s in run.get("pending_steps", [])] == [step]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"step {step} never opened")


async def test_the_decision_form_comes_from_the_step_schema(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    purchase = {
        "amount": "25000.00",
        "description": "Annual licence",
        "finance": [str(org["approver2"].user_id), str(org["operator_approver"].user_id)],
        "legal": [str(org["admin"].user_id)],
        "director": str(org["approver"].user_id),
    }
    async with stack.http() as http:
        run_id = await _start(http, org, "operator", "purchase_approval", purchase)
        for who in ("approver2", "operator_approver", "admin"):
            voted = await http.post(
                f"/v1/runs/{run_id}/steps/review/decisions",
                json={
                    "decision": "approve",
                    "comment": f"<img src=x onerror=alert(1)>{who} <strong>ok</strong>",
                },
                headers=org[who].headers,
            )
            assert voted.status_code == 200, voted.text
        await _wait_for_step(http, org, run_id, "director")
        director = await signed_in_headers(stack, org, "approver")
        page_url = f"/console/runs/{run_id}/steps/director"

        page = await http.get(page_url, headers=director)
        assert page.status_code == 200, page.text
        assert '<label for="field-budget_code">' in page.text
        assert 'name="field.budget_code"' in page.text
        review = await http.get(f"/console/runs/{run_id}/steps/review", headers=director)
        assert review.status_code == 200
        assert review.text.count("<strong>approve</strong>") == 3  # the prior votes
        assert 'value="approve"' not in review.text  # a closed step has no form
        assert "admin <strong>ok</strong>" in review.text  # comments are rich text, made inert
        assert "onerror" not in review.text

        bad = await http.post(
            page_url, data={"decision": "approve", "field.budget_code": "bad"}, headers=director
        )
        assert bad.status_code == 422, bad.text
        assert "the decision form is invalid" in bad.text
        assert 'id="field-budget_code-error"' in bad.text
        assert 'value="bad"' in bad.text
        assert await _director_still_pending(http, org, run_id)

        good = await http.post(
            page_url,
            data={"decision": "approve", "field.budget_code": "FI-2024"},
            headers=director,
        )
        assert good.status_code == 303, good.text
        done = await wait_for_status(http, run_id, org["operator"].headers, status="completed")
        assert done["result"] == {"status": "approved", "budget_code": "FI-2024"}


async def _director_still_pending(http: httpx.AsyncClient, org: Org, run_id: str) -> bool:
    run = (await http.get(f"/v1/runs/{run_id}", headers=org["operator"].headers)).json()
    return [s["step_id"] for s in run["pending_steps"]] == ["director"]
