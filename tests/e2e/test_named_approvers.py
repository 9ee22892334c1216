"""Approvers named in a run's input are resolved on the server: refused at the start (422 naming the
field, nothing created) unless each is an active member allowed to decide and not the requester;
forbidden altogether by the organization's setting (audited); and checked again when their step
opens, so a member deactivated meanwhile no longer counts (the step escalates or closes)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.core.approvals import search_attributes as sa
from blocks.infra.crypto.signing import parse_signing_key
from blocks.infra.db import session_factory
from blocks.models.approvals.catalogue import publish
from blocks.workers.main import build_worker, catalogue_entries
from tests.e2e.approver_workflows import LateReview
from tests.support import (
    EXPENSE,
    SIGNING_KEY,
    Org,
    Stack,
    audit_actions,
    make_org,
    row_counts,
    wait_for_status,
)


def _purchase(org: Org, **overrides: Any) -> dict[str, Any]:
    return {
        "amount": "25000.00",
        "description": "Annual licence",
        "finance": [str(org["approver"].user_id), str(org["approver2"].user_id)],
        "legal": [str(org["admin"].user_id)],
        "director": str(org["owner"].user_id),
        **overrides,
    }


async def _start(
    http: httpx.AsyncClient, org: Org, params: dict[str, Any], workflow: str = "purchase_approval"
) -> httpx.Response:
    return await http.post(
        "/v1/runs", json={"workflow": workflow, "input": params}, headers=org["operator"].headers
    )


def _refusals(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_approver", body
    return {e["field"]: e["reason"] for e in body["errors"]}


async def _workflows_of(stack: Stack, org: Org) -> list[str]:
    query = f"{sa.ORG_ID.name} = '{org.id}'"
    return [w.id async for w in stack.temporal.list_workflows(query)]


async def _events(http: httpx.AsyncClient, org: Org, run_id: str) -> list[dict[str, Any]]:
    response = await http.get(f"/v1/runs/{run_id}/audit-events", headers=org["auditor"].headers)
    assert response.status_code == 200, response.text
    return response.json()["events"]  # type: ignore[no-any-return]


async def _decide(
    http: httpx.AsyncClient, org: Org, run_id: str, step: str, who: str, **body: Any
) -> httpx.Response:
    return await http.post(
        f"/v1/runs/{run_id}/steps/{step}/decisions",
        json={"decision": "approve", **body},
        headers=org[who].headers,
    )


async def _pending(http: httpx.AsyncClient, org: Org, run_id: str, step: str) -> dict[str, Any]:
    """The step once it is open (a step opens moments after the previous one closed)."""
    for _ in range(200):
        body = (await http.get(f"/v1/runs/{run_id}", headers=org["operator"].headers)).json()
        for pending in body.get("pending_steps") or []:
            if pending["step_id"] == step:
                return pending  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError(f"step {step} of run {run_id} never opened")


async def test_each_bad_approver_is_refused_at_the_start_naming_its_field(
    stack: Stack, engine: AsyncEngine
) -> None:
    org, other = await make_org(engine), await make_org(engine)
    operator = str(org["operator"].user_id)
    async with stack.http() as http:
        deactivated = await http.post(
            f"/v1/members/{org['operator_approver'].user_id}/deactivate",
            headers=org["admin"].headers,
        )
        assert deactivated.status_code == 200, deactivated.text
        cases = [
            # Someone of another organization is no member here; nor is an unknown id.
            ({"director": str(other["owner"].user_id)}, "input.director", "no member"),
            ({"director": str(uuid.uuid4())}, "input.director", "no member"),
            ({"legal": [operator]}, "input.legal.0", "requester"),
            ({"director": str(org["auditor"].user_id)}, "input.director", "step:decide"),
            ({"director": str(org["nobody"].user_id)}, "input.director", "step:decide"),
            ({"legal": [str(org["operator_approver"].user_id)]}, "input.legal.0", "deactivated"),
            # Another spelling of a real member's id would never match them in a step.
            ({"director": str(org["owner"].user_id).upper()}, "input.director", "member id"),
        ]
        for overrides, field, reason in cases:
            refused = _refusals(await _start(http, org, _purchase(org, **overrides)))
            assert list(refused) == [field], (overrides, refused)
            assert reason in refused[field], (overrides, refused)
        # Every bad field at once, one error each; the good ones are not named.
        several = _refusals(
            await _start(
                http,
                org,
                _purchase(
                    org,
                    finance=[str(org["approver"].user_id), operator],
                    legal=[str(org["auditor"].user_id)],
                    director=str(uuid.uuid4()),
                ),
            )
        )
        assert set(several) == {"input.finance.1", "input.legal.0", "input.director"}
        contract = _refusals(
            await _start(
                http,
                org,
                {"counterparty": "Acme", "legal": [operator], "security": [operator]},
                "contract_review",
            )
        )
        assert set(contract) == {"input.legal.0", "input.security.0"}

        # Nothing was created: no run row, no event, no workflow.
        assert await row_counts(engine, org.id) == (0, 1)  # the deactivation's event only
        started = await _start(http, org, _purchase(org, finance=[], finance_group="finance"))
        assert started.status_code == 201, started.text
        # Visibility lags: once it lists the one run started, it would list any other too.
        for _ in range(200):
            if workflows := await _workflows_of(stack, org):
                break
            await asyncio.sleep(0.05)
        assert workflows == [f"run-{started.json()['id']}"]
    runs, _ = await row_counts(engine, org.id)
    assert runs == 1


async def test_the_organization_may_forbid_approvers_named_in_input(
    stack: Stack, engine: AsyncEngine
) -> None:
    org, other = await make_org(engine), await make_org(engine)
    async with stack.http() as http:

        async def setting(who: str, value: object) -> httpx.Response:
            return await http.put(
                "/v1/org/approvals", json={"approvers_from_input": value}, headers=org[who].headers
            )

        read = await http.get("/v1/org/approvals", headers=org["approver"].headers)
        assert read.json() == {"approvers_from_input": True}
        assert (await setting("operator", False)).status_code == 403
        assert (await setting("admin", "no")).status_code == 422
        assert (await setting("admin", 0)).status_code == 422
        changed = await setting("admin", False)
        assert changed.status_code == 200, changed.text
        assert changed.json() == {"approvers_from_input": False}
        assert (await setting("admin", False)).status_code == 200  # no change, no event
        read = await http.get("/v1/org/approvals", headers=org["approver"].headers)
        assert read.json() == {"approvers_from_input": False}

        refused = _refusals(await _start(http, org, _purchase(org)))
        assert set(refused) == {"input.finance", "input.legal", "input.director"}
        assert all("only roles and member groups" in r for r in refused.values())
        # A workflow that names nobody starts as before; another organization is unaffected.
        expense = await http.post(
            "/v1/runs",
            json={"workflow": "expense_approval", "input": EXPENSE},
            headers=org["operator"].headers,
        )
        assert expense.status_code == 201, expense.text
        elsewhere = await _start(http, other, _purchase(other))
        assert elsewhere.status_code == 201, elsewhere.text

        assert (await setting("owner", True)).status_code == 200
        again = await _start(http, org, _purchase(org))
        assert again.status_code == 201, again.text

        events = (
            await http.get("/v1/audit-events?limit=1000", headers=org["auditor"].headers)
        ).json()["events"]
    changes = [e for e in events if e["action"] == "org.approvals_changed"]
    assert [e["data"]["approvers_from_input"] for e in changes] == [
        {"before": True, "after": False},
        {"before": False, "after": True},
    ]
    assert {e["actor_id"] for e in changes} == {
        str(org["admin"].user_id),
        str(org["owner"].user_id),
    }
    actions = [a for a, _, _ in await audit_actions(engine, org.id)]
    assert actions.count("access.denied") == 1  # the operator's attempt


async def test_a_director_deactivated_before_their_step_opens_no_longer_counts(
    stack: Stack, engine: AsyncEngine
) -> None:
    """The director step names only the director and has no escalation: it closes as expired."""
    org = await make_org(engine)
    director = org["operator_approver"]
    async with stack.http() as http:
        started = await _start(http, org, _purchase(org, director=str(director.user_id)))
        assert started.status_code == 201, started.text
        run_id = started.json()["id"]
        await _pending(http, org, run_id, "review")
        deactivated = await http.post(
            f"/v1/members/{director.user_id}/deactivate", headers=org["admin"].headers
        )
        assert deactivated.status_code == 200, deactivated.text
        for who in ("approver", "approver2", "admin"):
            decided = await _decide(http, org, run_id, "review", who)
            assert decided.status_code == 200, decided.text
        done = await wait_for_status(http, run_id, org["operator"].headers, status="completed")
        assert done["result"] == {"status": "expired", "step": "director"}
        events = await _events(http, org, run_id)

    actions = [e["action"] for e in events]
    assert actions[-5:] == [
        "step.closed",  # review, approved
        "step.opened",
        "step.approvers_dropped",
        "step.closed",
        "run.completed",
    ]
    dropped = next(e for e in events if e["action"] == "step.approvers_dropped")
    assert dropped["target_id"] == "director"
    assert dropped["data"]["dropped"] == [
        {"user_id": str(director.user_id), "reason": "not_an_active_member_allowed_to_decide"}
    ]
    assert dropped["data"]["approvers_after"] == []
    closed = [e for e in events if e["action"] == "step.closed"][-1]
    assert closed["target_id"] == "director"
    assert closed["reason"] == "no_eligible_approvers"
    assert closed["data"]["state"] == "expired"


@asynccontextmanager
async def _late_review_worker(stack: Stack) -> AsyncIterator[None]:
    """A worker serving the test workflow on a queue of its own, published as any worker does."""
    task_queue = f"late-review-{uuid.uuid4().hex[:8]}"
    async with session_factory(stack.engine)() as session, session.begin():
        entries = catalogue_entries([LateReview], task_queue=task_queue)
        await publish(session, entries, worker=f"tests@{task_queue}")
    worker = build_worker(
        stack.temporal,
        stack.engine,
        task_queue=task_queue,
        signer=parse_signing_key(SIGNING_KEY),
        workflows=[LateReview],
    )
    running = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        await worker.shutdown()
        await running


async def test_a_step_nobody_named_can_decide_escalates_at_once(
    stack: Stack, engine: AsyncEngine
) -> None:
    """The review names one reviewer, deactivated before it opens: its escalation takes over now
    (the backup decides), instead of the step waiting 20 h for the escalation's timer."""
    org = await make_org(engine)
    reviewer, backup = org["approver2"], org["admin"]
    params = {"reviewers": [str(reviewer.user_id)], "backup": str(backup.user_id)}
    async with _late_review_worker(stack), stack.http() as http:
        started = await _start(http, org, params, "tests_late_review")
        assert started.status_code == 201, started.text
        run_id = started.json()["id"]
        await _pending(http, org, run_id, "first")
        deactivated = await http.post(
            f"/v1/members/{reviewer.user_id}/deactivate", headers=org["admin"].headers
        )
        assert deactivated.status_code == 200, deactivated.text
        assert (await _decide(http, org, run_id, "first", "approver")).status_code == 200

        review = await _pending(http, org, run_id, "review")
        assert review["approvers"] == [f"user:{backup.user_id}"]
        decided = await _decide(http, org, run_id, "review", "admin")
        assert decided.status_code == 200, decided.text
        assert decided.json()["state"] == "approved"
        done = await wait_for_status(http, run_id, org["operator"].headers, status="completed")
        assert done["result"] == {"status": "approved", "deciders": [str(backup.user_id)]}
        events = await _events(http, org, run_id)

    review_events = [e["action"] for e in events if e["target_id"] == "review"]
    assert review_events == [
        "step.opened",
        "step.approvers_dropped",
        "step.escalated",
        "step.decided",
        "step.closed",
    ]
    escalated = next(e for e in events if e["action"] == "step.escalated")
    assert escalated["reason"] == "no_eligible_approvers"
    assert escalated["data"]["approvers_before"] == [f"user:{reviewer.user_id}"]
    assert escalated["data"]["approvers_after"] == [f"user:{backup.user_id}"]
    dropped = next(e for e in events if e["action"] == "step.approvers_dropped")
    assert dropped["data"]["dropped"][0]["user_id"] == str(reviewer.user_id)
    assert dropped["data"]["outcome"] == "escalated"


async def test_a_member_deactivated_while_the_step_waits_cannot_decide_it(
    stack: Stack, engine: AsyncEngine
) -> None:
    """Deactivation revokes the member's keys and sessions at once, so an open step's named
    approver who is deactivated can no longer act on it."""
    org = await make_org(engine)
    async with stack.http() as http:
        started = await _start(http, org, _purchase(org))
        assert started.status_code == 201, started.text
        run_id = started.json()["id"]
        await _pending(http, org, run_id, "review")
        assert (
            await http.post(
                f"/v1/members/{org['approver2'].user_id}/deactivate", headers=org["admin"].headers
            )
        ).status_code == 200
        refused = await _decide(http, org, run_id, "review", "approver2")
        assert refused.status_code == 401, refused.text
