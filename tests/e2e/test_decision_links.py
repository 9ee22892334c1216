"""Decision links by email: one approver, one step, once, before expiry; GET never decides."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.activities.email_notices import EmailNoticeSender
from blocks.core.context import PLATFORM_ORG
from blocks.infra.db import session_factory
from blocks.infra.embedded.postgres import PostgresCredentials
from blocks.infra.integrations.email import Mailer
from blocks.infra.settings import Settings
from tests.mail import Inbox, SmtpServer
from tests.support import (
    EXPENSE,
    Org,
    Stack,
    audit_actions,
    cookie_headers,
    make_org,
    run_sql,
    running_stack,
    start_test_session,
    wait_for_status,
)

_LINK = re.compile(r"(http://\S+/v1/decision-links/(dl_\S+))")


@pytest.fixture(scope="module")
def smtp(smtp_server: SmtpServer) -> tuple[Inbox, int]:
    return smtp_server.inbox, smtp_server.port


@pytest.fixture
async def mail_stack(
    smtp: tuple[Inbox, int],
    engine: AsyncEngine,
    temporal_env: WorkflowEnvironment,
    postgres: PostgresCredentials,
) -> AsyncIterator[Stack]:
    _, port = smtp
    settings = Settings(env="test", smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False)
    sender = EmailNoticeSender(
        session_factory(engine),
        Mailer(settings),
        public_url="http://blocks.test",
        link_ttl=timedelta(hours=1),
    )
    async with running_stack(
        engine=engine,
        temporal=temporal_env.client,
        database_url=postgres.url(),
        task_queue=f"mail-{uuid.uuid4().hex[:8]}",
        notice_senders=[sender],
    ) as stack:
        yield stack


async def _links_for(inbox: Inbox, email: str, *, count: int = 1) -> list[str]:
    for _ in range(200):
        found = [m for m in inbox.messages if m["To"] == email]
        if len(found) >= count:
            return [_LINK.search(m.get_payload(decode=True).decode()).group(2) for m in found]  # type: ignore[union-attr]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no email reached {email}")


async def _link_only(engine: AsyncEngine, org: Org, allowed: bool) -> None:
    async with session_factory(engine)() as session, session.begin():
        await session.exec(  # type: ignore[call-overload]
            text("UPDATE organizations SET link_only_decisions = :a WHERE id = :id").bindparams(
                a=allowed, id=org.id
            )
        )


async def test_a_link_shows_on_get_and_decides_once_on_post(
    smtp: tuple[Inbox, int], mail_stack: Stack, engine: AsyncEngine
) -> None:
    inbox, _ = smtp
    org = await make_org(engine)
    async with mail_stack.http() as http:
        run = await http.post(
            "/v1/runs",
            json={"workflow": "expense_approval", "input": EXPENSE},
            headers=org["operator"].headers,
        )
        run_id = run.json()["id"]
        [token] = await _links_for(inbox, org["approver"].email)
        assert await _links_for(inbox, org["approver2"].email)  # every approver gets their own
        subject = next(m["Subject"] for m in inbox.messages if m["To"] == org["approver"].email)
        assert "Team lunch" in subject
        # The requester holds no approver role here, and never gets a link to their own run.
        assert not [m for m in inbox.messages if m["To"] == org["operator"].email]

        # GET (what a mail scanner does) shows the request and decides nothing.
        page = await http.get(f"/v1/decision-links/{token}")
        assert page.status_code == 200
        assert "Team lunch" in page.text
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["cache-control"] == "no-store"
        await wait_for_status(
            http, run_id, org["operator"].headers, status="running", stage="awaiting_approval"
        )

        # The organization requires sign-in unless it allows link-only decisions.
        refused = await http.post(f"/v1/decision-links/{token}", data={"decision": "approve"})
        assert refused.status_code == 403
        policy = await http.put(
            "/v1/org/decision-link-policy",
            json={"link_only_decisions": True},
            headers=org["operator"].headers,
        )
        assert policy.status_code == 403
        policy = await http.put(
            "/v1/org/decision-link-policy",
            json={"link_only_decisions": True},
            headers=org["admin"].headers,
        )
        assert policy.status_code == 200, policy.text

        decided = await http.post(
            f"/v1/decision-links/{token}", data={"decision": "approve", "comment": "via email"}
        )
        assert decided.status_code == 200, decided.text
        assert "approved" in decided.text
        await wait_for_status(http, run_id, org["operator"].headers, status="completed")
        again = await http.post(f"/v1/decision-links/{token}", data={"decision": "reject"})
        assert again.status_code == 410
        assert "already been used" in again.text

        events = (
            await http.get(f"/v1/runs/{run_id}/audit-events", headers=org["auditor"].headers)
        ).json()["events"]
        vote = next(e for e in events if e["action"] == "step.decided")
        assert vote["actor_id"] == str(org["approver"].user_id)
        assert vote["data"]["channel"] == "link"
        assert vote["data"]["comment"] == "via email"


async def test_tampered_expired_and_foreign_links_are_refused(
    smtp: tuple[Inbox, int], mail_stack: Stack, engine: AsyncEngine
) -> None:
    inbox, _ = smtp
    org = await make_org(engine)
    await _link_only(engine, org, True)
    async with mail_stack.http() as http:
        await http.post(
            "/v1/runs",
            json={"workflow": "expense_approval", "input": EXPENSE},
            headers=org["operator"].headers,
        )
        [token] = await _links_for(inbox, org["approver"].email)
        tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
        for bad in (tampered, "dl_0000_nothing", "garbage"):
            response = await http.post(f"/v1/decision-links/{bad}", data={"decision": "approve"})
            assert response.status_code == 410
            assert "not valid" in response.text
        assert (
            await http.post(f"/v1/decision-links/{token}", data={"decision": "maybe"})
        ).status_code == 422

        # As the app role bound to the organization (decision_links has row-level security).
        await run_sql(
            engine,
            "UPDATE decision_links SET expires_at = now() - interval '1 minute' WHERE org_id = :o",
            org.id,
            o=org.id,
        )
        expired = await http.post(f"/v1/decision-links/{token}", data={"decision": "approve"})
        assert expired.status_code == 410
        assert "expired" in expired.text


async def test_without_link_only_decisions_the_link_needs_its_approver_signed_in(
    smtp: tuple[Inbox, int], mail_stack: Stack, engine: AsyncEngine
) -> None:
    inbox, _ = smtp
    org = await make_org(engine)
    async with mail_stack.http() as http:
        run = await http.post(
            "/v1/runs",
            json={"workflow": "expense_approval", "input": EXPENSE},
            headers=org["operator"].headers,
        )
        run_id = run.json()["id"]
        [token] = await _links_for(inbox, org["approver"].email)
        await wait_for_status(
            http, run_id, org["operator"].headers, status="running", stage="awaiting_approval"
        )
        # Someone else's session (here the other approver's) does not make the link usable.
        other = await start_test_session(engine, org["approver2"].user_id, org.id)
        refused = await http.post(
            f"/v1/decision-links/{token}",
            data={"decision": "approve"},
            headers=cookie_headers(mail_stack.settings, other),
        )
        assert refused.status_code == 403
        # The approver's own session, from this site, does.
        own = await start_test_session(engine, org["approver"].user_id, org.id)
        decided = await http.post(
            f"/v1/decision-links/{token}",
            data={"decision": "approve"},
            headers=cookie_headers(mail_stack.settings, own),
        )
        assert decided.status_code == 200, decided.text
        await wait_for_status(http, run_id, org["operator"].headers, status="completed")
    denials = [r for a, _, r in await audit_actions(engine, org.id) if a == "access.denied"]
    assert "decision link used without the approver's sign-in" in denials


@pytest.fixture
async def strict_stack(
    engine: AsyncEngine, temporal_env: WorkflowEnvironment, postgres: PostgresCredentials
) -> AsyncIterator[Stack]:
    """The API with a low budget of token tries per address, behind a local trusted proxy."""
    async with running_stack(
        engine=engine,
        temporal=temporal_env.client,
        database_url=postgres.url(),
        task_queue=f"links-{uuid.uuid4().hex[:8]}",
        with_worker=False,
        extra_settings={"rate_limit_token_ip": "3/minute", "trusted_proxies": ["127.0.0.1"]},
    ) as stack:
        yield stack


async def test_guessing_links_from_one_address_meets_a_429(
    strict_stack: Stack, engine: AsyncEngine
) -> None:
    exceeded = "rate limit token_ip exceeded"
    before = [r for _, _, r in await audit_actions(engine, PLATFORM_ORG)].count(exceeded)
    guesser = {"X-Forwarded-For": "203.0.113.50"}
    async with strict_stack.http() as http:
        for n in range(3):
            guess = f"dl_{n:016x}_{'x' * 43}"
            shown = await http.get(f"/v1/decision-links/{guess}", headers=guesser)
            assert shown.status_code == 410, shown.text
        refused = await http.post(
            "/v1/decision-links/dl_0_guess", data={"decision": "approve"}, headers=guesser
        )
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert int(refused.headers["retry-after"]) >= 1
        assert (await http.get("/v1/decision-links/dl_1_guess", headers=guesser)).status_code == 429
        # The budget is the address's: another address still gets its answer.
        other = await http.get(
            "/v1/decision-links/dl_2_guess", headers={"X-Forwarded-For": "203.0.113.51"}
        )
        assert other.status_code == 410, other.text
    after = [r for _, _, r in await audit_actions(engine, PLATFORM_ORG)].count(exceeded)
    assert after == before + 1  # audited once, not once per refused guess
