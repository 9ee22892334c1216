"""The authorization matrix: every route of the app, from its own route table (so a new route
cannot escape), called by every role and by a member with no role, with an API key and with a
signed-in session; each answer is allowed or 403 exactly as the table below says, and every 403 is
written to the audit log as `access.denied`. The table is the specification, written out by
hand; the roles' permissions come from `core.roles`, the one place access rules are decided."""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.api.app import create_app
from blocks.core.roles import Permission, Role, has_permission
from tests.support import Org, Stack, audit_actions, cookie_headers, make_org, start_test_session

P = Permission
# Reached without an API key or session, each guarded by its own credential or none at all.
PUBLIC = "public"
# The signed-in person's own routes, before or regardless of any organization: session only.
PERSON = "person"
# Routes that refuse every credential and role (403, audited): kept only to say why.
REFUSED = "refused"
# A remote agent's own routes: its agent token only (no API key, no session: 401).
AGENT = "agent"
# The SCIM service: its organization's SCIM token only (no API key, no session: 401).
SCIM = "scim"

EXPECTED: dict[tuple[str, str], Permission | str] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/docs"): PUBLIC,  # the API reference and its assets
    ("GET", "/docs/assets/{digest}/{name}"): PUBLIC,
    ("GET", "/v1/audit/public-key"): PUBLIC,
    ("GET", "/v1/decision-links/{token}"): PUBLIC,  # the link's secret
    ("POST", "/v1/decision-links/{token}"): PUBLIC,
    ("POST", "/v1/integrations/slack/interactions"): PUBLIC,  # Slack's signature
    ("POST", "/v1/auth/signup"): PUBLIC,
    ("POST", "/v1/auth/signup/verify"): PUBLIC,  # the emailed token
    ("POST", "/v1/auth/signin"): PUBLIC,
    ("POST", "/v1/auth/signin-link"): PUBLIC,
    ("POST", "/v1/auth/signin-link/verify"): PUBLIC,
    ("POST", "/v1/auth/password-reset"): PUBLIC,
    ("POST", "/v1/auth/password-reset/confirm"): PUBLIC,
    # Single sign-on: the provider's signed answer (and the browser binding) is the credential.
    ("GET", "/v1/sso/{org_slug}"): PUBLIC,
    ("GET", "/v1/sso/{org_slug}/{provider_id}/start"): PUBLIC,
    ("GET", "/v1/sso/{org_slug}/{provider_id}/oidc/callback"): PUBLIC,
    ("POST", "/v1/sso/{org_slug}/{provider_id}/saml/acs"): PUBLIC,
    ("GET", "/v1/sso/{org_slug}/{provider_id}/saml/metadata"): PUBLIC,
    # Pages behind emailed links; each POST runs the API route's own checks (test_link_pages).
    ("GET", "/auth/signup"): PUBLIC,
    ("POST", "/auth/signup"): PUBLIC,
    ("GET", "/auth/signin"): PUBLIC,
    ("POST", "/auth/signin"): PUBLIC,
    ("POST", "/auth/2fa"): PUBLIC,
    ("GET", "/auth/reset"): PUBLIC,
    ("POST", "/auth/reset"): PUBLIC,
    ("GET", "/auth/email"): PUBLIC,
    ("POST", "/auth/email"): PUBLIC,
    ("GET", "/auth/invite"): PUBLIC,
    ("POST", "/auth/invite"): PUBLIC,
    ("POST", "/v1/auth/signin/2fa"): PERSON,
    ("GET", "/v1/auth/orgs"): PERSON,
    ("POST", "/v1/auth/org"): PERSON,
    ("POST", "/v1/auth/switch-org"): PERSON,
    ("POST", "/v1/auth/signout"): PERSON,
    ("POST", "/v1/orgs"): PERSON,
    ("POST", "/v1/invites/accept"): PERSON,
    ("GET", "/v1/me"): PERSON,
    ("PUT", "/v1/me/password"): PERSON,
    ("POST", "/v1/me/email"): PERSON,
    ("POST", "/v1/me/email/confirm"): PERSON,
    ("GET", "/v1/me/sessions"): PERSON,
    ("DELETE", "/v1/me/sessions/{session_id}"): PERSON,
    ("GET", "/v1/me/2fa"): PERSON,
    ("POST", "/v1/me/2fa/setup"): PERSON,
    ("POST", "/v1/me/2fa/enable"): PERSON,
    ("POST", "/v1/me/2fa/disable"): PERSON,
    ("POST", "/v1/me/2fa/backup-codes"): PERSON,
    ("POST", "/v1/me/slack-link"): PERSON,  # the member's own proof behind a Slack link
    ("POST", "/v1/runs"): P.RUN_START,
    ("GET", "/v1/runs"): P.RUN_READ,
    ("GET", "/v1/runs/{run_id}"): P.RUN_READ,
    ("POST", "/v1/runs/{run_id}/steps/{step_id}/decisions"): P.STEP_DECIDE,
    ("POST", "/v1/runs/{run_id}/cancel"): P.RUN_CANCEL,
    # Uploading also needs run:start or step:decide, checked after the body (test_attachments).
    ("POST", "/v1/runs/{run_id}/attachments"): P.RUN_READ,
    ("GET", "/v1/runs/{run_id}/attachments"): P.RUN_READ,
    ("GET", "/v1/runs/{run_id}/attachments/{attachment_id}"): P.RUN_READ,
    ("GET", "/v1/runs/{run_id}/input"): P.RUN_READ,
    ("GET", "/v1/org/attachments"): P.ORG_READ,
    ("PUT", "/v1/org/attachments"): P.ORG_SECURITY,
    ("POST", "/v1/codec/decode"): P.RUN_DECODE,
    ("POST", "/v1/codec/encode"): P.RUN_DECODE,
    ("GET", "/v1/workflows"): P.RUN_READ,
    ("PUT", "/v1/org/workflows"): P.WORKFLOW_MANAGE,
    ("GET", "/v1/inbox"): P.STEP_DECIDE,
    ("GET", "/v1/delegations"): P.STEP_DECIDE,
    ("POST", "/v1/delegations"): P.STEP_DECIDE,
    ("DELETE", "/v1/delegations/{delegation_id}"): P.STEP_DECIDE,
    ("GET", "/v1/groups"): P.ORG_READ,
    ("POST", "/v1/groups"): P.MEMBER_MANAGE,
    ("PUT", "/v1/groups/{group_id}/members/{user_id}"): P.MEMBER_MANAGE,
    ("DELETE", "/v1/groups/{group_id}/members/{user_id}"): P.MEMBER_MANAGE,
    ("GET", "/v1/members"): P.ORG_READ,
    ("PUT", "/v1/members/{user_id}/roles"): P.MEMBER_MANAGE,
    ("POST", "/v1/members/{user_id}/deactivate"): P.MEMBER_MANAGE,
    ("POST", "/v1/members/{user_id}/reactivate"): P.MEMBER_MANAGE,
    ("POST", "/v1/members/{user_id}/sessions/revoke"): P.ORG_SECURITY,
    ("POST", "/v1/members/{user_id}/erase-personal-data"): P.PRIVACY_ERASE,
    ("GET", "/v1/invites"): P.MEMBER_MANAGE,
    ("POST", "/v1/invites"): P.MEMBER_MANAGE,
    ("POST", "/v1/invites/{invite_id}/resend"): P.MEMBER_MANAGE,
    ("DELETE", "/v1/invites/{invite_id}"): P.MEMBER_MANAGE,
    ("GET", "/v1/api-keys"): P.API_KEY_OWN,
    ("POST", "/v1/api-keys"): P.API_KEY_OWN,
    ("DELETE", "/v1/api-keys/{key_id}"): P.API_KEY_OWN,
    ("GET", "/v1/org"): P.ORG_READ,
    ("PUT", "/v1/org/security"): P.ORG_SECURITY,
    # Access reviews (issue 16): owners and admins run them, auditors read them too.
    ("GET", "/v1/org/access-review-settings"): P.ORG_SECURITY,
    ("PUT", "/v1/org/access-review-settings"): P.ORG_SECURITY,
    ("POST", "/v1/access-reviews"): P.ORG_SECURITY,
    ("GET", "/v1/access-reviews"): P.AUDIT_READ,
    ("GET", "/v1/access-reviews/{review_id}"): P.AUDIT_READ,
    ("GET", "/v1/access-reviews/{review_id}/report.csv"): P.AUDIT_READ,
    ("GET", "/v1/org/sso/providers"): P.ORG_SECURITY,
    ("POST", "/v1/org/sso/providers"): P.ORG_SECURITY,
    ("GET", "/v1/org/sso/providers/{provider_id}"): P.ORG_SECURITY,
    ("PATCH", "/v1/org/sso/providers/{provider_id}"): P.ORG_SECURITY,
    ("DELETE", "/v1/org/sso/providers/{provider_id}"): P.ORG_SECURITY,
    ("GET", "/v1/org/sso"): P.ORG_SECURITY,
    ("PUT", "/v1/org/sso"): P.ORG_SECURITY,
    ("GET", "/v1/org/sso/group-mappings"): P.ORG_SECURITY,
    ("PUT", "/v1/org/sso/group-mappings"): P.ORG_SECURITY,
    ("GET", "/v1/org/domains"): P.ORG_SECURITY,
    ("POST", "/v1/org/domains"): P.ORG_SECURITY,
    ("POST", "/v1/org/domains/{domain}/verify"): P.ORG_SECURITY,
    ("DELETE", "/v1/org/domains/{domain}"): P.ORG_SECURITY,
    ("PUT", "/v1/org/decision-link-policy"): P.ORG_SECURITY,
    ("GET", "/v1/org/approvals"): P.ORG_READ,
    ("PUT", "/v1/org/approvals"): P.ORG_SECURITY,
    ("POST", "/v1/org/ownership-transfer"): P.ORG_OWN,
    ("POST", "/v1/org/close"): P.ORG_OWN,
    ("GET", "/v1/audit-events"): P.AUDIT_READ,
    ("GET", "/v1/runs/{run_id}/audit-events"): P.AUDIT_READ,
    ("POST", "/v1/audit/checkpoints"): P.AUDIT_CHECKPOINT,
    ("GET", "/v1/audit/checkpoints"): P.AUDIT_READ,
    ("GET", "/v1/audit/export"): P.AUDIT_READ,
    ("GET", "/v1/audit/verify"): P.AUDIT_READ,
    ("GET", "/v1/runs/{run_id}/custody"): P.AUDIT_READ,
    ("GET", "/v1/reports/sla"): P.AUDIT_READ,
    ("GET", "/v1/integrations/slack"): P.INTEGRATION_MANAGE,
    ("PUT", "/v1/integrations/slack"): P.INTEGRATION_MANAGE,
    # No one links a Slack user for someone else, admins included (the member does: above).
    ("PUT", "/v1/integrations/slack/users/{slack_user_id}"): REFUSED,
    ("DELETE", "/v1/integrations/slack/users/{slack_user_id}"): P.INTEGRATION_MANAGE,
    ("POST", "/v1/llm/credentials"): P.INTEGRATION_MANAGE,
    ("GET", "/v1/llm/credentials"): P.INTEGRATION_MANAGE,
    ("GET", "/v1/llm/credentials/{credential_id}"): P.INTEGRATION_MANAGE,
    ("PUT", "/v1/llm/credentials/{credential_id}/key"): P.INTEGRATION_MANAGE,
    ("PATCH", "/v1/llm/credentials/{credential_id}"): P.INTEGRATION_MANAGE,
    ("DELETE", "/v1/llm/credentials/{credential_id}"): P.INTEGRATION_MANAGE,
    ("POST", "/v1/integrations/webhooks"): P.INTEGRATION_MANAGE,
    ("GET", "/v1/integrations/webhooks"): P.INTEGRATION_MANAGE,
    ("GET", "/v1/integrations/webhooks/{destination_id}"): P.INTEGRATION_MANAGE,
    ("PATCH", "/v1/integrations/webhooks/{destination_id}"): P.INTEGRATION_MANAGE,
    ("DELETE", "/v1/integrations/webhooks/{destination_id}"): P.INTEGRATION_MANAGE,
    ("POST", "/v1/integrations/webhooks/{destination_id}/rotate-secret"): P.INTEGRATION_MANAGE,
    ("GET", "/v1/integrations/webhooks/{destination_id}/deliveries"): P.INTEGRATION_MANAGE,
    (
        "POST",
        "/v1/integrations/webhooks/{destination_id}/deliveries/{delivery_id}/redeliver",
    ): P.INTEGRATION_MANAGE,
    ("POST", "/v1/integrations/webhooks/{destination_id}/replay"): P.INTEGRATION_MANAGE,
    ("GET", "/v1/reports/llm-usage"): P.AUDIT_READ,
    ("GET", "/v1/org/llm"): P.ORG_READ,
    ("PUT", "/v1/org/llm"): P.ORG_SECURITY,
    ("GET", "/v1/runs/{run_id}/llm-calls"): P.AUDIT_READ,
    ("POST", "/v1/agents"): P.INTEGRATION_MANAGE,
    ("GET", "/v1/agents"): P.RUN_READ,
    ("GET", "/v1/agents/{agent_id}"): P.RUN_READ,
    ("PATCH", "/v1/agents/{agent_id}"): P.INTEGRATION_MANAGE,
    ("DELETE", "/v1/agents/{agent_id}"): P.INTEGRATION_MANAGE,
    ("GET", "/v1/agents/{agent_id}/metrics"): P.RUN_READ,
    ("POST", "/v1/agents/{agent_id}/tokens"): P.INTEGRATION_MANAGE,
    ("GET", "/v1/agents/{agent_id}/tokens"): P.INTEGRATION_MANAGE,
    ("DELETE", "/v1/agents/{agent_id}/tokens/{token_id}"): P.INTEGRATION_MANAGE,
    ("POST", "/v1/agents/{agent_id}/tokens/{token_id}/rotate"): P.INTEGRATION_MANAGE,
    ("GET", "/v1/agent/session"): AGENT,
    ("GET", "/scim/v2/ServiceProviderConfig"): SCIM,
    ("GET", "/scim/v2/ResourceTypes"): SCIM,
    ("GET", "/scim/v2/ResourceTypes/{name}"): SCIM,
    ("GET", "/scim/v2/Schemas"): SCIM,
    ("GET", "/scim/v2/Schemas/{schema_id}"): SCIM,
    ("POST", "/scim/v2/.search"): SCIM,
    ("POST", "/scim/v2/Users"): SCIM,
    ("GET", "/scim/v2/Users"): SCIM,
    ("GET", "/scim/v2/Users/{user_id}"): SCIM,
    ("PUT", "/scim/v2/Users/{user_id}"): SCIM,
    ("PATCH", "/scim/v2/Users/{user_id}"): SCIM,
    ("DELETE", "/scim/v2/Users/{user_id}"): SCIM,
    ("POST", "/scim/v2/Groups"): SCIM,
    ("GET", "/scim/v2/Groups"): SCIM,
    ("GET", "/scim/v2/Groups/{group_id}"): SCIM,
    ("PUT", "/scim/v2/Groups/{group_id}"): SCIM,
    ("PATCH", "/scim/v2/Groups/{group_id}"): SCIM,
    ("DELETE", "/scim/v2/Groups/{group_id}"): SCIM,
    ("GET", "/scim/v2/{rest:path}"): SCIM,
    ("POST", "/scim/v2/{rest:path}"): SCIM,
    ("PUT", "/scim/v2/{rest:path}"): SCIM,
    ("PATCH", "/scim/v2/{rest:path}"): SCIM,
    ("DELETE", "/scim/v2/{rest:path}"): SCIM,
    ("GET", "/v1/org/scim"): P.ORG_SECURITY,
    ("POST", "/v1/org/scim/token"): P.ORG_SECURITY,
    ("DELETE", "/v1/org/scim/token"): P.ORG_SECURITY,
    ("GET", "/v1/agents/tasks/{task_id}/input"): AGENT,
    # Only a card its organization marked public (else 404).
    ("GET", "/v1/orgs/{org_slug}/agents/{name}/.well-known/agent-card.json"): PUBLIC,
}

# Ids that exist nowhere: an allowed caller gets 404 or 422, never a change, never 403.
_FILL = {
    "run_id": str(uuid.uuid4()),
    "step_id": "approve",
    "user_id": str(uuid.uuid4()),
    "delegation_id": str(uuid.uuid4()),
    "group_id": str(uuid.uuid4()),
    "slack_user_id": "U0123ABCD",
    "credential_id": str(uuid.uuid4()),
    "destination_id": str(uuid.uuid4()),
    "delivery_id": str(uuid.uuid4()),
    "key_id": str(uuid.uuid4()),
    "invite_id": str(uuid.uuid4()),
    "session_id": str(uuid.uuid4()),
    "token": "dl_nothing_here",
    "agent_id": str(uuid.uuid4()),
    "token_id": str(uuid.uuid4()),
    "task_id": str(uuid.uuid4()),
    "attachment_id": str(uuid.uuid4()),
    "org_slug": "no-such-org",
    "provider_id": str(uuid.uuid4()),
    "review_id": str(uuid.uuid4()),
    "schema_id": "urn:ietf:params:scim:schemas:core:2.0:User",
    "rest": "Nowhere",
    "domain": "no-such-domain.example",
    "name": "no-such-agent",
}
# The console's pages (blocks/api/console), as a browser reaches them: with the session cookie.
# Each page states the permission of the API route it calls (and that route checks it again).
MEMBER = "member"  # any member of the session's organization, whatever the roles
CONSOLE: dict[tuple[str, str], Permission | str] = {
    ("GET", "/console"): PUBLIC,  # a redirect to the inbox
    ("GET", "/console/sign-in"): PUBLIC,
    ("POST", "/console/sign-in"): PUBLIC,  # the origin check, then the password
    ("GET", "/console/sign-in/sso"): PUBLIC,
    ("GET", "/console/sign-in/link"): PUBLIC,
    ("POST", "/console/sign-in/link"): PUBLIC,
    ("GET", "/console/two-factor"): PERSON,
    ("POST", "/console/two-factor"): PERSON,
    ("GET", "/console/orgs"): PERSON,
    ("POST", "/console/orgs"): PERSON,
    ("POST", "/console/sign-out"): PERSON,
    ("GET", "/console/inbox"): P.STEP_DECIDE,
    ("GET", "/console/runs"): P.RUN_READ,
    ("GET", "/console/runs/{run_id}"): P.RUN_READ,
    ("GET", "/console/runs/{run_id}/steps/{step_id}"): P.RUN_READ,
    ("POST", "/console/runs/{run_id}/steps/{step_id}"): P.STEP_DECIDE,
    ("GET", "/console/runs/new"): P.RUN_START,
    ("POST", "/console/runs/new"): P.RUN_START,
    ("POST", "/console/runs/{run_id}/cancel"): P.RUN_CANCEL,
    # The upload route also needs run:start or step:decide, checked after the body.
    ("POST", "/console/runs/{run_id}/attachments"): P.RUN_READ,
    ("GET", "/console/audit"): P.AUDIT_READ,
    ("GET", "/console/audit/export"): P.AUDIT_READ,
    ("GET", "/console/audit/verify"): P.AUDIT_READ,
    ("GET", "/console/audit/sla"): P.AUDIT_READ,
    ("GET", "/console/runs/{run_id}/custody"): P.AUDIT_READ,
    ("GET", "/console/admin"): MEMBER,  # lists the sections the roles open
    ("GET", "/console/admin/members"): P.MEMBER_MANAGE,
    ("POST", "/console/admin/members/{user_id}/roles"): P.MEMBER_MANAGE,
    ("POST", "/console/admin/members/{user_id}/deactivate"): P.MEMBER_MANAGE,
    ("POST", "/console/admin/members/{user_id}/reactivate"): P.MEMBER_MANAGE,
    ("POST", "/console/admin/members/{user_id}/sessions/revoke"): P.ORG_SECURITY,
    ("GET", "/console/admin/invites"): P.MEMBER_MANAGE,
    ("POST", "/console/admin/invites"): P.MEMBER_MANAGE,
    ("POST", "/console/admin/invites/{invite_id}/resend"): P.MEMBER_MANAGE,
    ("POST", "/console/admin/invites/{invite_id}/revoke"): P.MEMBER_MANAGE,
    ("GET", "/console/admin/groups"): P.MEMBER_MANAGE,
    ("POST", "/console/admin/groups"): P.MEMBER_MANAGE,
    ("POST", "/console/admin/groups/{group_id}/members"): P.MEMBER_MANAGE,
    ("POST", "/console/admin/groups/{group_id}/members/{user_id}/remove"): P.MEMBER_MANAGE,
    ("GET", "/console/admin/api-keys"): P.API_KEY_OWN,
    ("POST", "/console/admin/api-keys"): P.API_KEY_OWN,
    ("POST", "/console/admin/api-keys/{key_id}/revoke"): P.API_KEY_OWN,
    ("GET", "/console/admin/security"): P.ORG_SECURITY,
    ("POST", "/console/admin/security/two-factor"): P.ORG_SECURITY,
    ("POST", "/console/admin/security/decision-links"): P.ORG_SECURITY,
    ("POST", "/console/admin/security/approvals"): P.ORG_SECURITY,
    # Lists integrations (integration:manage) and identity providers (org:security).
    ("GET", "/console/admin/integrations"): P.INTEGRATION_MANAGE,
    ("GET", "/console/admin/sessions"): MEMBER,  # the person's own sessions
    ("POST", "/console/admin/sessions/others/revoke"): MEMBER,
    ("POST", "/console/admin/sessions/{session_id}/revoke"): MEMBER,
}

# (member name in tests.support.make_org, roles)
_ROLES: list[tuple[str, tuple[Role, ...]]] = [
    ("owner", (Role.OWNER,)),
    ("admin", (Role.ADMIN,)),
    ("operator", (Role.OPERATOR,)),
    ("approver", (Role.APPROVER,)),
    ("auditor", (Role.AUDITOR,)),
    ("operator_approver", (Role.OPERATOR, Role.APPROVER)),
    ("nobody", ()),
]


def _all_routes(stack: Stack) -> list[tuple[str, str]]:
    """Every (method, path) the app serves, hidden from the OpenAPI document or not."""
    return sorted(
        (method, route.path)
        for route in iter_route_contexts(create_app(stack.settings).routes)
        if isinstance(route.original_route, APIRoute)
        for method in route.methods or ()
    )


def _route_table(stack: Stack) -> list[tuple[str, str]]:
    """The API's routes (the console's pages have a table of their own)."""
    return [r for r in _all_routes(stack) if not _is_console(r[1])]


def _is_console(path: str) -> bool:
    return path == "/console" or path.startswith("/console/")


def test_every_route_is_in_the_table() -> None:
    """A route added without a row here fails this test, so it cannot escape the matrix."""
    from blocks.infra.settings import Settings

    routes = set(_all_routes(Stack("", Settings(env="test"), None, None, None)))  # type: ignore[arg-type]
    expected = EXPECTED.keys() | CONSOLE.keys()
    assert routes - expected == set(), "add these routes to EXPECTED (or CONSOLE)"
    assert expected - routes == set(), "these rows name routes that no longer exist"


async def _denials(engine: AsyncEngine, org: Org) -> int:
    return sum(
        1
        for action, outcome, _ in await audit_actions(engine, org.id)
        if action == "access.denied" and outcome == "denied"
    )


async def _call(
    http: httpx.AsyncClient, method: str, template: str, headers: dict[str, str]
) -> httpx.Response:
    path = template.replace(":path}", "}").format(**_FILL)
    return await http.request(method, path, json={}, headers=headers)


@pytest.mark.parametrize("credential", ["api_key", "session"])
async def test_each_role_is_allowed_or_refused_exactly_as_the_table_says(
    stack: Stack, engine: AsyncEngine, credential: str
) -> None:
    org = await make_org(engine)
    routes = [
        r
        for r in _route_table(stack)
        if isinstance(EXPECTED[r], Permission) or EXPECTED[r] == REFUSED
    ]
    assert len(routes) >= 40
    async with stack.http() as http:
        for name, roles in _ROLES:
            member = org[name]
            if credential == "api_key":
                headers = member.headers
            else:
                token = await start_test_session(engine, member.user_id, org.id)
                headers = cookie_headers(stack.settings, token)
            for method, template in routes:
                permission = EXPECTED[(method, template)]
                allowed = isinstance(permission, Permission) and has_permission(roles, permission)
                before = await _denials(engine, org)
                response = await _call(http, method, template, headers)
                after = await _denials(engine, org)
                where = f"{name} ({credential}): {method} {template}"
                if allowed:
                    assert response.status_code not in (401, 403), f"{where}: {response.text}"
                    assert after == before, f"{where} audited a denial it did not make"
                else:
                    assert response.status_code == 403, f"{where}: {response.text}"
                    assert response.headers["content-type"] == "application/problem+json"
                    assert after == before + 1, f"{where}: refused without an audit event"


async def test_without_credentials_every_organization_route_is_401(stack: Stack) -> None:
    async with stack.http() as http:
        for method, template in _route_table(stack):
            if EXPECTED[(method, template)] == PUBLIC:
                continue
            response = await _call(http, method, template, {"Origin": stack.settings.public_url})
            assert response.status_code == 401, f"{method} {template}: {response.text}"


async def test_personal_routes_take_a_session_never_an_api_key(
    stack: Stack, engine: AsyncEngine
) -> None:
    """An API key acts for an organization, not as the person: account, 2FA, picker and
    sign-out routes refuse it; a session (even one without an organization) reaches them."""
    org = await make_org(engine)
    async with stack.http() as http:
        for method, template in _route_table(stack):
            if EXPECTED[(method, template)] != PERSON:
                continue
            by_key = await _call(http, method, template, org["owner"].headers)
            assert by_key.status_code == 401, f"{method} {template} took an API key"
            # A fresh session each time: some of these end or rotate the session they use.
            token = await start_test_session(engine, org["nobody"].user_id, None)
            by_session = await _call(http, method, template, cookie_headers(stack.settings, token))
            assert by_session.status_code not in (401, 403), (
                f"{method} {template}: {by_session.status_code} {by_session.text}"
            )


def _console_path(template: str) -> str:
    return template.format(**_FILL)


async def test_console_pages_are_allowed_or_refused_exactly_as_the_table_says(
    stack: Stack, engine: AsyncEngine
) -> None:
    """Each role's session on every console page: allowed where the table's permission is
    granted; else the 403 page (HTML, with the API's words) and an `access.denied` event."""
    org = await make_org(engine)
    pages = [r for r in CONSOLE if isinstance(CONSOLE[r], Permission) or CONSOLE[r] == MEMBER]
    async with stack.http() as http:
        for name, roles in _ROLES:
            token = await start_test_session(engine, org[name].user_id, org.id)
            headers = cookie_headers(stack.settings, token)
            for method, template in pages:
                permission = CONSOLE[(method, template)]
                allowed = permission == MEMBER or (
                    isinstance(permission, Permission) and has_permission(roles, permission)
                )
                before = await _denials(engine, org)
                response = await http.request(
                    method, _console_path(template), data={}, headers=headers
                )
                after = await _denials(engine, org)
                where = f"{name}: {method} {template}"
                assert not response.headers.get("location", "").startswith("/console/sign-in"), (
                    f"{where}: the session was not taken"
                )
                if allowed:
                    assert response.status_code != 403, f"{where}: {response.text[:500]}"
                    assert after == before, f"{where} audited a denial it did not make"
                else:
                    assert response.status_code == 403, f"{where}: {response.status_code}"
                    assert response.headers["content-type"].startswith("text/html")
                    assert after == before + 1, f"{where}: refused without an audit event"


async def test_console_pages_without_a_session_go_to_sign_in(
    stack: Stack, engine: AsyncEngine
) -> None:
    """No session: every page but the public ones sends the browser to sign in (a 303, not the
    API's 401); a person's own pages take a session that has no organization yet."""
    org = await make_org(engine)
    async with stack.http() as http:
        for (method, template), permission in CONSOLE.items():
            path = _console_path(template)
            if permission == PUBLIC:
                continue
            response = await http.request(
                method, path, data={}, headers={"Origin": stack.settings.public_url}
            )
            assert response.status_code == 303, f"{method} {template}: {response.status_code}"
            assert response.headers["location"].startswith("/console/sign-in?next="), (
                f"{method} {template}: {response.headers['location']}"
            )
            if permission == PERSON:
                # A fresh session each time: signing out ends the one it uses.
                token = await start_test_session(engine, org["nobody"].user_id, None)
                by_session = await http.request(
                    method, path, data={}, headers=cookie_headers(stack.settings, token)
                )
                assert by_session.status_code not in (401, 403), (
                    f"{method} {template}: {by_session.status_code}"
                )
                assert not by_session.headers.get("location", "").startswith(
                    "/console/sign-in?next="
                )
