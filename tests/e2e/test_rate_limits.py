"""Rate limits through the real API: 429 with Retry-After and problem+json, audited once, per
credential and per client address, where the address honours X-Forwarded-For only from a
trusted proxy. Each stack here is started with low limits of its own (the session's are high).
With the counters' shared store down, sign-in, token and 2FA endpoints answer 503; the rest of
the API stays up (and says so in the log)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.infra.db import bind_org, session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from tests.support import (
    Stack,
    audit_actions,
    cookie_headers,
    free_port,
    make_org,
    running_stack,
    start_test_session,
)

LOW_LIMITS = {
    "rate_limit_api_credential": "5/minute",
    "rate_limit_api_ip": "1000/minute",
    "rate_limit_invalid_ip": "3/minute",
}
EXCEEDED = "rate_limit.exceeded"


@pytest.fixture(scope="module")
async def behind_proxy(
    engine: AsyncEngine, temporal_env: WorkflowEnvironment, postgres: PostgresCredentials
) -> AsyncIterator[Stack]:
    """The API with low limits, believing X-Forwarded-For from 127.0.0.1 (a local proxy)."""
    async with running_stack(
        engine=engine,
        temporal=temporal_env.client,
        database_url=postgres.url(),
        task_queue=f"blocks-limits-{uuid.uuid4().hex[:8]}",
        with_worker=False,
        extra_settings={**LOW_LIMITS, "trusted_proxies": ["127.0.0.1"]},
    ) as running:
        yield running


@pytest.fixture(scope="module")
async def exposed(
    engine: AsyncEngine, temporal_env: WorkflowEnvironment, postgres: PostgresCredentials
) -> AsyncIterator[Stack]:
    """The API with low limits and no trusted proxy (the default)."""
    async with running_stack(
        engine=engine,
        temporal=temporal_env.client,
        database_url=postgres.url(),
        task_queue=f"blocks-limits-{uuid.uuid4().hex[:8]}",
        with_worker=False,
        extra_settings=LOW_LIMITS,
    ) as running:
        yield running


def _too_many(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    body = response.json()
    assert body["status"] == 429
    assert body["code"] == "rate_limited"
    assert body["title"] == "Too Many Requests"
    assert f"try again in {retry_after} second" in body["detail"]
    return body  # type: ignore[no-any-return]


def _exceeded(actions: list[tuple[str, str, str | None]], rule: str) -> int:
    return actions.count((EXCEEDED, "denied", f"rate limit {rule} exceeded"))


async def _exceeded_data(engine: AsyncEngine, org_id: uuid.UUID) -> list[dict[str, Any]]:
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org_id)
        rows = await session.exec(  # type: ignore[call-overload]
            text("SELECT data FROM audit_events WHERE action = :action ORDER BY seq"),
            params={"action": EXCEEDED},
        )
        return [dict(r[0]) for r in rows.all()]


async def test_sixth_request_with_one_key_is_refused_and_audited_once(
    behind_proxy: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with behind_proxy.http() as http:
        for _ in range(5):
            response = await http.get("/v1/runs", headers=org["operator"].headers)
            assert response.status_code == 200, response.text
        body = _too_many(await http.get("/v1/runs", headers=org["operator"].headers))
        assert "credential" in str(body["detail"])
        # Still refused; a second refusal in the same window is not audited again.
        _too_many(await http.get("/v1/runs", headers=org["operator"].headers))
        # Another key of the same organization, from the same address, is unaffected.
        response = await http.get("/v1/runs", headers=org["auditor"].headers)
        assert response.status_code == 200, response.text

    actions = await audit_actions(engine, org.id)
    assert _exceeded(actions, "api_credential") == 1
    [data] = await _exceeded_data(engine, org.id)
    assert data["rule"] == "api_credential"
    assert data["identifier_kind"] == "credential"
    assert data["identifier"] == data["credential_id"]


async def test_a_burst_of_invalid_bodies_is_refused_after_three(
    behind_proxy: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    client = {"X-Forwarded-For": "203.0.113.10"}
    headers = {**org["operator"].headers, **client}
    async with behind_proxy.http() as http:
        # Two invalid by FastAPI's validation, one by the route's own (a 422 Problem).
        for body in ({}, {"workflow": "expense_approval"}, {"workflow": "payroll", "input": {}}):
            response = await http.post("/v1/runs", json=body, headers=headers)
            assert response.status_code == 422, response.text
        _too_many(await http.post("/v1/runs", json={}, headers=headers))
        # The limit is on invalid requests from the address, whichever key sends them.
        other = {**org["operator_approver"].headers, **client}
        _too_many(await http.post("/v1/runs", json={}, headers=other))

    actions = await audit_actions(engine, org.id)
    assert _exceeded(actions, "invalid_ip") == 1
    [data] = await _exceeded_data(engine, org.id)
    assert data["rule"] == "invalid_ip"
    assert data["identifier_kind"] == "ip"
    # The address is in the event's own (sealed) ip field, not copied into its data.
    assert "203.0.113.10" not in json.dumps(data)


async def test_addresses_from_a_trusted_proxy_count_separately(
    behind_proxy: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with behind_proxy.http() as http:
        first = {**org["operator"].headers, "X-Forwarded-For": "203.0.113.20"}
        for _ in range(3):
            response = await http.post("/v1/runs", json={}, headers=first)
            assert response.status_code == 422, response.text
        _too_many(await http.post("/v1/runs", json={}, headers=first))
        second = {**org["operator_approver"].headers, "X-Forwarded-For": "203.0.113.21"}
        response = await http.post("/v1/runs", json={}, headers=second)
        assert response.status_code == 422, response.text


async def test_a_spoofed_forwarded_address_does_not_reset_the_limit(
    exposed: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with exposed.http() as http:
        for n in range(3):
            spoofed = {**org["operator"].headers, "X-Forwarded-For": f"203.0.113.{30 + n}"}
            response = await http.post("/v1/runs", json={}, headers=spoofed)
            assert response.status_code == 422, response.text
        # A fresh forwarded address from an untrusted peer changes nothing: 127.0.0.1 is over.
        spoofed = {**org["operator_approver"].headers, "X-Forwarded-For": "203.0.113.99"}
        _too_many(await http.post("/v1/runs", json={}, headers=spoofed))

    actions = await audit_actions(engine, org.id)
    assert _exceeded(actions, "invalid_ip") == 1


async def test_a_flood_of_wrong_keys_or_ended_sessions_is_cut_off(behind_proxy: Stack) -> None:
    async with behind_proxy.http() as http:
        client = {"X-Forwarded-For": "203.0.113.77"}
        for n in range(3):
            guess = {"Authorization": f"Bearer blk_{n:016x}_{'x' * 43}", **client}
            assert (await http.get("/v1/runs", headers=guess)).status_code == 401
        _too_many(await http.get("/v1/runs", headers={"Authorization": "Bearer blk_a_b", **client}))
        # Ended (or made-up) session cookies count the same way, per address.
        other = {"X-Forwarded-For": "203.0.113.78"}
        cookie = {"Cookie": "__Host-blocks_session=bls_0000000000000000_nothing", **other}
        for _ in range(3):
            assert (await http.get("/v1/me", headers=cookie)).status_code == 401
        _too_many(await http.get("/v1/me", headers=cookie))


@pytest.fixture
async def store_down(
    engine: AsyncEngine, temporal_env: WorkflowEnvironment, postgres: PostgresCredentials
) -> AsyncIterator[Stack]:
    """The API counting in a shared Redis that cannot be reached (nothing listens there); one
    per test, since a limiter logs the failure once per rule and period."""
    async with running_stack(
        engine=engine,
        temporal=temporal_env.client,
        database_url=postgres.url(),
        task_queue=f"blocks-limits-{uuid.uuid4().hex[:8]}",
        with_worker=False,
        extra_settings={"rate_limit_storage_url": f"redis://127.0.0.1:{free_port()}/0"},
    ) as running:
        yield running


def _unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["code"] == "rate_limit_unavailable"


async def test_with_the_store_down_sign_in_token_and_2fa_endpoints_refuse(
    store_down: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with store_down.http() as http:
        _unavailable(
            await http.post(
                "/v1/auth/signin", json={"email": org["approver"].email, "password": "guess"}
            )
        )
        _unavailable(
            await http.post(
                "/v1/auth/password-reset/confirm",
                json={"token": "brs_0_guess", "password": "a long new passphrase"},
            )
        )
        _unavailable(await http.get("/v1/decision-links/dl_0_guess"))
        session = await start_test_session(engine, org["approver"].user_id, org.id)
        _unavailable(
            await http.post(
                "/v1/auth/signin/2fa",
                json={"code": "123456"},
                headers=cookie_headers(store_down.settings, session),
            )
        )


async def test_with_the_store_down_api_requests_pass_and_the_failure_is_logged(
    store_down: Stack, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    org = await make_org(engine)
    with caplog.at_level(logging.WARNING, logger="blocks.rate_limits"):
        async with store_down.http() as http:
            for _ in range(3):
                response = await http.get("/v1/runs", headers=org["operator"].headers)
                assert response.status_code == 200, response.text
    logged = [r.getMessage() for r in caplog.records if r.name == "blocks.rate_limits"]
    assert any("rule api_credential not enforced" in line for line in logged), logged
