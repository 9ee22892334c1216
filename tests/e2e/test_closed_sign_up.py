"""With sign-up closed (BLOCKS_OPEN_SIGNUP=false), only an invited address can make an account,
nobody can create an organization from the API, and an invited newcomer gets in end to end."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.api.identity.sessions import SESSION_COOKIE
from blocks.infra.embedded.postgres import PostgresCredentials
from tests.mail import SmtpServer
from tests.support import Stack, audit_actions, make_org, running_stack

PLATFORM = uuid.UUID(int=0)


@pytest.fixture(scope="module")
async def closed(
    engine: AsyncEngine,
    temporal_env: WorkflowEnvironment,
    postgres: PostgresCredentials,
    smtp_server: SmtpServer,
) -> AsyncIterator[Stack]:
    async with running_stack(
        engine=engine,
        temporal=temporal_env.client,
        database_url=postgres.url(),
        task_queue=f"blocks-closed-{uuid.uuid4().hex[:8]}",
        with_worker=False,
        extra_settings={
            "open_signup": False,
            **smtp_server.settings,
        },
    ) as running:
        yield running


async def test_only_an_invited_address_signs_up_and_joins(
    closed: Stack, smtp_server: SmtpServer, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    stranger = f"stranger-{uuid.uuid4().hex[:8]}@example.com"
    newcomer = f"newcomer-{uuid.uuid4().hex[:8]}@example.com"
    origin = {"Origin": closed.settings.public_url}
    async with closed.http() as http:
        # The same answer for the stranger, and no email.
        refused = await http.post(
            "/v1/auth/signup", json={"email": stranger, "display_name": "S"}, headers=origin
        )
        assert refused.status_code == 202
        await asyncio.sleep(0.3)
        assert smtp_server.inbox.to(stranger) == []

        invited = await http.post(
            "/v1/invites",
            json={"email": newcomer, "roles": ["auditor"]},
            headers=org["admin"].headers,
        )
        assert invited.status_code == 201, invited.text
        invite_token = await smtp_server.inbox.token_for(newcomer, r"token=(inv_\S+)")
        asked = await http.post(
            "/v1/auth/signup", json={"email": newcomer, "display_name": "New"}, headers=origin
        )
        assert asked.status_code == 202
        signup_token = await smtp_server.inbox.token_for(newcomer, r"token=(bsu_\S+)", count=2)
        made = await http.post(
            "/v1/auth/signup/verify", json={"token": signup_token}, headers=origin
        )
        assert made.status_code == 201, made.text
        browser = {**origin, "Cookie": f"{SESSION_COOKIE}={made.cookies[SESSION_COOKIE]}"}

        # Sign-up is closed: an account cannot make itself an organization.
        own_org = await http.post(
            "/v1/orgs",
            json={"slug": f"mine-{uuid.uuid4().hex[:6]}", "name": "Mine"},
            headers=browser,
        )
        assert own_org.status_code == 403

        joined = await http.post(
            "/v1/invites/accept", json={"token": invite_token}, headers=browser
        )
        assert joined.status_code == 200, joined.text
        assert joined.json()["roles"] == ["auditor"]
        picked = await http.post("/v1/auth/org", json={"org_id": str(org.id)}, headers=browser)
        assert picked.status_code == 200, picked.text
        browser["Cookie"] = f"{SESSION_COOKIE}={picked.cookies[SESSION_COOKIE]}"
        audit = await http.get("/v1/audit-events", headers=browser)
        assert audit.status_code == 200
        assert "invite.accepted" in [e["action"] for e in audit.json()["events"]]
    platform = await audit_actions(engine, PLATFORM)
    assert (
        "auth.signup_requested",
        "denied",
        "sign-up is by invitation on this deployment",
    ) in platform
