"""Tenant isolation: every route that takes an id answers 404 to another organization, with no data."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.api.app import create_app
from blocks.core.context import AuthMethod, OrgContext, OrgId
from blocks.core.roles import Role
from blocks.infra.db import bind_org, session_factory
from blocks.models.agents.registry import create_agent
from blocks.models.agents.tokens import issue_agent_token
from blocks.models.identity.invites import create_invite
from blocks.models.identity.sso.domains import claim_domain
from blocks.models.identity.sso.providers import Protocol, create_provider
from blocks.models.integrations.webhook_deliveries import (
    NewMessage,
    add_deliveries,
    list_deliveries,
)
from blocks.models.integrations.webhooks import create_destination
from blocks.models.llm.credentials import create_credential
from tests.e2e.agent_stack import SKILLS, card
from tests.support import (
    EXPENSE,
    Stack,
    cookie_headers,
    make_org,
    start_test_session,
    wait_for_status,
)

# Every path parameter a route may take, with how to fill it from organization A's data.
_PARAM_SOURCES = {
    "run_id",
    "step_id",
    "user_id",
    "delegation_id",
    "slack_user_id",
    "group_id",
    "key_id",
    "invite_id",
    "session_id",
    "credential_id",
    "agent_id",
    "token_id",
    "provider_id",
    "domain",
    "attachment_id",
    "destination_id",
    "delivery_id",
    "review_id",
}
_SLACK_USER = "U0TENANTA"
_SLACK_USERS = "/v1/integrations/slack/users/{slack_user_id}"
# A body that would be valid for each state-changing route, so only the tenant check can refuse.
# "{user_id}" stands for A's member, filled in per test.
_BODIES = {
    "/v1/runs/{run_id}/steps/{step_id}/decisions": {"decision": "approve"},
    "/v1/members/{user_id}/erase-personal-data": {"confirm": True},
    "/v1/members/{user_id}/roles": {"roles": ["approver"]},
    "/v1/runs/{run_id}/cancel": {"reason": "not yours to cancel"},
    "/v1/llm/credentials/{credential_id}/key": {"api_key": "sk-ok-tenant-b-0000000000"},
    "/v1/llm/credentials/{credential_id}": {"allowed_models": ["gpt-4o-mini"]},
    "/v1/agents/{agent_id}": {"public": True},
    "/v1/agents/{agent_id}/tokens": {"name": "not yours"},
    "/v1/org/sso/providers/{provider_id}": {"enabled": False},
    "/v1/integrations/webhooks/{destination_id}": {"enabled": False},
    "/v1/integrations/webhooks/{destination_id}/replay": {"from_seq": 1},
}
# B's members that hold the route's permission, where that is not owner (+ approver for POSTs).
_MEMBERS = {
    "/v1/members/{user_id}/erase-personal-data": ("owner", "admin"),
    _SLACK_USERS: ("owner", "admin"),
    "/v1/members/{user_id}/deactivate": ("owner", "admin"),
    "/v1/members/{user_id}/reactivate": ("owner", "admin"),
    "/v1/members/{user_id}/sessions/revoke": ("owner", "admin"),
    "/v1/invites/{invite_id}/resend": ("owner", "admin"),
    "/v1/runs/{run_id}/cancel": ("owner", "operator"),
    "/v1/agents/{agent_id}/tokens": ("owner", "admin"),
    "/v1/agents/{agent_id}/tokens/{token_id}/rotate": ("owner", "admin"),
    "/v1/org/domains/{domain}/verify": ("owner", "admin"),
    "/v1/integrations/webhooks/{destination_id}/rotate-secret": ("owner", "admin"),
    "/v1/integrations/webhooks/{destination_id}/replay": ("owner", "admin"),
    "/v1/integrations/webhooks/{destination_id}/deliveries/{delivery_id}/redeliver": (
        "owner",
        "admin",
    ),
}
# The person's own routes take a session cookie, not an API key: B's owner signs in for them.
_PERSONAL_PREFIX = "/v1/me/"


def _id_routes(stack: Stack) -> list[tuple[str, str]]:
    """Every (method, path) with a path parameter, from the app's own route table (OpenAPI)."""
    app = create_app(stack.settings)
    routes: list[tuple[str, str]] = []
    for path, operations in app.openapi()["paths"].items():
        params = set(re.findall(r"{(\w+)}", path))
        if not params:
            continue
        if params == {"token"}:
            continue  # a decision link: the token is the credential (tests/e2e/test_decision_links.py)
        if path.startswith("/v1/orgs/{org_slug}/agents/"):
            continue  # a public card, by design (tests/e2e/test_agent_registry.py)
        if path.startswith("/v1/sso/"):
            # Sign-in by an organization's slug, public by design; the provider's signed answer
            # is the credential (tests/e2e/test_sso_oidc.py, test_sso_saml.py).
            continue
        if path.startswith("/v1/agents/tasks/"):
            # An agent token's route: another agent's task is refused there, and audited
            # (tests/e2e/test_agent_pubnub.py); members' keys never open it.
            continue
        unknown = params - _PARAM_SOURCES
        assert not unknown, f"{path} takes {unknown}: teach this test how to fill them"
        routes.extend((method.upper(), path) for method in sorted(operations))
    return routes


async def test_every_id_route_is_404_for_another_organization(
    stack: Stack, engine: AsyncEngine
) -> None:
    org_a, org_b = await make_org(engine), await make_org(engine)
    routes = _id_routes(stack)
    assert ("POST", "/v1/runs/{run_id}/steps/{step_id}/decisions") in routes
    assert ("GET", "/v1/runs/{run_id}") in routes
    async with stack.http() as http:
        started = await http.post(
            "/v1/runs",
            json={"workflow": "expense_approval", "input": EXPENSE},
            headers=org_a["operator"].headers,
        )
        run_id = started.json()["id"]
        await wait_for_status(
            http, run_id, org_a["operator"].headers, status="running", stage="awaiting_approval"
        )
        review = await http.post("/v1/access-reviews", headers=org_a["owner"].headers)
        assert review.status_code == 201, review.text
        review_id = review.json()["id"]
        attached = await http.post(
            f"/v1/runs/{run_id}/attachments",
            files={"file": ("notes.txt", b"Team lunch receipt", "text/plain")},
            headers=org_a["operator"].headers,
        )
        assert attached.status_code == 201, attached.text
        delegated = await http.post(
            "/v1/delegations",
            json={
                "delegate_user_id": str(org_a["approver2"].user_id),
                "ends_at": "2099-01-01T00:00:00Z",
            },
            headers=org_a["approver"].headers,
        )
        assert delegated.status_code == 201, delegated.text
        delegation_id = delegated.json()["id"]
        group = await http.post(
            "/v1/groups", json={"name": "finance"}, headers=org_a["admin"].headers
        )
        assert group.status_code == 201, group.text
        group_id = group.json()["id"]
        # A's approver linked a Slack user (with their own code, tests/e2e/test_slack_links.py).
        async with session_factory(engine)() as session, session.begin():
            await bind_org(session, org_a.id)
            await session.exec(  # type: ignore[call-overload]
                text(
                    "INSERT INTO slack_user_links (org_id, slack_user_id, user_id, created_at, "
                    "confirmed_at) VALUES (:o, :s, :u, now(), now())"
                ).bindparams(o=org_a.id, s=_SLACK_USER, u=org_a["approver"].user_id)
            )
        keys = await http.get("/v1/api-keys", headers=org_a["operator"].headers)
        key_id = keys.json()[0]["id"]
        ctx_a = OrgContext(
            org_id=OrgId(org_a.id),
            user_id=org_a["owner"].user_id,
            roles=(Role.OWNER,),
            auth=AuthMethod.SYSTEM,
        )
        invited = f"invitee@{org_a.slug}.test"
        async with session_factory(engine)() as session, session.begin():
            invite, _, _ = await create_invite(
                ctx_a, session, email=invited, roles=[Role.APPROVER], lifetime=timedelta(days=7)
            )
        async with session_factory(engine)() as session, session.begin():
            credential = await create_credential(
                ctx_a,
                session,
                name="default",
                provider="openai",
                base_url="https://api.openai.com/v1",
                api="chat",
                allowed_models=[],
                api_key="sk-ok-tenant-a-0000000000",
            )
        async with session_factory(engine)() as session, session.begin():
            agent = await create_agent(ctx_a, session, name="tenant-a", card=card("tenant-a"))
            agent_token, _ = await issue_agent_token(
                ctx_a, session, agent_id=agent.id, name="a", skills=list(SKILLS)
            )
        async with session_factory(engine)() as session, session.begin():
            provider = await create_provider(
                ctx_a,
                session,
                name="tenant-a idp",
                protocol=Protocol.OIDC,
                config={"issuer": "https://idp.example.com", "client_id": "tenant-a"},
                secret="client-secret-of-tenant-a",
            )
            domain = await claim_domain(ctx_a, session, f"{org_a.slug}.example")
        async with session_factory(engine)() as session, session.begin():
            destination, _ = await create_destination(
                ctx_a,
                session,
                url="https://8.8.8.8/tenant-a",
                description="tenant A's hook",
                event_types=["audit.*"],
            )
            event = NewMessage(event_id=uuid.uuid4(), event_seq=1, event_type="run.started")
            await add_deliveries(ctx_a, session, destination.id, [event])
            delivery_id = (await list_deliveries(ctx_a, session, destination.id, limit=1))[0].id
        session_a = await start_test_session(engine, org_a["operator"].user_id, org_a.id)
        async with session_factory(engine)() as session, session.begin():
            session_id = (
                await session.exec(  # type: ignore[call-overload]
                    text("SELECT id FROM user_sessions WHERE user_id = :u").bindparams(
                        u=org_a["operator"].user_id
                    )
                )
            ).one()[0]
        assert session_a
        cookie_b = cookie_headers(
            stack.settings, await start_test_session(engine, org_b["owner"].user_id, org_b.id)
        )
        secrets_of_a = [str(m.user_id) for m in org_a.members.values()] + [
            "Team lunch",
            org_a.slug,
            invited,
            destination.url,
        ]

        for method, template in routes:
            if (method, template) == ("PUT", _SLACK_USERS):
                continue  # refused to everyone, in every organization (test_slack_links.py)
            path = template.format(
                run_id=run_id,
                step_id="approve",
                user_id=org_a["operator"].user_id,
                delegation_id=delegation_id,
                group_id=group_id,
                slack_user_id=_SLACK_USER,
                key_id=key_id,
                invite_id=invite.id,
                session_id=session_id,
                credential_id=credential.id,
                agent_id=agent.id,
                token_id=agent_token.id,
                provider_id=provider.id,
                domain=domain.domain,
                attachment_id=attached.json()["id"],
                destination_id=destination.id,
                delivery_id=delivery_id,
                review_id=review_id,
            )
            body = {
                k: v.format(user_id=org_a["operator"].user_id) if isinstance(v, str) else v
                for k, v in (_BODIES.get(template) or {}).items()
            }
            # B's owner holds every permission and B's approver may decide: only tenancy refuses.
            members = _MEMBERS.get(template) or (
                ("owner", "approver") if method == "POST" else ("owner",)
            )
            for member in members:
                headers = (
                    cookie_b if template.startswith(_PERSONAL_PREFIX) else org_b[member].headers
                )
                # An upload is multipart: a valid file, so only the tenant check can refuse it.
                upload = (
                    {"files": {"file": ("b.txt", b"from B", "text/plain")}}
                    if template.endswith("/attachments") and method == "POST"
                    else {"json": body or None}
                )
                response = await http.request(method, path, headers=headers, **upload)
                assert response.status_code == 404, (
                    f"{method} {path} as B's {member}: {response.text}"
                )
                assert response.json()["code"] == "not_found"
                for secret in secrets_of_a:
                    if secret in path:
                        continue  # the caller's own URL, echoed as the problem's `instance`
                    assert secret not in response.text, f"{method} {path} leaked {secret}"

        # The audit list filtered by A's run is refused to B too.
        response = await http.get(
            f"/v1/audit-events?run_id={run_id}", headers=org_b["owner"].headers
        )
        assert response.status_code == 404, response.text
        # B's own audit log holds none of A's events.
        events = (await http.get("/v1/audit-events", headers=org_b["owner"].headers)).json()[
            "events"
        ]
        assert all(e["run_id"] != run_id for e in events)

        # The same routes work for A, so the 404s above came from tenancy and not a wrong URL.
        assert (
            await http.get(f"/v1/runs/{run_id}", headers=org_a["operator"].headers)
        ).status_code == 200
        assert (
            await http.get(f"/v1/runs/{run_id}/audit-events", headers=org_a["auditor"].headers)
        ).status_code == 200
        decided = await http.post(
            f"/v1/runs/{run_id}/steps/approve/decisions",
            json={"decision": "approve"},
            headers=org_a["approver"].headers,
        )
        assert decided.status_code == 200, decided.text


async def test_row_level_security_hides_other_organizations_rows(
    stack: Stack, engine: AsyncEngine
) -> None:
    """The database's last line: a query with no org filter still sees only the bound org."""
    org_a, org_b = await make_org(engine), await make_org(engine)
    async with stack.http() as http:
        for org in (org_a, org_b):
            response = await http.post(
                "/v1/runs",
                json={"workflow": "expense_approval", "input": EXPENSE},
                headers=org["operator"].headers,
            )
            assert response.status_code == 201
    async with session_factory(engine)() as session, session.begin():
        await bind_org(session, org_a.id)
        orgs_seen = {
            row[0]
            for table in ("runs", "audit_events", "memberships", "audit_chain_heads")
            for row in (await session.exec(text(f"SELECT DISTINCT org_id FROM {table}"))).all()  # type: ignore[call-overload]
        }
        assert orgs_seen == {org_a.id}
    async with session_factory(engine)() as session, session.begin():
        # With no org bound, tenant tables show nothing at all.
        count = (await session.exec(text("SELECT count(*) FROM runs"))).one()[0]  # type: ignore[call-overload]
        assert count == 0
