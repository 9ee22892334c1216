"""Brute force against sign-in: wrong passwords, second-factor guesses and emailed-token requests
hit their limits with 429 and Retry-After, per account and per client address, each audited."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pyotp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.api.identity.sessions import SESSION_COOKIE
from blocks.infra.crypto.field_crypto import current_master_keys
from blocks.infra.crypto.passwords import hash_password
from blocks.infra.crypto.totp import new_totp_secret
from blocks.infra.db import session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from tests.mail import SmtpServer
from tests.support import Stack, audit_actions, running_stack

STRONG = "correct horse battery staple violet quarry"
PLATFORM = uuid.UUID(int=0)


@pytest.fixture(scope="module")
async def guarded(
    engine: AsyncEngine,
    temporal_env: WorkflowEnvironment,
    postgres: PostgresCredentials,
    smtp_server: SmtpServer,
) -> AsyncIterator[Stack]:
    """Low sign-in limits; each test claims its own client address through a trusted proxy."""
    async with running_stack(
        engine=engine,
        temporal=temporal_env.client,
        database_url=postgres.url(),
        task_queue=f"blocks-signin-limits-{uuid.uuid4().hex[:8]}",
        with_worker=False,
        extra_settings={
            "rate_limit_signin_account": "3/minute",
            "rate_limit_signin_ip": "6/minute",
            "rate_limit_2fa_account": "3/minute",
            "rate_limit_token_ip": "2/minute",
            "trusted_proxies": ["127.0.0.1"],
            **smtp_server.settings,
        },
    ) as running:
        yield running


def _from(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def _user(engine: AsyncEngine, *, totp_secret: str | None = None) -> str:
    email = f"bf-{uuid.uuid4().hex[:10]}@example.com"
    user_id = uuid.uuid4()
    key_id, sealed = (
        current_master_keys().seal_secret(f"totp:{user_id}", totp_secret)
        if totp_secret
        else (None, None)
    )
    async with session_factory(engine)() as session, session.begin():
        await session.exec(  # type: ignore[call-overload]
            text(
                "INSERT INTO users (id, email, display_name, created_at, email_verified_at,"
                " password_hash, totp_key_id, totp_secret_sealed, totp_enabled_at)"
                " VALUES (:id, :email, 'Bf', now(), now(), :hash, CAST(:key_id AS varchar), :sealed,"
                " CASE WHEN CAST(:key_id AS varchar) IS NULL THEN NULL ELSE now() END)"
            ).bindparams(
                id=user_id, email=email, hash=hash_password(STRONG), key_id=key_id, sealed=sealed
            )
        )
    return email


def _assert_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "rate_limited"


async def _sign_in(
    http: httpx.AsyncClient, email: str, password: str, address: str
) -> httpx.Response:
    return await http.post(
        "/v1/auth/signin", json={"email": email, "password": password}, headers=_from(address)
    )


async def test_wrong_passwords_for_one_account_hit_its_limit_from_any_address(
    guarded: Stack, engine: AsyncEngine
) -> None:
    victim, bystander = await _user(engine), await _user(engine)
    async with guarded.http() as http:
        for n in range(3):
            wrong = await _sign_in(http, victim, f"guess number {n} of many", f"198.51.100.{n}")
            assert wrong.status_code == 401
        # A fourth attempt from yet another address is refused, even with the right password.
        _assert_limited(await _sign_in(http, victim, STRONG, "198.51.100.99"))
        # Another account is not affected.
        assert (await _sign_in(http, bystander, STRONG, "198.51.100.98")).status_code == 200
    events = await audit_actions(engine, PLATFORM)
    assert any(a == "rate_limit.exceeded" and o == "denied" for a, o, _ in events)


async def test_signing_in_correctly_again_and_again_never_meets_the_account_limit(
    guarded: Stack, engine: AsyncEngine
) -> None:
    """Per account only wrong passwords count (the limit is 3 here)."""
    email = await _user(engine)
    async with guarded.http() as http:
        for n in range(5):
            signed = await _sign_in(http, email, STRONG, f"198.18.0.{n}")
            assert signed.status_code == 200, signed.text


async def test_one_address_trying_many_accounts_hits_its_limit(
    guarded: Stack, engine: AsyncEngine
) -> None:
    accounts = [await _user(engine) for _ in range(7)]
    async with guarded.http() as http:
        for email in accounts[:6]:
            assert (
                await _sign_in(http, email, "a wrong password!", "203.0.113.7")
            ).status_code == 401
        _assert_limited(await _sign_in(http, accounts[6], STRONG, "203.0.113.7"))
        # The same account from an address of its own goes through.
        assert (await _sign_in(http, accounts[6], STRONG, "203.0.113.8")).status_code == 200


async def test_second_factor_guesses_are_limited_per_account(
    guarded: Stack, engine: AsyncEngine
) -> None:
    secret = new_totp_secret()
    email = await _user(engine, totp_secret=secret)
    async with guarded.http() as http:
        signed = await _sign_in(http, email, STRONG, "192.0.2.10")
        assert signed.json()["mfa_required"] is True
        token = (
            signed.cookies.get(SESSION_COOKIE)
            or signed.headers["set-cookie"].split(";")[0].split("=", 1)[1]
        )
        headers = {
            "Cookie": f"{SESSION_COOKIE}={token}",
            "Origin": guarded.settings.public_url,
            **_from("192.0.2.10"),
        }
        for guess in ("000000", "111111", "222222"):
            refused = await http.post("/v1/auth/signin/2fa", json={"code": guess}, headers=headers)
            assert refused.status_code == 401
        # Even the right code waits now: guessing a million codes is not on.
        right = await http.post(
            "/v1/auth/signin/2fa", json={"code": pyotp.TOTP(secret).now()}, headers=headers
        )
        _assert_limited(right)


async def test_emailed_token_requests_are_limited_per_address(
    guarded: Stack, engine: AsyncEngine
) -> None:
    email = await _user(engine)
    async with guarded.http() as http:
        for _ in range(2):
            asked = await http.post(
                "/v1/auth/password-reset", json={"email": email}, headers=_from("192.0.2.77")
            )
            assert asked.status_code == 202
        _assert_limited(
            await http.post(
                "/v1/auth/signin-link", json={"email": email}, headers=_from("192.0.2.77")
            )
        )
