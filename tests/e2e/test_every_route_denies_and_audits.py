"""Every authenticated route checks a permission on the server: a member with no role gets 403 on
each, and every 403 any role gets is written to the audit log as `access.denied`. The routes come
from the app's own route table, so a new route cannot escape."""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.api.app import create_app
from tests.support import Org, Stack, audit_actions, make_org

# Routes a caller reaches without an API key, each guarded by its own credential instead.
_PUBLIC = {
    "/healthz",
    "/readyz",
    "/v1/audit/public-key",  # a public key is public
    "/v1/decision-links/{token}",  # the link's secret (tests/e2e/test_decision_links.py)
    "/v1/integrations/slack/interactions",  # Slack's signature (tests/e2e/test_slack.py)
}
_FILL = {
    "run_id": str(uuid.uuid4()),
    "step_id": "approve",
    "user_id": str(uuid.uuid4()),
    "delegation_id": str(uuid.uuid4()),
    "group_id": str(uuid.uuid4()),
    "slack_user_id": "U0123ABCD",
}


def _routes(stack: Stack) -> list[tuple[str, str]]:
    routes = []
    for template, operations in create_app(stack.settings).openapi()["paths"].items():
        if template in _PUBLIC:
            continue
        params = set(re.findall(r"{(\w+)}", template))
        assert params <= set(_FILL), (
            f"{template}: teach this test how to fill {params - set(_FILL)}"
        )
        routes.extend((method.upper(), template.format(**_FILL)) for method in operations)
    return routes


async def _denials(engine: AsyncEngine, org: Org) -> int:
    return sum(
        1
        for action, outcome, _ in await audit_actions(engine, org.id)
        if action == "access.denied" and outcome == "denied"
    )


async def test_a_member_without_roles_is_refused_everywhere_and_each_refusal_audited(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    routes = _routes(stack)
    assert len(routes) >= 25
    async with stack.http() as http:
        for method, path in routes:
            before = await _denials(engine, org)
            response = await http.request(method, path, json={}, headers=org["nobody"].headers)
            assert response.status_code == 403, (
                f"{method} {path}: {response.status_code} {response.text}"
            )
            assert response.headers["content-type"] == "application/problem+json"
            assert await _denials(engine, org) == before + 1, f"{method} {path} was not audited"


@pytest.mark.parametrize("role", ["operator", "approver", "auditor", "admin"])
async def test_every_403_of_every_role_is_audited(
    stack: Stack, engine: AsyncEngine, role: str
) -> None:
    org = await make_org(engine)
    refused = 0
    async with stack.http() as http:
        for method, path in _routes(stack):
            before = await _denials(engine, org)
            response = await http.request(method, path, json={}, headers=org[role].headers)
            after = await _denials(engine, org)
            if response.status_code == 403:
                refused += 1
                assert after == before + 1, (
                    f"{role}: {method} {path} refused without an audit event"
                )
            else:
                assert after == before, (
                    f"{role}: {method} {path} audited a denial but answered {response.status_code}"
                )
    # Each role is refused something, except admins, who hold every permission.
    assert (refused == 0) is (role == "admin")
