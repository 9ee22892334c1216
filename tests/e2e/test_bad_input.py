"""Bad input and refused requests: each gets a clear problem+json and leaves no partial state."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import Role
from blocks.infra.db import bind_org, session_factory
from blocks.models.identity.api_keys import ApiKey, revoke_api_key
from tests.support import (
    EXPENSE,
    Org,
    Stack,
    audit_actions,
    make_org,
    row_counts,
    wait_for_status,
)


def _problem(response, status: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    return body  # type: ignore[no-any-return]


@pytest.fixture
async def org(engine: AsyncEngine) -> Org:
    return await make_org(engine)


async def _started_run(http, org: Org) -> str:  # type: ignore[no-untyped-def]
    response = await http.post(
        "/v1/runs",
        json={"workflow": "expense_approval", "input": EXPENSE},
        headers=org["operator"].headers,
    )
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    await wait_for_status(
        http, run_id, org["operator"].headers, status="running", stage="awaiting_approval"
    )
    return run_id


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ('{"workflow": "expense_approval", "input": ', 400, None),
        ('{"workflow": "expense_approval", "input": {}, "priority": 1}', 422, "priority"),
        ('{"workflow": "payroll", "input": {}}', 422, "workflow"),
        (
            '{"workflow": "expense_approval", "input": {"amount": "-5", "currency": "EUR", "description": "x"}}',
            422,
            "input.amount",
        ),
        (
            '{"workflow": "expense_approval", "input": {"amount": "5", "currency": "EUR", "description": "x", "colour": "red"}}',
            422,
            "input.colour",
        ),
        (
            '{"workflow": "expense_approval", "input": {"amount": "5", "currency": "euro", "description": "x"}}',
            422,
            "input.currency",
        ),
        ('{"input": {}}', 422, "workflow"),
        ("[]", 422, None),
    ],
)
async def test_bad_start_requests_are_refused_and_leave_nothing(
    stack: Stack, engine: AsyncEngine, org: Org, body: str, status: int, field: str | None
) -> None:
    before = await row_counts(engine, org.id)
    async with stack.http() as http:
        response = await http.post(
            "/v1/runs",
            content=body,
            headers={**org["operator"].headers, "content-type": "application/json"},
        )
    problem = _problem(response, status)
    if field is not None:
        assert field in [e["field"] for e in problem["errors"]]  # type: ignore[union-attr]
        assert field in str(problem["detail"])
    assert await row_counts(engine, org.id) == before


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer nonsense", "Basic dXNlcjpwYXNz", "Bearer blk_0000000000000000_wrong"],
)
async def test_missing_or_invalid_key_is_401(stack: Stack, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with stack.http() as http:
        response = await http.get("/v1/runs", headers=headers)
    _problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


async def test_a_right_lookup_with_a_wrong_secret_is_401(stack: Stack, org: Org) -> None:
    key = org["operator"].key
    tampered = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    async with stack.http() as http:
        _problem(await http.get("/v1/runs", headers={"Authorization": f"Bearer {tampered}"}), 401)


async def test_revoked_key_is_401(stack: Stack, engine: AsyncEngine, org: Org) -> None:
    async with stack.http() as http:
        assert (
            await http.get("/v1/audit-events", headers=org["auditor"].headers)
        ).status_code == 200
        async with session_factory(engine)() as session, session.begin():
            ctx = OrgContext(
                org_id=OrgId(org.id), user_id=None, roles=(Role.OWNER,), auth=AuthMethod.SYSTEM
            )
            await bind_org(session, org.id)  # api_keys has row-level security
            key = (
                await session.exec(select(ApiKey).where(ApiKey.user_id == org["auditor"].user_id))
            ).one()
            assert await revoke_api_key(ctx, session, key.id)
        _problem(await http.get("/v1/audit-events", headers=org["auditor"].headers), 401)


async def test_role_without_permission_is_403_and_audited(
    stack: Stack, engine: AsyncEngine, org: Org
) -> None:
    before_runs, _ = await row_counts(engine, org.id)
    async with stack.http() as http:
        response = await http.post(
            "/v1/runs",
            json={"workflow": "expense_approval", "input": EXPENSE},
            headers=org["auditor"].headers,
        )
        _problem(response, 403)
        _problem(await http.get("/v1/audit-events", headers=org["operator"].headers), 403)
        _problem(await http.get("/v1/runs", headers=org["nobody"].headers), 403)
    runs, _ = await row_counts(engine, org.id)
    assert runs == before_runs
    denied = [a for a in await audit_actions(engine, org.id) if a[0] == "access.denied"]
    assert denied == [
        ("access.denied", "denied", "missing permission run:start"),
        ("access.denied", "denied", "missing permission audit:read"),
        ("access.denied", "denied", "missing permission run:read"),
    ]


async def test_ineligible_deciders_are_403_and_audited(
    stack: Stack, engine: AsyncEngine, org: Org
) -> None:
    async with stack.http() as http:
        run_id = await _started_run(http, org)
        decide = f"/v1/runs/{run_id}/steps/approve/decisions"
        # The operator may not decide steps at all.
        _problem(
            await http.post(decide, json={"decision": "approve"}, headers=org["operator"].headers),
            403,
        )
        # The owner may decide in general, but is not an approver of this step.
        body = _problem(
            await http.post(decide, json={"decision": "approve"}, headers=org["owner"].headers), 403
        )
        assert "not an approver" in str(body["detail"])
        # Someone who is both requester and approver cannot approve their own run.
        own = await http.post(
            "/v1/runs",
            json={"workflow": "expense_approval", "input": EXPENSE},
            headers=org["operator_approver"].headers,
        )
        own_id = own.json()["id"]
        await wait_for_status(
            http, own_id, org["operator"].headers, status="running", stage="awaiting_approval"
        )
        body = _problem(
            await http.post(
                f"/v1/runs/{own_id}/steps/approve/decisions",
                json={"decision": "approve"},
                headers=org["operator_approver"].headers,
            ),
            403,
        )
        assert "requester" in str(body["detail"])
        # Nothing was decided: both runs still wait.
        for rid in (run_id, own_id):
            await wait_for_status(
                http, rid, org["operator"].headers, status="running", stage="awaiting_approval"
            )
    reasons = [a[2] for a in await audit_actions(engine, org.id) if a[0] == "access.denied"]
    assert reasons == [
        "missing permission step:decide",
        "decision refused: not_an_approver",
        "decision refused: self_approval",
    ]


async def test_decisions_on_closed_or_unknown_steps(
    stack: Stack, engine: AsyncEngine, org: Org
) -> None:
    async with stack.http() as http:
        run_id = await _started_run(http, org)
        decide = f"/v1/runs/{run_id}/steps/approve/decisions"
        _problem(
            await http.post(
                f"/v1/runs/{run_id}/steps/nope/decisions",
                json={"decision": "approve"},
                headers=org["approver"].headers,
            ),
            404,
        )
        body = _problem(
            await http.post(decide, json={"decision": "maybe"}, headers=org["approver"].headers),
            422,
        )
        assert [e["field"] for e in body["errors"]] == ["decision"]  # type: ignore[union-attr]
        _problem(
            await http.post(
                decide, json={"decision": "approve", "extra": 1}, headers=org["approver"].headers
            ),
            422,
        )
        assert (
            await http.post(decide, json={"decision": "approve"}, headers=org["approver"].headers)
        ).status_code == 200
        # A second approver, or the same one again, finds the step closed.
        _problem(
            await http.post(decide, json={"decision": "reject"}, headers=org["approver2"].headers),
            409,
        )
        await wait_for_status(http, run_id, org["operator"].headers, status="completed")
        # The same person re-sending the same decision (a client retry) gets the same answer...
        again = await http.post(
            decide, json={"decision": "approve"}, headers=org["approver"].headers
        )
        assert again.status_code == 200, again.text
        assert again.json()["decided_by"] == str(org["approver"].user_id)
        # ...but cannot change it.
        body = _problem(
            await http.post(decide, json={"decision": "reject"}, headers=org["approver"].headers),
            409,
        )
        assert body["code"] == "already_decided"
    actions = [a[0] for a in await audit_actions(engine, org.id)]
    assert actions.count("step.decided") == 1
    assert actions.count("run.completed") == 1
