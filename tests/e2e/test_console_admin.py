"""The admin console's refusals over HTTP: pages an approver may not open answer the 403 page and
leave an access.denied event; a form posted from another site is refused and audited; a change
the API refuses re-renders with the API's own message and changes nothing."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.infra.db import bind_org, session_factory
from tests.support import (
    Org,
    Stack,
    audit_actions,
    make_org,
    signed_in_headers,
)

ADMIN_ONLY = (
    ("/console/admin/members", "member:manage"),
    ("/console/admin/invites", "member:manage"),
    ("/console/admin/groups", "member:manage"),
    ("/console/admin/security", "org:security"),
    ("/console/admin/integrations", "integration:manage"),
    ("/console/admin/api-keys?all=true", "api_key:manage"),
)


async def _denials(engine: AsyncEngine, org: Org) -> list[tuple[str, str | None, str]]:
    """(target, reason, actor) of the organization's access.denied events, in chain order."""
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org.id)
        rows = await session.exec(  # type: ignore[call-overload]
            text(
                "SELECT target_id, reason, actor_id FROM audit_events"
                " WHERE action = 'access.denied' ORDER BY seq"
            )
        )
        return [(r[0], r[1], r[2]) for r in rows.all()]


async def _roles(stack: Stack, org: Org, user_id: uuid.UUID) -> list[str]:
    async with stack.http() as http:
        listed = await http.get("/v1/members", headers=org["auditor"].headers)
    assert listed.status_code == 200, listed.text
    member: dict[str, Any] = next(m for m in listed.json() if m["id"] == str(user_id))
    return list(member["roles"])


async def test_an_approver_gets_the_403_page_and_each_refusal_is_audited(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    headers = await signed_in_headers(stack, org, "approver")
    async with stack.http() as http:
        for path, permission in ADMIN_ONLY:
            page = await http.get(path, headers=headers)
            assert page.status_code == 403, f"{path}: {page.status_code}"
            assert page.headers["content-type"].startswith("text/html")
            assert "<h1>Forbidden</h1>" in page.text
            assert f"your roles do not grant {permission}" in page.text
        # A form of an admin page is refused the same way, before anything is read or changed.
        posted = await http.post(
            f"/console/admin/members/{org['approver2'].user_id}/roles",
            data={"roles": "admin"},
            headers=headers,
        )
        assert posted.status_code == 403
        assert "your roles do not grant member:manage" in posted.text
        # The index shows an approver only what their roles open: their keys and sessions.
        index = await http.get("/console/admin", headers=headers)
        assert index.status_code == 200
        assert 'href="/console/admin/api-keys"' in index.text
        assert 'href="/console/admin/sessions"' in index.text
        assert 'href="/console/admin/members"' not in index.text
        # Navigation leaves Admin out for them.
        assert 'href="/console/admin"' not in index.text
    denials = await _denials(engine, org)
    expected = [
        (f"GET {path.split('?')[0]}", f"missing permission {permission}")
        for path, permission in ADMIN_ONLY
    ] + [
        (
            f"POST /console/admin/members/{org['approver2'].user_id}/roles",
            "missing permission member:manage",
        )
    ]
    assert [(target, reason) for target, reason, _ in denials] == expected
    assert {actor for _, _, actor in denials} == {str(org["approver"].user_id)}
    assert await _roles(stack, org, org["approver2"].user_id) == ["approver"]


async def test_a_role_change_from_another_site_is_refused_and_audited(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    target = org["operator"].user_id
    headers = await signed_in_headers(stack, org, "admin")
    path = f"/console/admin/members/{target}/roles"
    async with stack.http() as http:
        forged = await http.post(
            path,
            data={"roles": "admin"},
            headers=headers | {"Origin": "https://evil.example"},
        )
        assert forged.status_code == 403
        assert forged.headers["content-type"].startswith("text/html")
        assert "cross-origin request refused" in forged.text
        # Without Origin or Referer it is refused too (a browser always names one on a POST).
        bare = await http.post(path, data={"roles": "admin"}, headers={"Cookie": headers["Cookie"]})
        assert bare.status_code == 403
        # The same form from this site goes through (the refusals were about the origin only).
        same = await http.post(path, data={"roles": ["operator", "auditor"]}, headers=headers)
        assert same.status_code == 303, same.text
        assert same.headers["location"] == "/console/admin/members?done=roles"
        shown = await http.get(same.headers["location"], headers=headers)
        assert "Roles changed." in shown.text
    assert await _roles(stack, org, target) == ["operator", "auditor"]
    denials = await _denials(engine, org)
    assert [(t, r) for t, r, _ in denials] == [
        (f"POST {path}", "csrf: cross-origin request refused"),
        (f"POST {path}", "csrf: request without Origin or Referer"),
    ]
    actions = [action for action, _, _ in await audit_actions(engine, org.id)]
    assert actions.count("member.roles_changed") == 1


async def test_a_refused_change_shows_the_apis_message_and_changes_nothing(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    owner = org["owner"].user_id
    headers = await signed_in_headers(stack, org, "owner")
    async with stack.http() as http:
        demoted = await http.post(
            f"/console/admin/members/{owner}/roles", data={"roles": "admin"}, headers=headers
        )
        assert demoted.status_code == 409, demoted.text
        assert demoted.headers["content-type"].startswith("text/html")
        assert "an organization keeps at least one active owner" in demoted.text
        # The page is the member list again, the owner still shown as owner.
        assert "<h1>Members and roles</h1>" in demoted.text
        deactivated = await http.post(f"/console/admin/members/{owner}/deactivate", headers=headers)
        assert deactivated.status_code == 409
        assert "an organization keeps at least one active owner" in deactivated.text
        # Bad input names the field, with the refusal's status.
        empty = await http.post(f"/console/admin/members/{owner}/roles", data={}, headers=headers)
        assert empty.status_code == 422
        assert "<strong>roles</strong>" in empty.text
        unknown = await http.post(
            f"/console/admin/members/{owner}/roles", data={"roles": "boss"}, headers=headers
        )
        assert unknown.status_code == 422
        assert "roles.0" in unknown.text
        # A key with a role its maker does not hold: the API's message, and no key.
        approver = await signed_in_headers(stack, org, "approver")
        key = await http.post(
            "/console/admin/api-keys",
            data={"name": "too strong", "roles": "admin"},
            headers=approver,
        )
        assert key.status_code == 422
        assert "a key can only hold roles you hold" in key.text
        assert "too strong" in key.text  # what was typed is kept in the form
        assert 'class="secret"' not in key.text
    assert await _roles(stack, org, owner) == ["owner"]
    actions = [action for action, _, _ in await audit_actions(engine, org.id)]
    assert "member.roles_changed" not in actions
    assert "member.deactivated" not in actions
    assert "api_key.created" not in actions


async def test_an_admin_opens_every_section_and_its_forms_use_the_apis_rules(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    headers = await signed_in_headers(stack, org, "admin")
    other_session = await signed_in_headers(stack, org, "admin")
    sections = ("members", "invites", "groups", "api-keys", "security", "integrations", "sessions")
    async with stack.http() as http:
        index = await http.get("/console/admin", headers=headers)
        assert index.status_code == 200
        for section in sections:
            assert f'href="/console/admin/{section}"' in index.text
            page = await http.get(f"/console/admin/{section}", headers=headers)
            assert page.status_code == 200, f"{section}: {page.text}"
        every = await http.get("/console/admin/api-keys?all=true", headers=headers)
        assert every.status_code == 200
        assert org["operator"].email in every.text  # each key with its member

        # This stack sends no email: the invite is refused with the API's reason, and no invite.
        invite = await http.post(
            "/console/admin/invites",
            data={"email": f"someone@{org.slug}.test", "roles": "approver"},
            headers=headers,
        )
        assert invite.status_code == 503
        assert "this deployment sends no email" in invite.text
        assert f'value="someone@{org.slug}.test"' in invite.text

        # Settings: one saved, one refused by the API's rule, one refused as bad input.
        saved = await http.post(
            "/console/admin/security/decision-links",
            data={"link_only_decisions": "true"},
            headers=headers,
        )
        assert saved.status_code == 303
        assert saved.headers["location"] == "/console/admin/security?done=saved"
        two_factor = await http.post(
            "/console/admin/security/two-factor", data={"require_2fa": "true"}, headers=headers
        )
        assert two_factor.status_code == 409
        assert "set up two-factor sign-in for yourself first" in two_factor.text
        vague = await http.post(
            "/console/admin/security/approvals",
            data={"approvers_from_input": "maybe"},
            headers=headers,
        )
        assert vague.status_code == 422
        assert "approvers_from_input" in vague.text
        org_now = (await http.get("/v1/org", headers=org["auditor"].headers)).json()
        assert org_now["link_only_decisions"] is True
        assert org_now["require_2fa"] is False

        # A group, a member in it; a name the API refuses.
        created = await http.post(
            "/console/admin/groups", data={"name": "finance"}, headers=headers
        )
        assert created.status_code == 303
        [group] = (await http.get("/v1/groups", headers=org["auditor"].headers)).json()
        added = await http.post(
            f"/console/admin/groups/{group['id']}/members",
            data={"user_id": str(org["approver"].user_id)},
            headers=headers,
        )
        assert added.status_code == 303
        shown = await http.get("/console/admin/groups", headers=headers)
        assert org["approver"].email in shown.text
        bad = await http.post("/console/admin/groups", data={"name": "Finance!"}, headers=headers)
        assert bad.status_code == 422
        [group] = (await http.get("/v1/groups", headers=org["auditor"].headers)).json()
        assert group["members"] == [str(org["approver"].user_id)]

        # A new key's secret is on the answer only, which no cache keeps.
        made = await http.post(
            "/console/admin/api-keys",
            data={"name": "ci", "roles": "admin", "expires_at": "2099-01-01T00:00"},
            headers=headers,
        )
        assert made.status_code == 201, made.text
        assert made.headers["cache-control"] == "no-store"
        assert 'class="secret"' in made.text
        assert "2099-01-01 00:00" in made.text  # the form's time read as UTC
        listed = await http.get("/console/admin/api-keys", headers=headers)
        assert '<td class="key-name">ci</td>' in listed.text
        assert 'class="secret"' not in listed.text

        # Signing out every other session ends the second one, not this one.
        out = await http.post("/console/admin/sessions/others/revoke", headers=headers)
        assert out.status_code == 303
        assert (await http.get("/console/admin/sessions", headers=headers)).status_code == 200
        ended = await http.get("/console/admin/sessions", headers=other_session)
        assert ended.status_code == 303
        assert ended.headers["location"].startswith("/console/sign-in")
    actions = [action for action, _, _ in await audit_actions(engine, org.id)]
    assert "invite.created" not in actions
    assert actions.count("org.decision_link_policy_changed") == 1
    assert "org.security_changed" not in actions
    assert actions.count("group.created") == 1
    assert actions.count("group.member_added") == 1
