"""Enforced single sign-on: password and link sessions cannot enter the organization (the same
person's other organizations stay open to them), break-glass admins can with their second
factor (audited loudly), API keys work only for members the identity provider has."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from http.cookies import SimpleCookie

import httpx
import pyotp
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.api.identity.sessions import SESSION_COOKIE
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import Role
from blocks.infra.crypto.passwords import hash_password
from blocks.infra.db import session_factory
from blocks.models.identity.orgs import User, add_member
from blocks.models.identity.sso.providers import Protocol, create_provider
from blocks.models.identity.two_factor import begin_setup, confirm_setup
from tests.support import (
    Org,
    Stack,
    audit_actions,
    cookie_headers,
    make_org,
    run_sql,
    start_test_session,
)

PASSWORD = "correct horse battery staple violet quarry"


def _session(response: httpx.Response) -> str:
    return SimpleCookie(response.headers["set-cookie"])[SESSION_COOKIE].value


async def _give_password(engine: AsyncEngine, user_id: uuid.UUID) -> None:
    await run_sql(
        engine,
        "UPDATE users SET password_hash = :hash WHERE id = :id",
        hash=hash_password(PASSWORD),
        id=user_id,
    )


async def _enable_two_factor(engine: AsyncEngine, user_id: uuid.UUID) -> list[str]:
    """Two-factor sign-in on for the person; their backup codes."""
    async with session_factory(engine)() as db, db.begin():
        user = await db.get(User, user_id)
        assert user is not None
        secret, _ = await begin_setup(db, user)
        codes = await confirm_setup(db, user, pyotp.TOTP(secret).now(), datetime.now(UTC))
        assert codes is not None
        return codes


async def _enforce(engine: AsyncEngine, org: Org, break_glass: list[uuid.UUID]) -> uuid.UUID:
    """The organization gets an identity provider and enforces sign-on through it."""
    async with session_factory(engine)() as db, db.begin():
        ctx = OrgContext(org_id=OrgId(org.id), user_id=None, roles=(), auth=AuthMethod.SYSTEM)
        provider = await create_provider(
            ctx,
            db,
            name="Corporate IdP",
            protocol=Protocol.OIDC,
            config={"issuer": "https://idp.example.com", "client_id": "blocks"},
            secret=None,
        )
    await run_sql(
        engine,
        "UPDATE organizations SET sso_enforced = true, sso_break_glass = :ids WHERE id = :target",
        ids=break_glass,
        target=org.id,
    )
    return provider.id


async def _sign_in(http: httpx.AsyncClient, stack: Stack, email: str) -> httpx.Response:
    response = await http.post(
        "/v1/auth/signin",
        json={"email": email, "password": PASSWORD},
        headers={"Origin": stack.settings.public_url},
    )
    assert response.status_code == 200, response.text
    return response


async def test_password_sessions_cannot_enter_an_enforcing_org_but_can_enter_the_others(
    identity_stack: Stack, engine: AsyncEngine
) -> None:
    enforcing, open_org = await make_org(engine), await make_org(engine)
    person = enforcing["approver"]
    async with session_factory(engine)() as db, db.begin():
        ctx = OrgContext(org_id=OrgId(open_org.id), user_id=None, roles=(), auth=AuthMethod.SYSTEM)
        await add_member(ctx, db, email=person.email, display_name="P", roles=[Role.APPROVER])
    await _give_password(engine, person.user_id)
    await _enforce(engine, enforcing, break_glass=[enforcing["owner"].user_id])

    async with identity_stack.http() as http:
        signed = await _sign_in(http, identity_stack, person.email)
        choices = {c["id"]: c for c in signed.json()["organizations"]}
        assert choices[str(enforcing.id)]["sso_enforced"] is True
        assert choices[str(open_org.id)]["sso_enforced"] is False
        headers = cookie_headers(identity_stack.settings, _session(signed))

        refused = await http.post(
            "/v1/auth/org", json={"org_id": str(enforcing.id)}, headers=headers
        )
        assert refused.status_code == 403, refused.text
        assert refused.json()["code"] == "sso_required"
        entered = await http.post(
            "/v1/auth/org", json={"org_id": str(open_org.id)}, headers=headers
        )
        assert entered.status_code == 200, entered.text
    denied = [a for a in await audit_actions(engine, enforcing.id) if a[0] == "access.denied"]
    assert ("access.denied", "denied", "organization enforces single sign-on") in denied


async def test_a_break_glass_admin_enters_with_password_and_second_factor_and_it_is_audited(
    identity_stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    owner, admin = org["owner"], org["admin"]
    for member in (owner, admin):
        await _give_password(engine, member.user_id)
    codes = await _enable_two_factor(engine, owner.user_id)
    await _enable_two_factor(engine, admin.user_id)
    await _enforce(engine, org, break_glass=[owner.user_id])

    async with identity_stack.http() as http:
        signed = await _sign_in(http, identity_stack, owner.email)
        assert signed.json()["mfa_required"] is True
        headers = cookie_headers(identity_stack.settings, _session(signed))
        # Mid sign-in (second factor owed), no organization is open, break-glass or not.
        early = await http.post("/v1/auth/org", json={"org_id": str(org.id)}, headers=headers)
        assert early.status_code == 401
        second = await http.post("/v1/auth/signin/2fa", json={"code": codes[0]}, headers=headers)
        assert second.status_code == 200, second.text
        headers = cookie_headers(identity_stack.settings, _session(second))
        entered = await http.post("/v1/auth/org", json={"org_id": str(org.id)}, headers=headers)
        assert entered.status_code == 200, entered.text
        headers = cookie_headers(identity_stack.settings, _session(entered))
        members = await http.get("/v1/members", headers=headers)
        assert members.status_code == 200, members.text

        # An admin with two-factor sign-in who is not named break-glass stays out.
        other = await _sign_in(http, identity_stack, admin.email)
        assert other.json()["mfa_required"] is True
    events = await audit_actions(engine, org.id)
    assert (
        "auth.break_glass_used",
        "success",
        "break-glass admin entered an organization that enforces single sign-on",
    ) in events


async def test_a_session_already_inside_is_cut_when_enforcement_starts_unless_it_came_by_sso(
    identity_stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    operator, approver = org["operator"], org["approver"]
    from_password = await _start_session(engine, operator.user_id, org.id, sso_org=None)
    from_sso = await _start_session(engine, approver.user_id, org.id, sso_org=org.id)
    async with identity_stack.http() as http:
        before = await http.get(
            "/v1/runs", headers=cookie_headers(identity_stack.settings, from_password)
        )
        assert before.status_code == 200, before.text
        await _enforce(engine, org, break_glass=[])
        after = await http.get(
            "/v1/runs", headers=cookie_headers(identity_stack.settings, from_password)
        )
        assert after.status_code == 403, after.text
        assert after.json()["code"] == "sso_required"
        through_idp = await http.get(
            "/v1/inbox", headers=cookie_headers(identity_stack.settings, from_sso)
        )
        assert through_idp.status_code == 200, through_idp.text


async def test_api_keys_work_only_for_members_the_identity_provider_has(
    identity_stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    provider_id = await _enforce(engine, org, break_glass=[org["owner"].user_id])
    await run_sql(
        engine,
        "INSERT INTO external_identities (id, org_id, provider_id, subject, user_id, created_at)"
        " VALUES (:id, :target, :provider, 'sub-approver', :user, now())",
        org=org.id,
        target=org.id,
        id=uuid.uuid4(),
        provider=provider_id,
        user=org["approver"].user_id,
    )
    async with identity_stack.http() as http:
        unknown = await http.get("/v1/runs", headers=org["operator"].headers)
        assert unknown.status_code == 403, unknown.text
        assert unknown.json()["code"] == "sso_required"
        linked = await http.get("/v1/inbox", headers=org["approver"].headers)
        assert linked.status_code == 200, linked.text
        break_glass = await http.get("/v1/members", headers=org["owner"].headers)
        assert break_glass.status_code == 200, break_glass.text
    reasons = [r for a, _, r in await audit_actions(engine, org.id) if a == "access.denied"]
    assert any(r and r.startswith("organization enforces single sign-on") for r in reasons)


async def _start_session(
    engine: AsyncEngine, user_id: uuid.UUID, org_id: uuid.UUID, *, sso_org: uuid.UUID | None
) -> str:
    token = await start_test_session(engine, user_id, org_id)
    if sso_org is not None:
        await run_sql(
            engine,
            "UPDATE user_sessions SET sso_org_id = :target WHERE user_id = :user",
            target=sso_org,
            user=user_id,
        )
    return token
