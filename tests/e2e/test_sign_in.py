"""Sign-up, sign-in, second factor, resets, sessions and the organization picker, over real HTTP
with email delivered to a real local SMTP server."""

from __future__ import annotations

import uuid
from http.cookies import SimpleCookie

import httpx
import pyotp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.api.identity.sessions import SESSION_COOKIE
from blocks.infra.crypto import passwords
from blocks.infra.crypto.passwords import hash_password
from tests.mail import SmtpServer
from tests.support import Stack, audit_actions, make_org, run_sql

STRONG = "correct horse battery staple violet quarry"
TOKEN = r"token=(\S+)"
PLATFORM = uuid.UUID(int=0)


def _session_token(response: httpx.Response) -> str:
    cookie = SimpleCookie(response.headers["set-cookie"])
    return cookie[SESSION_COOKIE].value


def browser(stack: Stack, token: str | None = None) -> dict[str, str]:
    """What a browser on this site sends: its origin and, once signed in, the cookie."""
    headers = {"Origin": stack.settings.public_url}
    if token:
        headers["Cookie"] = f"{SESSION_COOKIE}={token}"
    return headers


async def _sign_up(
    http: httpx.AsyncClient, stack: Stack, smtp: SmtpServer, email: str
) -> tuple[str, dict[str, object]]:
    response = await http.post(
        "/v1/auth/signup", json={"email": email, "display_name": "Dana"}, headers=browser(stack)
    )
    assert response.status_code == 202, response.text
    token = await smtp.inbox.token_for(email.lower(), TOKEN)
    response = await http.post(
        "/v1/auth/signup/verify", json={"token": token}, headers=browser(stack)
    )
    assert response.status_code == 201, response.text
    return _session_token(response), response.json()


async def _password_user(engine: AsyncEngine, email: str) -> uuid.UUID:
    user_id = uuid.uuid4()
    await run_sql(
        engine,
        "INSERT INTO users (id, email, display_name, created_at, email_verified_at, password_hash)"
        " VALUES (:id, :email, 'Pat', now(), now(), :hash)",
        id=user_id,
        email=email,
        hash=hash_password(STRONG),
    )
    return user_id


async def _sign_in(
    http: httpx.AsyncClient, stack: Stack, email: str, password: str = STRONG
) -> httpx.Response:
    return await http.post(
        "/v1/auth/signin", json={"email": email, "password": password}, headers=browser(stack)
    )


async def test_sign_up_by_link_then_password_then_sign_in_with_a_safe_cookie(
    identity_stack: Stack, smtp_server: SmtpServer, engine: AsyncEngine
) -> None:
    email = f"dana-{uuid.uuid4().hex[:8]}@example.com"
    async with identity_stack.http() as http:
        token, body = await _sign_up(http, identity_stack, smtp_server, email.upper())
        assert body["email"] == email  # one account per mailbox, whatever the case typed
        assert body["mfa_required"] is False
        assert body["organizations"] == []

        # A weak password is refused with the field and the reason; a long one is fine.
        weak = await http.put(
            "/v1/me/password",
            json={"new_password": "password1234"},
            headers=browser(identity_stack, token),
        )
        assert weak.status_code == 422, weak.text
        assert weak.json()["errors"][0]["field"] == "new_password"
        long_password = STRONG + " " + "x7!" * 30  # 130 characters, kept whole
        ok = await http.put(
            "/v1/me/password",
            json={"new_password": long_password},
            headers=browser(identity_stack, token),
        )
        assert ok.status_code == 204, ok.text

        # The account makes an organization, signs out, and signs in again with the password.
        created = await http.post(
            "/v1/orgs",
            json={"slug": f"o-{uuid.uuid4().hex[:8]}", "name": "Dana's"},
            headers=browser(identity_stack, token),
        )
        assert created.status_code == 201, created.text
        out = await http.post("/v1/auth/signout", headers=browser(identity_stack, token))
        assert out.status_code == 204
        assert (await http.get("/v1/me", headers=browser(identity_stack, token))).status_code == 401

        truncated = await _sign_in(http, identity_stack, email, long_password[:72])
        assert truncated.status_code == 401  # never truncated: 72 characters are not the password
        signed = await _sign_in(http, identity_stack, email, long_password)
        assert signed.status_code == 200, signed.text
        assert [o["id"] for o in signed.json()["organizations"]] == [created.json()["id"]]
        new_token = _session_token(signed)
        assert new_token != token  # a new token at every sign-in

        cookie = signed.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=")
        flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "secure", "samesite", "path", "max-age"} <= flags
        assert "domain" not in flags
        assert "samesite=lax" in cookie.lower()
        assert "path=/" in cookie.lower()


async def test_wrong_and_unknown_passwords_get_one_answer_and_are_audited(
    identity_stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    await run_sql(
        engine,
        "UPDATE users SET password_hash = :h WHERE id = :id",
        h=hash_password(STRONG),
        id=org["operator"].user_id,
    )
    async with identity_stack.http() as http:
        wrong = await _sign_in(
            http, identity_stack, org["operator"].email, "not the password at all"
        )
        unknown = await _sign_in(http, identity_stack, f"nobody-{uuid.uuid4().hex}@example.com")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]
    assert "set-cookie" not in wrong.headers
    # The member's organization sees the failed attempt on its member; the platform sees both.
    assert ("auth.signin", "failure", "wrong password") in await audit_actions(engine, org.id)
    platform = await audit_actions(engine, PLATFORM)
    assert ("auth.signin", "failure", "unknown email") in platform


async def test_picking_an_organization_scopes_the_session_and_switching_returns_to_the_picker(
    identity_stack: Stack, engine: AsyncEngine
) -> None:
    first, second = await make_org(engine), await make_org(engine)
    email = f"both-{uuid.uuid4().hex[:8]}@example.com"
    user_id = await _password_user(engine, email)
    for org, role in ((first, "operator"), (second, "auditor")):
        await run_sql(
            engine,
            "INSERT INTO memberships (id, org_id, user_id, roles, created_at)"
            " VALUES (:id, :org_uuid, :user, ARRAY[:role]::varchar[], now())",
            org=org.id,
            id=uuid.uuid4(),
            org_uuid=org.id,
            user=user_id,
            role=role,
        )
    async with identity_stack.http() as http:
        signed = await _sign_in(http, identity_stack, email)
        token = _session_token(signed)
        assert {o["id"] for o in signed.json()["organizations"]} == {str(first.id), str(second.id)}
        # Before picking, no organization's data is reachable.
        refused = await http.get("/v1/runs", headers=browser(identity_stack, token))
        assert refused.status_code == 403
        assert refused.json()["code"] == "organization_not_selected"
        # Not a member of a third organization: it does not exist for this person.
        third = await make_org(engine)
        missing = await http.post(
            "/v1/auth/org", json={"org_id": str(third.id)}, headers=browser(identity_stack, token)
        )
        assert missing.status_code == 404

        picked = await http.post(
            "/v1/auth/org", json={"org_id": str(first.id)}, headers=browser(identity_stack, token)
        )
        assert picked.status_code == 200, picked.text
        assert picked.json()["roles"] == ["operator"]
        token = _session_token(picked)  # picking rotates the token
        runs = await http.get("/v1/runs", headers=browser(identity_stack, token))
        assert runs.status_code == 200, runs.text
        # The operator role of the first org grants no audit reading, whatever the second grants.
        audit = await http.get("/v1/audit-events", headers=browser(identity_stack, token))
        assert audit.status_code == 403

        back = await http.post("/v1/auth/switch-org", headers=browser(identity_stack, token))
        assert back.status_code == 200
        assert back.json()["org_id"] is None
        token = _session_token(back)
        again = await http.get("/v1/runs", headers=browser(identity_stack, token))
        assert again.status_code == 403
        picked = await http.post(
            "/v1/auth/org", json={"org_id": str(second.id)}, headers=browser(identity_stack, token)
        )
        token = _session_token(picked)
        audit = await http.get("/v1/audit-events", headers=browser(identity_stack, token))
        assert audit.status_code == 200
        # The org-selected event of this session is in the second org's log, not the first's.
        actions = [e["action"] for e in audit.json()["events"]]
        assert "session.org_selected" in actions
    assert "session.org_selected" in [a for a, _, _ in await audit_actions(engine, first.id)]


async def test_cross_origin_cookie_requests_are_refused_and_audited(
    identity_stack: Stack, engine: AsyncEngine
) -> None:
    email = f"csrf-{uuid.uuid4().hex[:8]}@example.com"
    await _password_user(engine, email)
    async with identity_stack.http() as http:
        token = _session_token(await _sign_in(http, identity_stack, email))
        cookie = {"Cookie": f"{SESSION_COOKIE}={token}"}
        evil = await http.post(
            "/v1/auth/switch-org", headers={**cookie, "Origin": "https://evil.example"}
        )
        assert evil.status_code == 403
        assert evil.json()["code"] == "csrf"
        bare = await http.post("/v1/auth/switch-org", headers=cookie)
        assert bare.status_code == 403
        assert bare.json()["code"] == "csrf"
        referer = await http.post(
            "/v1/auth/switch-org",
            headers={**cookie, "Referer": f"{identity_stack.settings.public_url}/runs"},
        )
        assert referer.status_code == 200, referer.text
        # Reading needs no origin; a cross-site login attempt is refused too (login CSRF).
        cookie = {"Cookie": f"{SESSION_COOKIE}={_session_token(referer)}"}
        assert (await http.get("/v1/me", headers=cookie)).status_code == 200
        login = await http.post(
            "/v1/auth/signin",
            json={"email": email, "password": STRONG},
            headers={"Origin": "https://evil.example"},
        )
        assert login.status_code == 403
    reasons = [r for a, o, r in await audit_actions(engine, PLATFORM) if a == "access.denied"]
    assert any(r and r.startswith("csrf") for r in reasons)


async def test_idle_expired_and_revoked_sessions_are_refused_on_their_next_request(
    identity_stack: Stack, engine: AsyncEngine
) -> None:
    email = f"idle-{uuid.uuid4().hex[:8]}@example.com"
    await _password_user(engine, email)
    async with identity_stack.http() as http:
        tokens = [_session_token(await _sign_in(http, identity_stack, email)) for _ in range(3)]
        me = await http.get("/v1/me", headers=browser(identity_stack, tokens[0]))
        ids = {}
        for token in tokens:
            ids[token] = (await http.get("/v1/me", headers=browser(identity_stack, token))).json()[
                "session_id"
            ]
        idle = identity_stack.settings.session_idle_minutes
        await run_sql(
            engine,
            "UPDATE user_sessions SET last_seen_at = now() - make_interval(mins => :m) WHERE id = :id",
            m=idle + 1,
            id=uuid.UUID(ids[tokens[0]]),
        )
        await run_sql(
            engine,
            "UPDATE user_sessions SET expires_at = now() - interval '1 second' WHERE id = :id",
            id=uuid.UUID(ids[tokens[1]]),
        )
        for token in tokens[:2]:
            refused = await http.get("/v1/me", headers=browser(identity_stack, token))
            assert refused.status_code == 401
            assert refused.json()["code"] == "session_ended"
        listed = await http.get("/v1/me/sessions", headers=browser(identity_stack, tokens[2]))
        assert [s["id"] for s in listed.json()] == [ids[tokens[2]]]
        assert me.status_code == 200
        gone = await http.delete(
            f"/v1/me/sessions/{ids[tokens[2]]}", headers=browser(identity_stack, tokens[2])
        )
        assert gone.status_code == 204
        assert (
            await http.get("/v1/me", headers=browser(identity_stack, tokens[2]))
        ).status_code == 401


async def test_password_reset_is_single_use_expires_and_signs_out_everywhere(
    identity_stack: Stack, smtp_server: SmtpServer, engine: AsyncEngine
) -> None:
    email = f"reset-{uuid.uuid4().hex[:8]}@example.com"
    await _password_user(engine, email)
    async with identity_stack.http() as http:
        old = _session_token(await _sign_in(http, identity_stack, email))
        asked = await http.post("/v1/auth/password-reset", json={"email": email})
        unknown = await http.post(
            "/v1/auth/password-reset", json={"email": f"x-{uuid.uuid4().hex}@example.com"}
        )
        assert asked.status_code == unknown.status_code == 202
        assert asked.json() == unknown.json()
        token = await smtp_server.inbox.token_for(email, TOKEN)
        new_password = STRONG + " renewed"
        weak = await http.post(
            "/v1/auth/password-reset/confirm", json={"token": token, "password": "short"}
        )
        assert weak.status_code == 422  # and the link still works: nothing was changed
        done = await http.post(
            "/v1/auth/password-reset/confirm", json={"token": token, "password": new_password}
        )
        assert done.status_code == 204, done.text
        reused = await http.post(
            "/v1/auth/password-reset/confirm", json={"token": token, "password": new_password}
        )
        assert reused.status_code == 400
        assert "already been used" in reused.json()["detail"]
        assert (await http.get("/v1/me", headers=browser(identity_stack, old))).status_code == 401
        assert (await _sign_in(http, identity_stack, email)).status_code == 401
        assert (await _sign_in(http, identity_stack, email, new_password)).status_code == 200

        await http.post("/v1/auth/password-reset", json={"email": email})
        late = await smtp_server.inbox.token_for(email, TOKEN, count=2)
        await run_sql(
            engine,
            "UPDATE auth_tokens SET expires_at = now() - interval '1 second' WHERE email = :e AND used_at IS NULL",
            e=email,
        )
        expired = await http.post(
            "/v1/auth/password-reset/confirm", json={"token": late, "password": STRONG + " again"}
        )
        assert expired.status_code == 400
        assert "expired" in expired.json()["detail"]
        forged = await http.post(
            "/v1/auth/password-reset/confirm",
            json={"token": late[:-4] + "AAAA", "password": STRONG + " again"},
        )
        assert forged.status_code == 400
        assert "not valid" in forged.json()["detail"]


async def test_two_factor_at_sign_in_and_reset_and_a_code_works_once(
    identity_stack: Stack, smtp_server: SmtpServer, engine: AsyncEngine
) -> None:
    email = f"totp-{uuid.uuid4().hex[:8]}@example.com"
    await _password_user(engine, email)
    async with identity_stack.http() as http:
        token = _session_token(await _sign_in(http, identity_stack, email))
        setup = await http.post(
            "/v1/me/2fa/setup", json={"password": STRONG}, headers=browser(identity_stack, token)
        )
        assert setup.status_code == 200, setup.text
        totp = pyotp.TOTP(setup.json()["secret"])
        enabled = await http.post(
            "/v1/me/2fa/enable", json={"code": totp.now()}, headers=browser(identity_stack, token)
        )
        assert enabled.status_code == 200, enabled.text
        backup = enabled.json()["backup_codes"]

        first = await _sign_in(http, identity_stack, email)
        assert first.json()["mfa_required"] is True
        assert first.json()["organizations"] == []
        pending = _session_token(first)
        # Half signed in grants nothing.
        blocked = await http.get("/v1/me", headers=browser(identity_stack, pending))
        assert blocked.status_code == 401
        assert blocked.json()["code"] == "mfa_required"
        # The code used to enable 2FA cannot be used again.
        replay = await http.post(
            "/v1/auth/signin/2fa",
            json={"code": totp.now()},
            headers=browser(identity_stack, pending),
        )
        assert replay.status_code == 401
        ok = await http.post(
            "/v1/auth/signin/2fa",
            json={"code": backup[0]},
            headers=browser(identity_stack, pending),
        )
        assert ok.status_code == 200, ok.text
        assert (
            await http.get("/v1/me", headers=browser(identity_stack, _session_token(ok)))
        ).status_code == 200

        again = _session_token(await _sign_in(http, identity_stack, email))
        used = await http.post(
            "/v1/auth/signin/2fa", json={"code": backup[0]}, headers=browser(identity_stack, again)
        )
        assert used.status_code == 401

        # A reset proves the mailbox only: without the second factor it changes nothing.
        await http.post("/v1/auth/password-reset", json={"email": email})
        reset = await smtp_server.inbox.token_for(email, TOKEN)
        without = await http.post(
            "/v1/auth/password-reset/confirm", json={"token": reset, "password": STRONG + " two"}
        )
        assert without.status_code == 422
        assert without.json()["errors"][0]["field"] == "code"
        with_code = await http.post(
            "/v1/auth/password-reset/confirm",
            json={"token": reset, "password": STRONG + " two", "code": backup[1]},
        )
        assert with_code.status_code == 204, with_code.text


async def test_a_sign_in_link_works_once_and_still_asks_for_the_second_factor(
    identity_stack: Stack, smtp_server: SmtpServer, engine: AsyncEngine
) -> None:
    email = f"link-{uuid.uuid4().hex[:8]}@example.com"
    await _password_user(engine, email)
    async with identity_stack.http() as http:
        asked = await http.post("/v1/auth/signin-link", json={"email": email})
        assert asked.status_code == 202
        token = await smtp_server.inbox.token_for(email, TOKEN)
        used = await http.post(
            "/v1/auth/signin-link/verify", json={"token": token, "next": "//evil.example/x"}
        )
        assert used.status_code == 200, used.text
        assert used.json()["next"] == "/"  # only ever a path on this site
        again = await http.post("/v1/auth/signin-link/verify", json={"token": token})
        assert again.status_code == 400
        assert "already been used" in again.json()["detail"]
        wrong_kind = await http.post("/v1/auth/signup/verify", json={"token": token})
        assert wrong_kind.status_code == 400

        await http.post("/v1/auth/signin-link", json={"email": email})
        late = await smtp_server.inbox.token_for(email, TOKEN, count=2)
        await run_sql(
            engine,
            "UPDATE auth_tokens SET expires_at = now() - interval '1 second'"
            " WHERE email = :e AND used_at IS NULL",
            e=email,
        )
        expired = await http.post("/v1/auth/signin-link/verify", json={"token": late})
        assert expired.status_code == 400
        assert "expired" in expired.json()["detail"]


async def test_an_unknown_address_costs_the_same_argon2_work_as_a_wrong_password(
    identity_stack: Stack, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timing is not asserted (tests do not time things); the work done is: one argon2id
    verification, with the same parameters, whether the address has an account or not."""
    email = f"timing-{uuid.uuid4().hex[:8]}@example.com"
    await _password_user(engine, email)
    verified: list[str] = []
    hasher = passwords._password_hash.hashers[0]
    real_verify = type(hasher).verify

    def counting_verify(self: object, password: str, stored: str) -> bool:
        verified.append(stored.rsplit("$", 2)[0])  # algorithm and cost, not salt or digest
        return real_verify(self, password, stored)  # type: ignore[arg-type]

    monkeypatch.setattr(type(hasher), "verify", counting_verify)
    async with identity_stack.http() as http:
        known = await _sign_in(http, identity_stack, email, "not the password at all")
        known_work = list(verified)
        verified.clear()
        unknown = await _sign_in(http, identity_stack, f"ghost-{uuid.uuid4().hex}@example.com")
        unknown_work = list(verified)
    assert known.status_code == unknown.status_code == 401
    assert len(known_work) == len(unknown_work) == 1
    assert known_work == unknown_work
    assert known_work[0].startswith("$argon2id$")


async def test_every_answer_carries_the_security_headers(
    identity_stack: Stack, stack: Stack
) -> None:
    async with identity_stack.http() as http:
        answer = await http.get("/v1/me")  # a refusal gets them too
        page = await http.get("/auth/signin")
    assert answer.status_code == 401
    for response in (answer, page):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["strict-transport-security"].startswith("max-age=")
    # HSTS only where the site is served over https (identity_stack's public URL is).
    async with stack.http() as http:
        plain = await http.get("/healthz")
    assert "strict-transport-security" not in plain.headers
    assert plain.headers["x-content-type-options"] == "nosniff"
