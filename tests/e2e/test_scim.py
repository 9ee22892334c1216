"""SCIM provisioning as identity providers really drive it: Entra ID's dialect (capitalised ops,
booleans as strings, `externalId` filters, the `aadOptscim062020` flag), Okta's (PUT for the
profile, PATCH for `active`), deprovisioning that cuts a signed-in member off at their next
request, groups mapped to roles, the token's rotation, refusals, tenant isolation and the audit
trail."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import Role
from blocks.infra.db import bind_org, session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.models.identity.sso.domains import claim_domain, mark_verified
from blocks.models.identity.sso.idp_groups import replace_mappings
from tests.e2e.scim_stack import issue_scim_token, scim_headers, scim_stack
from tests.support import Org, Stack, cookie_headers, make_org, start_test_session

USERS = "/scim/v2/Users"
GROUPS = "/scim/v2/Groups"
CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


@pytest.fixture(scope="module")
async def scim(
    engine: AsyncEngine, temporal_env: WorkflowEnvironment, postgres: PostgresCredentials
) -> AsyncIterator[Stack]:
    async with scim_stack(
        engine=engine, temporal=temporal_env.client, database_url=postgres.url()
    ) as stack:
        yield stack


def _system(org: Org) -> OrgContext:
    return OrgContext(org_id=OrgId(org.id), user_id=None, roles=(), auth=AuthMethod.SYSTEM)


async def _verify_domain(engine: AsyncEngine, org: Org, domain: str) -> None:
    async with session_factory(engine)() as db, db.begin():
        row = await claim_domain(_system(org), db, domain)
        await mark_verified(_system(org), db, row, by="operator")


async def _events(engine: AsyncEngine, org: Org, action: str) -> list[dict[str, Any]]:
    async with session_factory(engine)() as db, db.begin():
        await bind_org(db, org.id)
        rows = await db.exec(  # type: ignore[call-overload]
            text(
                "SELECT actor_type, actor_id, target_type, target_id, data FROM audit_events"
                " WHERE action = :action ORDER BY seq"
            ).bindparams(action=action)
        )
        return [dict(r._mapping) for r in rows.all()]


def _patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


def _user(user_name: str, email: str, **extra: Any) -> dict[str, Any]:
    return {
        "schemas": [CORE],
        "userName": user_name,
        "active": True,
        "emails": [{"value": email, "type": "work", "primary": True}],
        **extra,
    }


async def _member(http: httpx.AsyncClient, org: Org, email: str) -> dict[str, Any]:
    listed = await http.get("/v1/members", headers=org["owner"].headers)
    assert listed.status_code == 200, listed.text
    [member] = [m for m in listed.json() if m["email"] == email]
    return member  # type: ignore[no-any-return]


async def test_entra_dialect(scim: Stack, engine: AsyncEngine) -> None:
    org = await make_org(engine)
    async with scim.http() as http:
        headers = scim_headers(await issue_scim_token(http, org))
        upn = f"Ada.Lovelace@{org.slug}-entra.example"
        created = await http.post(
            f"{USERS}?aadOptscim062020",
            headers=headers,
            json={
                "schemas": [CORE, ENTERPRISE],
                "externalId": "0a1b2c3d-entra-object-id",
                "userName": upn,
                "active": True,
                "displayName": "Ada Lovelace",
                "emails": [{"primary": True, "type": "work", "value": upn}],
                "name": {"givenName": "Ada", "familyName": "Lovelace"},
                ENTERPRISE: {"department": "Engines"},
            },
        )
        assert created.status_code == 201, created.text
        assert created.headers["content-type"].startswith("application/scim+json")
        body = created.json()
        user_id = body["id"]
        assert body["meta"]["location"].endswith(f"/scim/v2/Users/{user_id}")
        assert created.headers["etag"] == body["meta"]["version"]
        assert body[ENTERPRISE] == {"department": "Engines"}
        member = await _member(http, org, upn.lower())
        assert member["roles"] == []

        # Entra looks a user up by externalId (and userName, in any case) before it writes.
        for query in ('externalId eq "0a1b2c3d-entra-object-id"', f'userName eq "{upn.upper()}"'):
            found = await http.get(
                USERS, params={"filter": query, "aadOptscim062020": ""}, headers=headers
            )
            assert found.status_code == 200, found.text
            assert found.json()["totalResults"] == 1
            assert found.json()["Resources"][0]["id"] == user_id
        missing = await http.get(
            USERS, params={"filter": 'externalId eq "nobody"'}, headers=headers
        )
        assert missing.json()["totalResults"] == 0
        # A second user of the same userName is a uniqueness conflict, in SCIM's error format.
        twice = await http.post(USERS, headers=headers, json=_user(upn, upn))
        assert twice.status_code == 409, twice.text
        assert twice.json()["schemas"] == [ERROR]
        assert twice.json()["scimType"] == "uniqueness"
        assert twice.json()["status"] == "409"

        # Capitalised ops, booleans as strings, a filtered path, a value object without path.
        patched = await http.patch(
            f"{USERS}/{user_id}?aadOptscim062020",
            headers=headers,
            json=_patch(
                {"op": "Replace", "path": "active", "value": "False"},
                {"op": "Add", "path": 'emails[type eq "home"].value', "value": "ada@home.test"},
                {"op": "Replace", "path": 'emails[type eq "work"].value', "value": upn},
                {"op": "Replace", "value": {"displayName": "Countess Lovelace"}},
            ),
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["active"] is False
        assert patched.json()["displayName"] == "Countess Lovelace"
        assert {e["type"]: e["value"] for e in patched.json()["emails"]} == {
            "work": upn,
            "home": "ada@home.test",
        }
        assert (await _member(http, org, upn.lower()))["deactivated_at"] is not None
        # Entra sends the same PATCH again (and its periodic active=true): both are fine.
        again = await http.patch(
            f"{USERS}/{user_id}",
            headers=headers,
            json=_patch({"op": "Replace", "path": "active", "value": "False"}),
        )
        assert again.status_code == 200, again.text
        back = await http.patch(
            f"{USERS}/{user_id}",
            headers=headers,
            json=_patch({"op": "Replace", "value": {"active": "True"}}),
        )
        assert back.status_code == 200, back.text
        assert back.json()["active"] is True
        assert (await _member(http, org, upn.lower()))["deactivated_at"] is None

        # Groups: members added, then removed by value (Entra) and by a filtered path.
        group = await http.post(
            GROUPS,
            headers=headers,
            json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "G1"},
        )
        assert group.status_code == 201, group.text
        group_id = group.json()["id"]
        for operation in (
            {"op": "Add", "path": "members", "value": [{"value": user_id}]},
            {"op": "Add", "path": "members", "value": [{"value": user_id}]},
        ):
            added = await http.patch(
                f"{GROUPS}/{group_id}", headers=headers, json=_patch(operation)
            )
            assert added.status_code == 200, added.text
            assert [m["value"] for m in added.json()["members"]] == [user_id]
        read = await http.get(f"{USERS}/{user_id}", headers=headers)
        assert [g["display"] for g in read.json()["groups"]] == ["G1"]
        for operation in (
            {"op": "Remove", "path": "members", "value": [{"value": user_id}]},
            {"op": "Remove", "path": f'members[value eq "{user_id}"]'},
        ):
            removed = await http.patch(
                f"{GROUPS}/{group_id}", headers=headers, json=_patch(operation)
            )
            assert removed.status_code == 200, removed.text
            assert "members" not in removed.json()
        unknown = await http.patch(
            f"{GROUPS}/{group_id}",
            headers=headers,
            json=_patch({"op": "Add", "path": "members", "value": [{"value": str(uuid.uuid4())}]}),
        )
        assert unknown.status_code == 400, unknown.text
        assert unknown.json()["scimType"] == "invalidValue"
        # Malformed requests are SCIM errors too, and change nothing.
        moved = await http.patch(
            f"{USERS}/{user_id}",
            headers=headers,
            json=_patch({"op": "Move", "path": "active", "value": "False"}),
        )
        assert moved.status_code == 400, moved.text
        assert moved.json()["scimType"] == "invalidValue"
        bad_filter = await http.get(USERS, params={"filter": "userName eq"}, headers=headers)
        assert bad_filter.status_code == 400, bad_filter.text
        assert bad_filter.json()["scimType"] == "invalidFilter"
        assert (await http.get(f"{USERS}/{user_id}", headers=headers)).json()["active"] is True


async def test_okta_dialect_put_profile_patch_active(scim: Stack, engine: AsyncEngine) -> None:
    org = await make_org(engine)
    async with scim.http() as http:
        headers = scim_headers(await issue_scim_token(http, org))
        email = f"grace@{org.slug}-okta.example"
        created = await http.post(
            USERS,
            headers=headers,
            json=_user(email, email, name={"givenName": "Grace", "familyName": "Hopper"}),
        )
        assert created.status_code == 201, created.text
        user = created.json()
        profile = _user(
            email,
            email,
            id=user["id"],
            name={"givenName": "Grace", "familyName": "Hopper", "formatted": "Adm. Hopper"},
            title="Rear Admiral",
        )
        put = await http.put(
            f"{USERS}/{user['id']}",
            headers={**headers, "If-Match": user["meta"]["version"]},
            json=profile,
        )
        assert put.status_code == 200, put.text
        assert put.json()["title"] == "Rear Admiral"
        assert put.json()["meta"]["version"] != user["meta"]["version"]
        stale = await http.put(
            f"{USERS}/{user['id']}",
            headers={**headers, "If-Match": user["meta"]["version"]},
            json=profile,
        )
        assert stale.status_code == 412, stale.text
        for _ in range(2):  # Okta deactivates with PATCH, and may send it twice
            off = await http.patch(
                f"{USERS}/{user['id']}",
                headers=headers,
                json=_patch({"op": "replace", "value": {"active": False}}),
            )
            assert off.status_code == 200, off.text
            assert off.json()["active"] is False
        # A PUT of the profile without `active` leaves it as it is.
        profile.pop("active")
        kept = await http.put(f"{USERS}/{user['id']}", headers=headers, json=profile)
        assert kept.status_code == 200, kept.text
        assert kept.json()["active"] is False

        # Okta renames a group with a PATCH carrying the id and the new name.
        group = await http.post(GROUPS, headers=headers, json={"displayName": "Okta One"})
        group_id = group.json()["id"]
        renamed = await http.patch(
            f"{GROUPS}/{group_id}",
            headers=headers,
            json=_patch({"op": "replace", "value": {"id": group_id, "displayName": "Okta Two"}}),
        )
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["displayName"] == "Okta Two"
        listed = await http.get(
            GROUPS, params={"filter": 'displayName eq "okta two"'}, headers=headers
        )
        assert [g["id"] for g in listed.json()["Resources"]] == [group_id]

        deleted = await http.delete(f"{USERS}/{user['id']}", headers=headers)
        assert deleted.status_code == 204
        assert (await http.get(f"{USERS}/{user['id']}", headers=headers)).status_code == 404
    created_events = await _events(engine, org, "scim.user_created")
    assert created_events[0]["actor_type"] == "scim"
    assert created_events[0]["target_id"] == str(await _user_id(engine, email))
    assert [len(await _events(engine, org, a)) for a in ("scim.user_updated",)] == [1]
    assert len(await _events(engine, org, "scim.user_deactivated")) == 1
    assert len(await _events(engine, org, "scim.user_deleted")) == 1
    assert len(await _events(engine, org, "scim.group_updated")) == 1


async def _user_id(engine: AsyncEngine, email: str) -> uuid.UUID:
    async with session_factory(engine)() as db, db.begin():
        row = await db.exec(  # type: ignore[call-overload]
            text("SELECT id FROM users WHERE email = :email").bindparams(email=email)
        )
        return row.one()[0]  # type: ignore[no-any-return]


async def test_deprovisioning_cuts_a_signed_in_member_off(scim: Stack, engine: AsyncEngine) -> None:
    org = await make_org(engine)
    approver = org["approver"]
    await _verify_domain(engine, org, f"{org.slug}.test")
    session = cookie_headers(
        scim.settings, await start_test_session(engine, approver.user_id, org.id)
    )
    async with scim.http() as http:
        headers = scim_headers(await issue_scim_token(http, org))
        assert (await http.get("/v1/members", headers=session)).status_code == 200
        assert (await http.get("/v1/org", headers=approver.headers)).status_code == 200
        # The existing member is linked (their domain is verified), not duplicated.
        linked = await http.post(USERS, headers=headers, json=_user(approver.email, approver.email))
        assert linked.status_code == 201, linked.text
        assert (await http.get("/v1/members", headers=session)).status_code == 200
        off = await http.patch(
            f"{USERS}/{linked.json()['id']}",
            headers=headers,
            json=_patch({"op": "replace", "path": "active", "value": False}),
        )
        assert off.status_code == 200, off.text
        assert (await http.get("/v1/members", headers=session)).status_code == 401
        assert (await http.get("/v1/org", headers=approver.headers)).status_code == 401
        # The last active owner is never deprovisioned by the provider.
        owner = await http.post(
            USERS, headers=headers, json=_user(org["owner"].email, org["owner"].email)
        )
        assert owner.status_code == 201, owner.text
        refused = await http.patch(
            f"{USERS}/{owner.json()['id']}",
            headers=headers,
            json=_patch({"op": "replace", "path": "active", "value": False}),
        )
        assert refused.status_code == 409, refused.text
        assert (await http.get("/v1/org", headers=org["owner"].headers)).status_code == 200
    [event] = await _events(engine, org, "scim.user_deactivated")
    assert event["target_id"] == str(approver.user_id)
    assert event["data"]["sessions_revoked"] == 1
    assert event["data"]["api_keys_revoked"] == 1


async def test_an_account_of_an_unverified_domain_is_not_taken_over(
    scim: Stack, engine: AsyncEngine
) -> None:
    org, other = await make_org(engine), await make_org(engine)
    async with scim.http() as http:
        headers = scim_headers(await issue_scim_token(http, org))
        victim = other["operator"].email
        refused = await http.post(USERS, headers=headers, json=_user(victim, victim))
        assert refused.status_code == 409, refused.text
        assert refused.json()["scimType"] == "uniqueness"
        nameless = await http.post(
            USERS, headers=headers, json={"schemas": [CORE], "userName": "not-an-address"}
        )
        assert nameless.status_code == 400, nameless.text
        assert nameless.json()["scimType"] == "invalidValue"


async def test_groups_map_to_roles(scim: Stack, engine: AsyncEngine) -> None:
    org = await make_org(engine)
    async with session_factory(engine)() as db, db.begin():
        await replace_mappings(_system(org), db, [("blocks-admins", [Role.ADMIN], None)])
    async with scim.http() as http:
        headers = scim_headers(await issue_scim_token(http, org))
        email = f"linus@{org.slug}-idp.example"
        user = (await http.post(USERS, headers=headers, json=_user(email, email))).json()
        other = await http.post(GROUPS, headers=headers, json={"displayName": "unmapped"})
        assert other.status_code == 201
        group = await http.post(
            GROUPS,
            headers=headers,
            json={"displayName": "blocks-admins", "members": [{"value": user["id"]}]},
        )
        assert group.status_code == 201, group.text
        assert (await _member(http, org, email))["roles"] == ["admin"]
        emptied = await http.put(
            f"{GROUPS}/{group.json()['id']}", headers=headers, json={"displayName": "blocks-admins"}
        )
        assert emptied.status_code == 200, emptied.text
        assert (await _member(http, org, email))["roles"] == []
    changes = await _events(engine, org, "member.roles_changed")
    assert [(e["data"]["before"], e["data"]["after"]) for e in changes] == [
        ([], ["admin"]),
        (["admin"], []),
    ]
    assert {e["data"]["source"] for e in changes} == {"idp"}
    assert {e["actor_type"] for e in changes} == {"scim"}


async def test_token_rotation_bad_tokens_and_tenant_isolation(
    scim: Stack, engine: AsyncEngine
) -> None:
    org, other = await make_org(engine), await make_org(engine)
    async with scim.http() as http:
        refused = await http.post("/v1/org/scim/token", headers=org["operator"].headers)
        assert refused.status_code == 403
        status = await http.get("/v1/org/scim", headers=org["admin"].headers)
        assert status.json()["token_live"] is False
        first = await issue_scim_token(http, org)
        second = await issue_scim_token(http, org)
        assert (await http.get(USERS, headers=scim_headers(first))).status_code == 401
        assert (await http.get(USERS, headers=scim_headers(second))).status_code == 200
        status = (await http.get("/v1/org/scim", headers=org["admin"].headers)).json()
        assert status["token_live"] is True
        assert status["last_used_at"] is not None
        assert status["base_url"] == "https://blocks.test/scim/v2"

        for bad in (first, "blkscim_0000_nope", "not a token", second + "x"):
            answer = await http.get(USERS, headers=scim_headers(bad))
            assert answer.status_code == 401, bad
            assert answer.headers["content-type"].startswith("application/scim+json")
            assert answer.json()["schemas"] == [ERROR]
            assert answer.json()["status"] == "401"
        # An API key is no SCIM token, and a SCIM token is no API key.
        assert (await http.get(USERS, headers=org["owner"].headers)).status_code == 401
        assert (await http.get("/v1/org", headers=scim_headers(second))).status_code == 401

        theirs = scim_headers(await issue_scim_token(http, other))
        email = f"hidden@{other.slug}-idp.example"
        hidden = (await http.post(USERS, headers=theirs, json=_user(email, email))).json()
        ours = scim_headers(second)
        assert (await http.get(f"{USERS}/{hidden['id']}", headers=ours)).status_code == 404
        assert (await http.delete(f"{USERS}/{hidden['id']}", headers=ours)).status_code == 404
        listed = await http.get(USERS, params={"filter": f'userName eq "{email}"'}, headers=ours)
        assert listed.json()["totalResults"] == 0
        assert (await http.get(f"{USERS}/{hidden['id']}", headers=theirs)).status_code == 200

        revoked = await http.delete("/v1/org/scim/token", headers=org["admin"].headers)
        assert revoked.status_code == 204
        assert (await http.get(USERS, headers=ours)).status_code == 401
    assert [e["data"] for e in await _events(engine, org, "scim.token_issued")] == [{}, {}]
    assert len(await _events(engine, org, "scim.token_revoked")) == 2
