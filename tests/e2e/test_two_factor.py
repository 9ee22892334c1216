"""Two-factor sign-in of the signed-in person, over real HTTP against a real database: setting up
asks again for the password, enabling needs a code from the new secret and hands out ten backup
codes once, a TOTP code and a backup code each work once, and every change is audited in the
member's organization without a secret or code in the log."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pyotp
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.infra.crypto.passwords import hash_password
from blocks.infra.db import bind_org, session_factory
from blocks.models.identity.orgs import User
from blocks.models.identity.two_factor import verify_second_factor
from tests.support import (
    Stack,
    audit_actions,
    cookie_headers,
    make_org,
    run_sql,
    start_test_session,
)

PASSWORD = "correct horse battery staple violet quarry"


async def _give_password(engine: AsyncEngine, user_id: uuid.UUID) -> None:
    await run_sql(
        engine,
        "UPDATE users SET password_hash = :hash WHERE id = :id",
        hash=hash_password(PASSWORD),
        id=user_id,
    )


async def _verify(engine: AsyncEngine, user_id: uuid.UUID, code: str, at: float) -> str | None:
    """The sign-in check itself, in its own committed transaction."""
    async with session_factory(engine)() as session, session.begin():
        user = await session.get(User, user_id)
        assert user is not None
        return await verify_second_factor(session, user, code, datetime.fromtimestamp(at, UTC))


def _not_a_current_code(secret: str) -> str:
    """A six-digit code that matches none of the steps the server accepts right now."""
    totp = pyotp.TOTP(secret)
    now = time.time()
    accepted = {totp.at(now + offset) for offset in (-60, -30, 0, 30, 60)}
    return next(c for c in (f"{n:06d}" for n in range(1_000_000)) if c not in accepted)


async def _audit_text(engine: AsyncEngine, org_id: uuid.UUID) -> str:
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org_id)
        rows = await session.exec(text("SELECT e::text FROM audit_events e"))  # type: ignore[call-overload]
        return "\n".join(r[0] for r in rows.all())


async def test_setup_asks_for_the_password_and_enabling_gives_ten_backup_codes_once(
    identity_stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    member = org["operator"]
    await _give_password(engine, member.user_id)
    headers = cookie_headers(
        identity_stack.settings, await start_test_session(engine, member.user_id, org.id)
    )
    async with identity_stack.http() as http:
        status = await http.get("/v1/me/2fa", headers=headers)
        assert status.status_code == 200, status.text
        assert status.json() == {
            "enabled": False,
            "pending_setup": False,
            "remaining_backup_codes": 0,
        }

        missing = await http.post("/v1/me/2fa/setup", json={}, headers=headers)
        assert missing.status_code == 403
        assert missing.json()["code"] == "reauthentication_required"
        wrong = await http.post(
            "/v1/me/2fa/setup", json={"password": PASSWORD + "x"}, headers=headers
        )
        assert wrong.status_code == 403
        assert wrong.json()["code"] == "reauthentication_required"
        # Enabling before any setup has nothing to enable.
        early = await http.post("/v1/me/2fa/enable", json={"code": "123456"}, headers=headers)
        assert early.status_code == 409

        setup = await http.post("/v1/me/2fa/setup", json={"password": PASSWORD}, headers=headers)
        assert setup.status_code == 200, setup.text
        secret = setup.json()["secret"]
        assert setup.json()["provisioning_uri"].startswith("otpauth://totp/")
        assert f"secret={secret}" in setup.json()["provisioning_uri"]
        # A second setup replaces the pending one: only the newest secret can be enabled.
        again = await http.post("/v1/me/2fa/setup", json={"password": PASSWORD}, headers=headers)
        assert again.status_code == 200, again.text
        stale, secret = secret, again.json()["secret"]
        assert stale != secret
        pending = (await http.get("/v1/me/2fa", headers=headers)).json()
        assert pending["enabled"] is False
        assert pending["pending_setup"] is True

        bad = await http.post(
            "/v1/me/2fa/enable", json={"code": _not_a_current_code(secret)}, headers=headers
        )
        assert bad.status_code == 400
        assert bad.json()["code"] == "invalid_two_factor_code"
        assert bad.json()["errors"][0]["field"] == "code"

        enabled = await http.post(
            "/v1/me/2fa/enable", json={"code": pyotp.TOTP(secret).now()}, headers=headers
        )
        assert enabled.status_code == 200, enabled.text
        codes = enabled.json()["backup_codes"]
        assert len(codes) == 10
        assert len(set(codes)) == 10
        assert (await http.get("/v1/me/2fa", headers=headers)).json() == {
            "enabled": True,
            "pending_setup": False,
            "remaining_backup_codes": 10,
        }
        # Setting up again while enabled is refused: disable first.
        refused = await http.post("/v1/me/2fa/setup", json={"password": PASSWORD}, headers=headers)
        assert refused.status_code == 409

    actions = await audit_actions(engine, org.id)
    assert ("two_factor.setup_started", "denied", "password required") in actions
    assert ("two_factor.setup_started", "denied", "wrong password") in actions
    assert actions.count(("two_factor.setup_started", "success", None)) == 2
    assert ("two_factor.enabled", "failure", "wrong code") in actions
    assert ("two_factor.enabled", "success", None) in actions
    logged = await _audit_text(engine, org.id)
    for secret_value in (stale, secret, PASSWORD, *codes):
        assert secret_value not in logged
    assert all(code.replace("-", "") not in logged for code in codes)


async def test_a_code_and_a_backup_code_each_work_once_and_disable_needs_both_proofs(
    identity_stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    member = org["approver"]
    await _give_password(engine, member.user_id)
    headers = cookie_headers(
        identity_stack.settings, await start_test_session(engine, member.user_id, org.id)
    )
    async with identity_stack.http() as http:
        setup = await http.post("/v1/me/2fa/setup", json={"password": PASSWORD}, headers=headers)
        assert setup.status_code == 200, setup.text
        totp = pyotp.TOTP(setup.json()["secret"])
        t0 = time.time()
        enabled = await http.post("/v1/me/2fa/enable", json={"code": totp.at(t0)}, headers=headers)
        assert enabled.status_code == 200, enabled.text
        backup = enabled.json()["backup_codes"]

        # The code that enabled 2FA is spent; the next step's code works once, then neither
        # it nor any older one does.
        assert await _verify(engine, member.user_id, totp.at(t0), t0) is None
        next_code = totp.at(t0 + 30)
        assert await _verify(engine, member.user_id, next_code, t0) == "totp"
        assert await _verify(engine, member.user_id, next_code, t0) is None
        assert await _verify(engine, member.user_id, totp.at(t0), t0) is None

        # A backup code works once, in any spelling; then it is spent.
        assert await _verify(engine, member.user_id, backup[0].upper(), t0) == "backup_code"
        assert await _verify(engine, member.user_id, backup[0], t0) is None
        assert (await http.get("/v1/me/2fa", headers=headers)).json()["remaining_backup_codes"] == 9

        # Disabling needs the password and an unused code.
        no_password = await http.post(
            "/v1/me/2fa/disable", json={"code": backup[1]}, headers=headers
        )
        assert no_password.status_code == 403
        assert no_password.json()["code"] == "reauthentication_required"
        replayed = await http.post(
            "/v1/me/2fa/disable", json={"password": PASSWORD, "code": next_code}, headers=headers
        )
        assert replayed.status_code == 400
        assert replayed.json()["code"] == "invalid_two_factor_code"
        used_backup = await http.post(
            "/v1/me/2fa/disable", json={"password": PASSWORD, "code": backup[0]}, headers=headers
        )
        assert used_backup.status_code == 400
        assert (await http.get("/v1/me/2fa", headers=headers)).json()["enabled"] is True

        # New backup codes (password + a code) replace every old one.
        renewed = await http.post(
            "/v1/me/2fa/backup-codes",
            json={"password": PASSWORD, "code": backup[1]},
            headers=headers,
        )
        assert renewed.status_code == 200, renewed.text
        fresh = renewed.json()["backup_codes"]
        assert len(fresh) == 10
        assert not set(fresh) & set(backup)
        assert await _verify(engine, member.user_id, backup[2], t0) is None
        assert (await http.get("/v1/me/2fa", headers=headers)).json()[
            "remaining_backup_codes"
        ] == 10

        disabled = await http.post(
            "/v1/me/2fa/disable", json={"password": PASSWORD, "code": fresh[0]}, headers=headers
        )
        assert disabled.status_code == 204, disabled.text
        assert (await http.get("/v1/me/2fa", headers=headers)).json() == {
            "enabled": False,
            "pending_setup": False,
            "remaining_backup_codes": 0,
        }
        assert await _verify(engine, member.user_id, fresh[1], t0) is None
        off_again = await http.post(
            "/v1/me/2fa/disable", json={"password": PASSWORD, "code": fresh[1]}, headers=headers
        )
        assert off_again.status_code == 409

    async with session_factory(engine)() as session, session.begin():
        row = (
            await session.exec(  # type: ignore[call-overload]
                text(
                    "SELECT totp_key_id, totp_secret_sealed, totp_enabled_at, totp_last_counter,"
                    " (SELECT count(*) FROM user_backup_codes WHERE user_id = :id)"
                    " FROM users WHERE id = :id"
                ).bindparams(id=member.user_id)
            )
        ).one()
    assert tuple(row) == (None, None, None, None, 0)

    actions = await audit_actions(engine, org.id)
    assert ("two_factor.disabled", "denied", "password required") in actions
    assert actions.count(("two_factor.disabled", "failure", "wrong or used code")) == 2
    assert ("two_factor.backup_codes_regenerated", "success", None) in actions
    assert ("two_factor.disabled", "success", None) in actions
    logged = await _audit_text(engine, org.id)
    for code in (*backup, *fresh, next_code):
        assert code not in logged


async def test_without_a_password_a_fresh_sign_in_is_needed_and_no_organization_is_required(
    identity_stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    member = org["auditor"]
    # The organization requires 2FA: the member's session may not enter it, yet can enroll.
    await run_sql(engine, "UPDATE organizations SET require_2fa = true WHERE id = :id", id=org.id)
    token = await start_test_session(engine, member.user_id, org.id)
    headers = cookie_headers(identity_stack.settings, token)
    async with identity_stack.http() as http:
        blocked = await http.get("/v1/api-keys", headers=headers)
        assert blocked.status_code == 403
        assert blocked.json()["code"] == "two_factor_required"

        setup = await http.post("/v1/me/2fa/setup", json={}, headers=headers)
        assert setup.status_code == 200, setup.text

        # An hour-old sign-in no longer proves who is at the keyboard.
        await run_sql(
            engine,
            "UPDATE user_sessions SET authenticated_at = now() - interval '1 hour'"
            " WHERE user_id = :id",
            id=member.user_id,
        )
        stale = await http.post("/v1/me/2fa/setup", json={}, headers=headers)
        assert stale.status_code == 403
        assert stale.json()["code"] == "reauthentication_required"

        # A session that has picked no organization works the same way.
        no_org = cookie_headers(
            identity_stack.settings, await start_test_session(engine, member.user_id)
        )
        setup = await http.post("/v1/me/2fa/setup", json={}, headers=no_org)
        assert setup.status_code == 200, setup.text
        enabled = await http.post(
            "/v1/me/2fa/enable",
            json={"code": pyotp.TOTP(setup.json()["secret"]).now()},
            headers=no_org,
        )
        assert enabled.status_code == 200, enabled.text
        # Enabling ends the person's other sessions, which never proved the second factor.
        ended = await http.get("/v1/me/2fa", headers=headers)
        assert ended.status_code == 401

    actions = await audit_actions(engine, org.id)
    assert ("two_factor.setup_started", "denied", "sign-in too old; sign in again") in actions
    assert actions.count(("two_factor.setup_started", "success", None)) == 2
    assert ("two_factor.enabled", "success", None) in actions


async def test_the_routes_need_a_signed_in_session_from_this_site(
    identity_stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    member = org["operator"]
    await _give_password(engine, member.user_id)
    token = await start_test_session(engine, member.user_id, org.id)
    async with identity_stack.http() as http:
        # An API key is not a signed-in person.
        by_key = await http.get("/v1/me/2fa", headers=member.headers)
        assert by_key.status_code == 401
        cross_site = await http.post(
            "/v1/me/2fa/setup",
            json={"password": PASSWORD},
            headers={
                **cookie_headers(identity_stack.settings, token),
                "Origin": "https://evil.test",
            },
        )
        assert cross_site.status_code == 403
        assert cross_site.json()["code"] == "csrf"
