"""API keys over real HTTP against a real database: a member makes keys for themselves with some
of their own roles, sees the key once, lists and revokes their own; admins see and revoke every
key of their organization; nobody reaches another organization's keys."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.infra.db import bind_org, session_factory
from tests.support import Member, Stack, audit_actions, make_org


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _own_key_id(http: httpx.AsyncClient, member: Member) -> str:
    """The id of the key make_org gave the member (their only one at first)."""
    listed = await http.get("/v1/api-keys", headers=member.headers)
    assert listed.status_code == 200, listed.text
    (key,) = listed.json()
    return str(key["id"])


async def _create(
    http: httpx.AsyncClient, headers: dict[str, str], **body: object
) -> httpx.Response:
    return await http.post("/v1/api-keys", json={"name": "ci", **body}, headers=headers)


async def test_a_key_with_some_of_my_roles_is_shown_once_and_grants_only_those(
    identity_stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    member = org["operator_approver"]
    expires = datetime.now(UTC) + timedelta(days=30)
    async with identity_stack.http() as http:
        created = await _create(
            http, member.headers, roles=["approver"], expires_at=expires.isoformat()
        )
        assert created.status_code == 201, created.text
        body = created.json()
        assert set(body) == {
            "id",
            "user_id",
            "name",
            "roles",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked_at",
            "key",
        }
        assert body["roles"] == ["approver"]
        assert body["user_id"] == str(member.user_id)
        assert datetime.fromisoformat(body["expires_at"]) == expires
        key = body["key"]

        # The new key works, with its roles only: listing own keys yes, starting a run no.
        listed = await http.get("/v1/api-keys", headers=_bearer(key))
        assert listed.status_code == 200, listed.text
        keys = listed.json()
        # The member's own keys: the one make_org gave them and the new one.
        assert len(keys) == 2
        assert body["id"] in {k["id"] for k in keys}
        assert all("key" not in k and "secret_hash" not in k and "lookup" not in k for k in keys)
        assert key not in listed.text
        assert member.key not in listed.text
        ours = next(k for k in keys if k["id"] == body["id"])
        assert ours["last_used_at"] is not None
        assert ours["revoked_at"] is None
        started = await http.post(
            "/v1/runs", json={"workflow": "expense_approval", "input": {}}, headers=_bearer(key)
        )
        assert started.status_code == 403
        # A key cannot mint a key stronger than itself, even for roles its member holds.
        stronger = await _create(http, _bearer(key), roles=["operator"])
        assert stronger.status_code == 422
        assert stronger.json()["errors"][0]["field"] == "roles"

        # An auditor's audit-only key reads the audit log.
        auditor = await _create(http, org["auditor"].headers, roles=["auditor"])
        assert auditor.status_code == 201, auditor.text
        events = await http.get("/v1/audit-events", headers=_bearer(auditor.json()["key"]))
        assert events.status_code == 200, events.text

    actions = await audit_actions(engine, org.id)
    assert actions.count(("api_key.created", "success", None)) == 2
    assert ("access.denied", "denied", "missing permission run:start") in actions
    async with session_factory(engine)() as session, session.begin():
        await session.exec(  # type: ignore[call-overload]
            text("SELECT set_config('app.org_id', :org, true)").bindparams(org=str(org.id))
        )
        logged = "\n".join(
            r[0]
            for r in (
                await session.exec(text("SELECT e::text FROM audit_events e"))  # type: ignore[call-overload]
            ).all()
        )
    assert key not in logged
    assert key.split("_", 2)[2] not in logged


async def test_roles_must_be_some_of_mine_and_expiry_in_the_future(
    identity_stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    operator = org["operator"].headers
    async with identity_stack.http() as http:
        for roles in (["admin"], ["operator", "approver"], [], ["superuser"]):
            refused = await _create(http, operator, roles=roles)
            assert refused.status_code == 422, (roles, refused.text)
            assert refused.json()["errors"][0]["field"] == "roles"
        missing = await http.post("/v1/api-keys", json={"name": "ci"}, headers=operator)
        assert missing.status_code == 422
        assert missing.json()["errors"][0]["field"] == "roles"

        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        naive = (datetime.now(UTC) + timedelta(days=1)).replace(tzinfo=None).isoformat()
        for expires_at in (past, naive):
            refused = await _create(http, operator, roles=["operator"], expires_at=expires_at)
            assert refused.status_code == 422, (expires_at, refused.text)
            assert refused.json()["errors"][0]["field"] == "expires_at"

        # A member without roles holds no key permission at all.
        nobody = await _create(http, org["nobody"].headers, roles=[])
        assert nobody.status_code == 403
        # Duplicates collapse.
        twice = await _create(http, operator, roles=["operator", "operator"])
        assert twice.status_code == 201, twice.text
        assert twice.json()["roles"] == ["operator"]

    actions = await audit_actions(engine, org.id)
    assert actions.count(("api_key.created", "success", None)) == 1
    assert ("access.denied", "denied", "missing permission api_key:own") in actions


async def test_an_expired_key_and_a_revoked_key_stop_working(
    identity_stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    member = org["approver"]
    async with identity_stack.http() as http:
        soon = datetime.now(UTC) + timedelta(hours=1)
        expiring = await _create(
            http, member.headers, roles=["approver"], expires_at=soon.isoformat()
        )
        assert expiring.status_code == 201, expiring.text
        expiring_key = expiring.json()["key"]
        assert (await http.get("/v1/api-keys", headers=_bearer(expiring_key))).status_code == 200
        async with session_factory(engine)() as session, session.begin():
            await bind_org(session, org.id)  # api_keys has row-level security
            await session.exec(  # type: ignore[call-overload]
                text(
                    "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = :id"
                ).bindparams(id=uuid.UUID(expiring.json()["id"]))
            )
        expired = await http.get("/v1/api-keys", headers=_bearer(expiring_key))
        assert expired.status_code == 401

        revocable = await _create(http, member.headers, roles=["approver"])
        assert revocable.status_code == 201, revocable.text
        key_id, key = revocable.json()["id"], revocable.json()["key"]
        assert (await http.get("/v1/api-keys", headers=_bearer(key))).status_code == 200
        # A key may revoke itself.
        revoked = await http.delete(f"/v1/api-keys/{key_id}", headers=_bearer(key))
        assert revoked.status_code == 204, revoked.text
        after = await http.get("/v1/api-keys", headers=_bearer(key))
        assert after.status_code == 401
        # Revoking again is the same answer and changes nothing.
        again = await http.delete(f"/v1/api-keys/{key_id}", headers=member.headers)
        assert again.status_code == 204
        listed = await http.get("/v1/api-keys", headers=member.headers)
        row = next(k for k in listed.json() if k["id"] == key_id)
        assert row["revoked_at"] is not None

        missing = await http.delete(f"/v1/api-keys/{uuid.uuid4()}", headers=member.headers)
        assert missing.status_code == 404

    actions = await audit_actions(engine, org.id)
    assert actions.count(("api_key.revoked", "success", None)) == 1


async def test_only_admins_see_and_revoke_other_members_keys(
    identity_stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    operator, approver, admin = org["operator"], org["approver"], org["admin"]
    async with identity_stack.http() as http:
        approver_key_id = await _own_key_id(http, approver)

        denied = await http.delete(f"/v1/api-keys/{approver_key_id}", headers=operator.headers)
        assert denied.status_code == 403
        assert (await http.get("/v1/api-keys", headers=approver.headers)).status_code == 200
        all_denied = await http.get(
            "/v1/api-keys", params={"all": "true"}, headers=operator.headers
        )
        assert all_denied.status_code == 403

        everyone = await http.get("/v1/api-keys", params={"all": "true"}, headers=admin.headers)
        assert everyone.status_code == 200, everyone.text
        owners = {k["user_id"] for k in everyone.json()}
        assert owners == {str(m.user_id) for m in org.members.values()}
        assert all(m.key not in everyone.text for m in org.members.values())
        # Without all=true an admin sees their own keys only.
        own = await http.get("/v1/api-keys", headers=admin.headers)
        assert {k["user_id"] for k in own.json()} == {str(admin.user_id)}

        revoked = await http.delete(f"/v1/api-keys/{approver_key_id}", headers=admin.headers)
        assert revoked.status_code == 204, revoked.text
        assert (await http.get("/v1/api-keys", headers=approver.headers)).status_code == 401

    actions = await audit_actions(engine, org.id)
    denials = [a for a in actions if a[0] == "access.denied"]
    assert ("access.denied", "denied", "another member's key needs api_key:manage") in denials
    assert ("access.denied", "denied", "missing permission api_key:manage") in denials
    assert actions.count(("api_key.revoked", "success", None)) == 1


async def test_another_organizations_key_is_not_found(
    identity_stack: Stack, engine: AsyncEngine
) -> None:
    org_a, org_b = await make_org(engine), await make_org(engine)
    async with identity_stack.http() as http:
        a_key_id = await _own_key_id(http, org_a["operator"])
        for name in ("owner", "admin", "operator"):
            refused = await http.delete(f"/v1/api-keys/{a_key_id}", headers=org_b[name].headers)
            assert refused.status_code == 404, (name, refused.text)
        listed = await http.get(
            "/v1/api-keys", params={"all": "true"}, headers=org_b["owner"].headers
        )
        assert a_key_id not in listed.text
        assert (
            await http.get("/v1/api-keys", headers=org_a["operator"].headers)
        ).status_code == 200
    assert not [a for a in await audit_actions(engine, org_b.id) if a[0] == "api_key.revoked"]


async def test_a_burst_with_one_key_records_its_last_use(stack: Stack) -> None:
    """Twenty requests at once with one key: all answered, the key's last use written once."""
    org = await make_org(stack.engine)
    member = org["operator"]
    async with stack.http() as http:
        key_id = await _own_key_id(http, member)
        await _last_used(stack.engine, org.id, key_id, set_to=None)
        answers = await asyncio.gather(
            *(http.get("/v1/runs", headers=member.headers) for _ in range(20))
        )
    assert [a.status_code for a in answers] == [200] * 20
    assert await _last_used(stack.engine, org.id, key_id) is not None


async def _last_used(
    engine: AsyncEngine, org_id: uuid.UUID, key_id: str, *, set_to: object = "keep"
) -> datetime | None:
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org_id)
        if set_to != "keep":
            await session.exec(  # type: ignore[call-overload]
                text("UPDATE api_keys SET last_used_at = NULL WHERE id = :id").bindparams(
                    id=uuid.UUID(key_id)
                )
            )
        row = await session.exec(  # type: ignore[call-overload]
            text("SELECT last_used_at FROM api_keys WHERE id = :id").bindparams(
                id=uuid.UUID(key_id)
            )
        )
        return row.one()[0]  # type: ignore[no-any-return]
