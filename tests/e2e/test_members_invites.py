"""Members, invites and owner actions, through the real API, email server and database."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.infra.db import bind_org, session_factory
from blocks.models.base import utcnow
from blocks.models.identity.orgs import User
from tests.mail import SmtpServer
from tests.support import (
    Org,
    Stack,
    audit_actions,
    cookie_headers,
    make_org,
    start_test_session,
)

_TOKEN = r"token=(inv_\S+)"


async def _events(engine: AsyncEngine, org_id: uuid.UUID, action: str) -> list[dict[str, Any]]:
    """The organization's audit events of one action, as stored, in chain order."""
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org_id)
        rows = await session.exec(  # type: ignore[call-overload]
            text(
                "SELECT action, actor_type, actor_id, target_type, target_id, outcome, reason,"
                " ip, user_agent, data FROM audit_events WHERE action = :action ORDER BY seq"
            ).bindparams(action=action)
        )
        return [dict(r._mapping) for r in rows.all()]


async def _denials(engine: AsyncEngine, org: Org) -> list[str | None]:
    return [
        reason
        for action, outcome, reason in await audit_actions(engine, org.id)
        if action == "access.denied" and outcome == "denied"
    ]


async def _person(engine: AsyncEngine, email: str) -> uuid.UUID:
    """A person with an account and no membership (as sign-up would leave them)."""
    async with session_factory(engine)() as session, session.begin():
        user = User(email=email, display_name="New person", email_verified_at=utcnow())
        session.add(user)
        await session.flush()
        return user.id


async def _signed_in(engine: AsyncEngine, stack: Stack, email: str) -> dict[str, str]:
    """Browser headers of a fresh session (no organization picked) of a new person."""
    token = await start_test_session(engine, await _person(engine, email), None)
    return cookie_headers(stack.settings, token)


async def _invite(
    http: httpx.AsyncClient, org: Org, email: str, roles: list[str], *, by: str = "admin"
) -> dict[str, Any]:
    response = await http.post(
        "/v1/invites", json={"email": email, "roles": roles}, headers=org[by].headers
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def _accept(http: httpx.AsyncClient, token: str, headers: dict[str, str]) -> httpx.Response:
    return await http.post("/v1/invites/accept", json={"token": token}, headers=headers)


def _member(members: list[dict[str, Any]], user_id: uuid.UUID) -> dict[str, Any]:
    return next(m for m in members if m["id"] == str(user_id))


# --------------------------------------------------------------------------------- members


async def test_an_admin_changes_roles_and_it_is_audited(
    identity_stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    operator = org["operator"].user_id
    async with identity_stack.http() as http:
        listed = await http.get("/v1/members", headers=org["auditor"].headers)
        assert listed.status_code == 200, listed.text
        assert len(listed.json()) == 8
        row = _member(listed.json(), operator)
        assert row["roles"] == ["operator"]
        assert row["email"] == org["operator"].email
        assert row["two_factor"] is False
        assert row["deactivated_at"] is None

        changed = await http.put(
            f"/v1/members/{operator}/roles",
            json={"roles": ["approver", "operator", "approver"]},
            headers=org["admin"].headers | {"User-Agent": "members-test"},
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["roles"] == ["operator", "approver"]
        listed = await http.get("/v1/members", headers=org["operator"].headers)
        assert _member(listed.json(), operator)["roles"] == ["operator", "approver"]

        # Bad input names the field; a member of no organization of ours is not found.
        bad = await http.put(
            f"/v1/members/{operator}/roles", json={"roles": ["boss"]}, headers=org["admin"].headers
        )
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["field"] == "roles.0"
        empty = await http.put(
            f"/v1/members/{operator}/roles", json={"roles": []}, headers=org["admin"].headers
        )
        assert empty.status_code == 422
        assert empty.json()["errors"][0]["field"] == "roles"
        other = await make_org(engine)
        for user_id in (other["operator"].user_id, uuid.uuid4()):
            missing = await http.put(
                f"/v1/members/{user_id}/roles",
                json={"roles": ["approver"]},
                headers=org["admin"].headers,
            )
            assert missing.status_code == 404
            assert missing.json()["code"] == "not_found"
        # A member without member:manage is refused.
        refused = await http.put(
            f"/v1/members/{operator}/roles",
            json={"roles": ["admin"]},
            headers=org["operator"].headers,
        )
        assert refused.status_code == 403

    [event] = await _events(engine, org.id, "member.roles_changed")
    assert event["actor_id"] == str(org["admin"].user_id)
    assert event["target_type"] == "member"
    assert event["target_id"] == str(operator)
    assert event["outcome"] == "success"
    assert event["data"] == {"before": ["operator"], "after": ["operator", "approver"]}
    # IP and user agent are personal fields: stored sealed, but present.
    assert event["ip"]
    assert event["user_agent"]


async def test_only_an_owner_touches_the_owner_role(
    identity_stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    owner, operator = org["owner"].user_id, org["operator"].user_id
    async with identity_stack.http() as http:
        before = len(await _denials(engine, org))
        attempts = [
            ("PUT", f"/v1/members/{operator}/roles", {"roles": ["owner"]}),
            ("PUT", f"/v1/members/{owner}/roles", {"roles": ["owner", "auditor"]}),
            ("POST", f"/v1/members/{owner}/deactivate", None),
            ("POST", "/v1/invites", {"email": f"boss@{org.slug}.test", "roles": ["owner"]}),
        ]
        for method, path, body in attempts:
            response = await http.request(method, path, json=body, headers=org["admin"].headers)
            assert response.status_code == 403, f"{method} {path}: {response.text}"
            assert response.json()["code"] == "forbidden"
        denials = (await _denials(engine, org))[before:]
        assert len(denials) == len(attempts)
        assert all(reason and "only an owner" in reason for reason in denials)

        # An owner may.
        granted = await http.put(
            f"/v1/members/{operator}/roles",
            json={"roles": ["owner"]},
            headers=org["owner"].headers,
        )
        assert granted.status_code == 200, granted.text
        assert granted.json()["roles"] == ["owner"]
    actions = [a for a, _, _ in await audit_actions(engine, org.id)]
    assert actions.count("member.roles_changed") == 1


async def test_the_last_owner_cannot_be_demoted_or_deactivated(
    identity_stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    owner = org["owner"].user_id
    async with identity_stack.http() as http:
        demoted = await http.put(
            f"/v1/members/{owner}/roles", json={"roles": ["admin"]}, headers=org["owner"].headers
        )
        assert demoted.status_code == 409, demoted.text
        assert demoted.json()["code"] == "last_owner"
        deactivated = await http.post(
            f"/v1/members/{owner}/deactivate", headers=org["owner"].headers
        )
        assert deactivated.status_code == 409, deactivated.text
        assert deactivated.json()["code"] == "last_owner"

        # With a second owner, the first may step down.
        promoted = await http.put(
            f"/v1/members/{org['admin'].user_id}/roles",
            json={"roles": ["owner", "admin"]},
            headers=org["owner"].headers,
        )
        assert promoted.status_code == 200, promoted.text
        demoted = await http.put(
            f"/v1/members/{owner}/roles", json={"roles": ["admin"]}, headers=org["owner"].headers
        )
        assert demoted.status_code == 200, demoted.text
        listed = (await http.get("/v1/members", headers=org["auditor"].headers)).json()
        assert [m["id"] for m in listed if "owner" in m["roles"]] == [str(org["admin"].user_id)]


async def test_deactivation_cuts_keys_and_sessions_and_keeps_history(
    identity_stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    approver = org["approver"]
    settings = identity_stack.settings
    async with identity_stack.http() as http:
        # Something the approver did, to find in the audit log afterwards.
        delegated = await http.post(
            "/v1/delegations",
            json={
                "delegate_user_id": str(org["approver2"].user_id),
                "ends_at": "2099-01-01T00:00:00Z",
            },
            headers=approver.headers,
        )
        assert delegated.status_code == 201, delegated.text
        session = cookie_headers(
            settings, await start_test_session(engine, approver.user_id, org.id)
        )
        assert (await http.get("/v1/members", headers=session)).status_code == 200
        assert (await http.get("/v1/org", headers=approver.headers)).status_code == 200

        done = await http.post(
            f"/v1/members/{approver.user_id}/deactivate", headers=org["admin"].headers
        )
        assert done.status_code == 200, done.text
        assert done.json()["api_keys_revoked"] == 1
        assert done.json()["sessions_revoked"] == 1
        assert done.json()["deactivated_at"] is not None

        assert (await http.get("/v1/org", headers=approver.headers)).status_code == 401
        assert (await http.get("/v1/members", headers=session)).status_code == 401
        again = await http.post(
            f"/v1/members/{approver.user_id}/deactivate", headers=org["admin"].headers
        )
        assert again.status_code == 409

        # Their history stays, and the chain still verifies.
        [created] = await _events(engine, org.id, "delegation.created")
        assert created["actor_id"] == str(approver.user_id)
        [deactivated] = await _events(engine, org.id, "member.deactivated")
        assert deactivated["actor_id"] == str(org["admin"].user_id)
        assert deactivated["target_id"] == str(approver.user_id)
        assert deactivated["data"]["api_keys_revoked"] == 1
        assert deactivated["data"]["sessions_revoked"] == 1
        verified = await http.get("/v1/audit/verify", headers=org["auditor"].headers)
        assert verified.status_code == 200, verified.text
        assert verified.json()["ok"] is True, verified.json()

        async with session_factory(engine)() as db, db.begin():
            await bind_org(db, org.id)
            row = (
                await db.exec(  # type: ignore[call-overload]
                    text(
                        "SELECT m.deactivated_by, k.revoked_at FROM memberships m"
                        " JOIN api_keys k ON k.user_id = m.user_id AND k.org_id = m.org_id"
                        " WHERE m.user_id = :u AND m.org_id = :o"
                    ).bindparams(u=approver.user_id, o=org.id)
                )
            ).one()
        assert row[0] == org["admin"].user_id
        assert row[1] is not None

        # Reactivation restores the membership, not the revoked key.
        back = await http.post(
            f"/v1/members/{approver.user_id}/reactivate", headers=org["admin"].headers
        )
        assert back.status_code == 200, back.text
        assert back.json()["deactivated_at"] is None
        assert (await http.get("/v1/org", headers=approver.headers)).status_code == 401
        fresh = cookie_headers(settings, await start_test_session(engine, approver.user_id, org.id))
        assert (await http.get("/v1/members", headers=fresh)).status_code == 200
    assert [a for a, _, _ in await audit_actions(engine, org.id)].count("member.reactivated") == 1


async def test_an_admin_ends_a_members_sessions_here(
    identity_stack: Stack, engine: AsyncEngine
) -> None:
    org, other = await make_org(engine), await make_org(engine)
    operator = org["operator"]
    settings = identity_stack.settings
    here = cookie_headers(settings, await start_test_session(engine, operator.user_id, org.id))
    async with identity_stack.http() as http:
        refused = await http.post(
            f"/v1/members/{operator.user_id}/sessions/revoke", headers=org["operator"].headers
        )
        assert refused.status_code == 403
        missing = await http.post(
            f"/v1/members/{other['operator'].user_id}/sessions/revoke",
            headers=org["admin"].headers,
        )
        assert missing.status_code == 404
        revoked = await http.post(
            f"/v1/members/{operator.user_id}/sessions/revoke", headers=org["admin"].headers
        )
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["sessions_revoked"] == 1
        assert (await http.get("/v1/members", headers=here)).status_code == 401
        # The API key is not a session: it still works.
        assert (await http.get("/v1/org", headers=operator.headers)).status_code == 200
    [event] = await _events(engine, org.id, "session.revoked")
    assert event["target_id"] == str(operator.user_id)
    assert event["data"]["sessions_revoked"] == 1


# --------------------------------------------------------------------------------- invites


async def test_an_invite_is_emailed_accepted_once_and_makes_a_member(
    identity_stack: Stack, engine: AsyncEngine, smtp_server: SmtpServer
) -> None:
    org = await make_org(engine)
    email = f"new.person@{org.slug}.test"
    async with identity_stack.http() as http:
        invite = await _invite(http, org, f"New.Person@{org.slug.upper()}.test", ["approver"])
        assert invite["email"] == email
        assert invite["state"] == "pending"
        assert "token" not in invite
        assert "inv_" not in str(invite)
        pending = await http.get("/v1/invites", headers=org["admin"].headers)
        assert [i["id"] for i in pending.json()] == [invite["id"]]
        assert (await http.get("/v1/invites", headers=org["approver"].headers)).status_code == 403

        token = await smtp_server.inbox.token_for(email, _TOKEN)
        body = (await smtp_server.inbox.wait_for(email))[0]
        assert "https://blocks.test/auth/invite?token=inv_" in body

        # Not signed in: refused, and the invite stays pending.
        anonymous = await _accept(http, token, {})
        assert anonymous.status_code == 401
        person = await _signed_in(engine, identity_stack, email)
        accepted = await _accept(http, token, person)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["org_id"] == str(org.id)
        assert accepted.json()["roles"] == ["approver"]

        listed = (await http.get("/v1/members", headers=org["auditor"].headers)).json()
        joined = next(m for m in listed if m["email"] == email)
        assert joined["roles"] == ["approver"]
        assert (await http.get("/v1/invites", headers=org["admin"].headers)).json() == []

        again = await _accept(http, token, person)
        assert again.status_code == 410
        assert again.json()["code"] == "invite_used"
        # Inviting a member again is refused.
        member_again = await http.post(
            "/v1/invites", json={"email": email, "roles": ["auditor"]}, headers=org["admin"].headers
        )
        assert member_again.status_code == 409
        assert member_again.json()["code"] == "already_member"

    [created] = await _events(engine, org.id, "invite.created")
    assert created["actor_id"] == str(org["admin"].user_id)
    assert created["target_id"] == invite["id"]
    [event] = await _events(engine, org.id, "invite.accepted")
    assert event["actor_id"] == joined["id"]
    assert event["target_type"] == "invite"
    assert event["target_id"] == invite["id"]
    assert event["outcome"] == "success"
    refusals = await _events(engine, org.id, "invite.accept_refused")
    assert [r["reason"].split(":")[0] for r in refusals] == ["invite_used"]


async def test_bad_invite_input_names_the_field(identity_stack: Stack, engine: AsyncEngine) -> None:
    org = await make_org(engine)
    async with identity_stack.http() as http:
        for body, field in [
            ({"email": "not-an-address", "roles": ["approver"]}, "email"),
            ({"email": f"x@{org.slug}.test", "roles": ["boss"]}, "roles.0"),
            ({"email": f"x@{org.slug}.test", "roles": []}, "roles"),
            ({"email": f"x@{org.slug}.test", "roles": ["approver"], "extra": 1}, "extra"),
        ]:
            response = await http.post("/v1/invites", json=body, headers=org["admin"].headers)
            assert response.status_code == 422, response.text
            assert response.json()["errors"][0]["field"] == field
        # Not signed in is told so first; signed in, the empty token is named.
        anonymous = await http.post("/v1/invites/accept", json={"token": ""})
        assert anonymous.status_code == 401
        token = await start_test_session(engine, org["nobody"].user_id, None)
        accept = await http.post(
            "/v1/invites/accept",
            json={"token": ""},
            headers=cookie_headers(identity_stack.settings, token),
        )
        assert accept.status_code == 422
        assert accept.json()["errors"][0]["field"] == "token"


async def test_resending_and_reinviting_retire_the_earlier_token(
    identity_stack: Stack, engine: AsyncEngine, smtp_server: SmtpServer
) -> None:
    org = await make_org(engine)
    email = f"resent@{org.slug}.test"
    async with identity_stack.http() as http:
        invite = await _invite(http, org, email, ["operator"])
        first = await smtp_server.inbox.token_for(email, _TOKEN)
        resent = await http.post(f"/v1/invites/{invite['id']}/resend", headers=org["admin"].headers)
        assert resent.status_code == 200, resent.text
        assert resent.json()["id"] == invite["id"]
        second = await smtp_server.inbox.token_for(email, _TOKEN, count=2)
        assert second != first

        # Inviting the address again replaces the invite: the resent token stops working too.
        replacement = await _invite(http, org, email, ["auditor"])
        third = await smtp_server.inbox.token_for(email, _TOKEN, count=3)
        person = await _signed_in(engine, identity_stack, email)
        refused = await _accept(http, first, person)
        assert refused.status_code == 410
        assert refused.json()["code"] == "invite_invalid"
        refused = await _accept(http, second, person)
        assert refused.status_code == 410
        assert refused.json()["code"] == "invite_revoked"
        accepted = await _accept(http, third, person)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["roles"] == ["auditor"]

        # Another organization's invite is not found; an accepted one is not resent.
        other = await make_org(engine)
        for headers in (other["admin"].headers, other["owner"].headers):
            for method, path in (
                ("POST", f"/v1/invites/{replacement['id']}/resend"),
                ("DELETE", f"/v1/invites/{replacement['id']}"),
            ):
                response = await http.request(method, path, headers=headers)
                assert response.status_code == 404, response.text
                assert response.json()["code"] == "not_found"
        used = await http.post(
            f"/v1/invites/{replacement['id']}/resend", headers=org["admin"].headers
        )
        assert used.status_code == 409
    actions = [a for a, _, _ in await audit_actions(engine, org.id)]
    assert actions.count("invite.created") == 2
    assert actions.count("invite.resent") == 1
    created = await _events(engine, org.id, "invite.created")
    assert created[1]["data"]["replaced_invite_ids"] == [invite["id"]]


async def test_revoked_and_expired_invites_are_refused(
    identity_stack: Stack, engine: AsyncEngine, smtp_server: SmtpServer
) -> None:
    org = await make_org(engine)
    expiring, revoked = f"late@{org.slug}.test", f"withdrawn@{org.slug}.test"
    async with identity_stack.http() as http:
        late = await _invite(http, org, expiring, ["approver"])
        withdrawn = await _invite(http, org, revoked, ["approver"])
        late_token = await smtp_server.inbox.token_for(expiring, _TOKEN)
        withdrawn_token = await smtp_server.inbox.token_for(revoked, _TOKEN)

        # The test's engine connects as the application role, which may update invites of the
        # organization it is bound to (invites have row-level security).
        async with session_factory(engine)() as db, db.begin():
            await bind_org(db, org.id)
            await db.exec(  # type: ignore[call-overload]
                text(
                    "UPDATE invites SET expires_at = now() - interval '1 minute' WHERE id = :id"
                ).bindparams(id=uuid.UUID(late["id"]))
            )
        expired = await _accept(
            http, late_token, await _signed_in(engine, identity_stack, expiring)
        )
        assert expired.status_code == 410
        assert expired.json()["code"] == "invite_expired"

        deleted = await http.delete(f"/v1/invites/{withdrawn['id']}", headers=org["admin"].headers)
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["state"] == "revoked"
        refused = await _accept(
            http, withdrawn_token, await _signed_in(engine, identity_stack, revoked)
        )
        assert refused.status_code == 410
        assert refused.json()["code"] == "invite_revoked"
        bogus = await _accept(
            http,
            "inv_0000000000000000_nope",
            await _signed_in(engine, identity_stack, f"x@{org.slug}.test"),
        )
        assert bogus.status_code == 410
        assert bogus.json()["code"] == "invite_invalid"
    assert [a for a, _, _ in await audit_actions(engine, org.id)].count("invite.revoked") == 1


async def test_accepting_as_another_address_is_refused(
    identity_stack: Stack, engine: AsyncEngine, smtp_server: SmtpServer
) -> None:
    org = await make_org(engine)
    email = f"intended@{org.slug}.test"
    async with identity_stack.http() as http:
        invite = await _invite(http, org, email, ["approver"])
        token = await smtp_server.inbox.token_for(email, _TOKEN)
        intruder = await _signed_in(engine, identity_stack, f"intruder@{org.slug}.test")
        refused = await _accept(http, token, intruder)
        assert refused.status_code == 403, refused.text
        assert refused.json()["code"] == "invite_other_address"
        # Cookie requests must come from this site.
        cross = await _accept(http, token, intruder | {"Origin": "https://evil.test"})
        assert cross.status_code == 403
        assert cross.json()["code"] == "csrf"
        # The invite is untouched and works for its addressee.
        accepted = await _accept(http, token, await _signed_in(engine, identity_stack, email))
        assert accepted.status_code == 200, accepted.text
    [event] = await _events(engine, org.id, "invite.accept_refused")
    assert event["outcome"] == "denied"
    assert event["target_id"] == invite["id"]


async def test_a_concurrent_second_acceptance_is_refused(
    identity_stack: Stack, engine: AsyncEngine, smtp_server: SmtpServer
) -> None:
    org = await make_org(engine)
    email = f"twice@{org.slug}.test"
    async with identity_stack.http() as http:
        await _invite(http, org, email, ["operator"])
        token = await smtp_server.inbox.token_for(email, _TOKEN)
        person = await _signed_in(engine, identity_stack, email)
        results = await asyncio.gather(*(_accept(http, token, person) for _ in range(4)))
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 410, 410, 410], [r.text for r in results]
    assert [a for a, _, _ in await audit_actions(engine, org.id)].count("invite.accepted") == 1


async def test_a_deactivated_member_is_reactivated_not_reinvited(
    identity_stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with identity_stack.http() as http:
        done = await http.post(
            f"/v1/members/{org['auditor'].user_id}/deactivate", headers=org["admin"].headers
        )
        assert done.status_code == 200, done.text
        again = await http.post(
            "/v1/invites",
            json={"email": org["auditor"].email, "roles": ["auditor"]},
            headers=org["admin"].headers,
        )
        assert again.status_code == 409
        assert again.json()["code"] == "member_deactivated"


# ---------------------------------------------------------------------------- organization


async def test_organization_settings_and_security(
    identity_stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with identity_stack.http() as http:
        shown = await http.get("/v1/org", headers=org["operator"].headers)
        assert shown.status_code == 200, shown.text
        assert shown.json()["slug"] == org.slug
        assert shown.json()["require_2fa"] is False
        assert (await http.get("/v1/org", headers=org["nobody"].headers)).status_code == 403

        bad = await http.put(
            "/v1/org/security", json={"require_2fa": "yes"}, headers=org["admin"].headers
        )
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["field"] == "require_2fa"
        refused = await http.put(
            "/v1/org/security", json={"require_2fa": True}, headers=org["operator"].headers
        )
        assert refused.status_code == 403
        # Whoever requires two-factor must have it, or they would lock themselves out.
        lockout = await http.put(
            "/v1/org/security", json={"require_2fa": True}, headers=org["admin"].headers
        )
        assert lockout.status_code == 409
        assert lockout.json()["code"] == "two_factor_missing"
        async with session_factory(engine)() as db, db.begin():
            await db.exec(  # type: ignore[call-overload]
                text("UPDATE users SET totp_enabled_at = now() WHERE id = :id").bindparams(
                    id=org["admin"].user_id
                )
            )
        changed = await http.put(
            "/v1/org/security", json={"require_2fa": True}, headers=org["admin"].headers
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["require_2fa"] is True
        # A session of a member without two-factor is now turned away at the door...
        session = cookie_headers(
            identity_stack.settings,
            await start_test_session(engine, org["operator"].user_id, org.id),
        )
        door = await http.get("/v1/org", headers=session)
        assert door.status_code == 403
        assert door.json()["code"] == "two_factor_required"
        # ...and so is their API key: a key does not get around the requirement.
        by_key = await http.get("/v1/org", headers=org["operator"].headers)
        assert by_key.status_code == 403
        assert by_key.json()["code"] == "two_factor_required"
        # The admin, who has it, goes on.
        assert (await http.get("/v1/org", headers=org["admin"].headers)).status_code == 200
    reasons = [r for a, _, r in await audit_actions(engine, org.id) if a == "access.denied"]
    assert reasons.count("organization requires two-factor sign-in") == 2
    [event] = await _events(engine, org.id, "org.security_changed")
    assert event["data"] == {"require_2fa": {"before": False, "after": True}}


async def test_ownership_transfer_needs_the_exact_slug(
    identity_stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    target = org["approver"].user_id
    async with identity_stack.http() as http:
        for confirm in (org.slug.upper(), f"{org.slug} ", "something-else"):
            wrong = await http.post(
                "/v1/org/ownership-transfer",
                json={"user_id": str(target), "confirm": confirm},
                headers=org["owner"].headers,
            )
            assert wrong.status_code == 422, wrong.text
            assert wrong.json()["errors"][0]["field"] == "confirm"
        as_admin = await http.post(
            "/v1/org/ownership-transfer",
            json={"user_id": str(target), "confirm": org.slug},
            headers=org["admin"].headers,
        )
        assert as_admin.status_code == 403
        to_stranger = await http.post(
            "/v1/org/ownership-transfer",
            json={"user_id": str(uuid.uuid4()), "confirm": org.slug},
            headers=org["owner"].headers,
        )
        assert to_stranger.status_code == 404

        moved = await http.post(
            "/v1/org/ownership-transfer",
            json={"user_id": str(target), "confirm": org.slug},
            headers=org["owner"].headers,
        )
        assert moved.status_code == 200, moved.text
        assert moved.json()["new_owner"]["roles"] == ["owner", "approver"]
        assert moved.json()["previous_owner"]["roles"] == ["admin"]
        members = (await http.get("/v1/members", headers=org["auditor"].headers)).json()
        assert _member(members, target)["roles"] == ["owner", "approver"]
        assert _member(members, org["owner"].user_id)["roles"] == ["admin"]
        # The former owner's key was made for owner only: it now grants nothing owner-only.
        again = await http.post(
            "/v1/org/ownership-transfer",
            json={"user_id": str(target), "confirm": org.slug},
            headers=org["owner"].headers,
        )
        assert again.status_code == 403
    [event] = await _events(engine, org.id, "org.ownership_transferred")
    assert event["actor_id"] == str(org["owner"].user_id)
    assert event["data"]["to_user_id"] == str(target)
    assert event["data"]["from_roles"] == {"before": ["owner"], "after": ["admin"]}


async def test_closing_the_organization_revokes_every_key(
    identity_stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    session = cookie_headers(
        identity_stack.settings, await start_test_session(engine, org["admin"].user_id, org.id)
    )
    async with identity_stack.http() as http:
        wrong = await http.post(
            "/v1/org/close", json={"confirm": "not-it"}, headers=org["owner"].headers
        )
        assert wrong.status_code == 422
        assert wrong.json()["errors"][0]["field"] == "confirm"
        as_admin = await http.post(
            "/v1/org/close", json={"confirm": org.slug}, headers=org["admin"].headers
        )
        assert as_admin.status_code == 403

        closed = await http.post(
            "/v1/org/close", json={"confirm": org.slug}, headers=org["owner"].headers
        )
        assert closed.status_code == 200, closed.text
        assert closed.json()["closed_at"] is not None
        assert closed.json()["api_keys_revoked"] == 8
        assert closed.json()["sessions_revoked"] == 1
        for member in org.members.values():
            response = await http.get("/v1/org", headers=member.headers)
            assert response.status_code == 401, f"{member.email}: {response.text}"
        assert (await http.get("/v1/members", headers=session)).status_code == 401
    [event] = await _events(engine, org.id, "org.closed")
    assert event["actor_id"] == str(org["owner"].user_id)
    assert event["data"]["api_keys_revoked"] == 8
