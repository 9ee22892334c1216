"""The admin console in Debian's chromium: an admin invites someone, changes a member's roles,
creates an API key that is shown once, and revokes it, with zero CSP violations on the way."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Dialog, expect
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from blocks.infra.embedded.postgres import PostgresCredentials
from tests.browser.console_browser import watched_page
from tests.mail import SmtpServer
from tests.support import Stack, make_org, running_stack, start_test_session


@pytest.fixture
async def mail_stack(
    engine: AsyncEngine,
    temporal_env: WorkflowEnvironment,
    postgres: PostgresCredentials,
    smtp_server: SmtpServer,
) -> AsyncIterator[Stack]:
    """The API with email on (invites need it)."""
    async with running_stack(
        engine=engine,
        temporal=temporal_env.client,
        database_url=postgres.url(),
        task_queue=f"console-admin-{uuid.uuid4().hex[:8]}",
        with_worker=False,
        publish=False,
        extra_settings=smtp_server.settings,
    ) as stack:
        yield stack


async def test_an_admin_invites_changes_a_role_and_makes_a_key_shown_once(
    console_browser: Browser, mail_stack: Stack, engine: AsyncEngine
) -> None:
    stack = mail_stack
    org = await make_org(engine)
    invited = f"new.person@{org.slug}.test"
    operator = org["operator"]
    token = await start_test_session(engine, org["admin"].user_id, org.id)
    async with watched_page(console_browser, stack.base_url) as watched:
        page = watched.page
        await watched.use_session(token)
        page.on("dialog", _accept)

        # The index lists every section an admin's roles open; invite from its Invites page.
        await page.goto("/console/admin")
        await expect(page.locator("h1")).to_have_text("Admin")
        await page.get_by_role("link", name="Invites", exact=True).click()
        await page.get_by_label("Email address").fill(invited)
        await page.get_by_label("approver", exact=True).check()
        await page.get_by_role("button", name="Send invite").click()
        await expect(page.locator(".notice")).to_have_text("Invite sent.")
        row = page.locator("table.admin-invites tr", has_text=invited)
        await expect(row).to_contain_text("approver")

        # The operator also becomes auditor.
        await page.goto("/console/admin/members")
        member = page.locator(f"#member-{operator.user_id}")
        await member.get_by_label("auditor", exact=True).check()
        await member.get_by_role("button", name="Save roles").click()
        await expect(page.locator(".notice")).to_have_text("Roles changed.")
        await expect(page.locator(f"#member-{operator.user_id} .roles")).to_have_text(
            "operator, auditor"
        )

        # A key: its secret on the answer page only.
        await page.goto("/console/admin/api-keys")
        await page.get_by_label("What the key is for").fill("nightly export")
        await page.get_by_label("admin", exact=True).check()
        await page.get_by_role("button", name="Create key").click()
        await expect(page.locator("h1")).to_contain_text("nightly export")
        await expect(page.locator(".key-shown")).to_contain_text("will not be shown again")
        secret = (await page.locator(".secret").inner_text()).strip()
        assert secret
        # Reloading shows the list, not the key (and does not send the form again): once the
        # page's script has replaced its history entry with the list's address.
        await expect(page).to_have_url(f"{stack.base_url}/console/admin/api-keys")
        await page.reload()
        await expect(page.locator("h1")).to_have_text("API keys")
        assert page.url == f"{stack.base_url}/console/admin/api-keys"
        assert secret not in await page.content()
        await expect(page.locator(".secret")).to_have_count(0)
        keys = page.locator("tr.api-key", has_text="nightly export")
        await expect(keys).to_have_count(1)

        async with stack.http() as http:
            listed = await http.get("/v1/members", headers=org["auditor"].headers)
            works = await http.get("/v1/members", headers={"Authorization": f"Bearer {secret}"})
        row_of = next(m for m in listed.json() if m["id"] == str(operator.user_id))
        assert row_of["roles"] == ["operator", "auditor"]
        assert works.status_code == 200, works.text

        # Revoking it (after the confirmation) stops it.
        await keys.get_by_role("button", name="Revoke").click()
        await expect(page.locator(".notice")).to_have_text("API key revoked: it no longer works.")
        await expect(keys).to_contain_text("revoked")
        async with stack.http() as http:
            stopped = await http.get("/v1/members", headers={"Authorization": f"Bearer {secret}"})
        assert stopped.status_code == 401
        watched.assert_clean()


async def _accept(dialog: Dialog) -> None:
    # The confirmation console.js asks before a data-confirm form (revoking) is sent.
    await dialog.accept()
