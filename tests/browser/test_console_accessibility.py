"""Every page of the console, as the owner sees it (and the sign-in page as anyone does), checked
by axe-core for WCAG 2.1 A/AA (labels, names, contrast, headings, landmarks), at a desktop width
and, for the pages approvers use from their phones, at a phone's; no CSP violation on any."""

from __future__ import annotations

from playwright.async_api import Browser
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.browser.console_browser import watched_page
from tests.support import EXPENSE, Stack, make_org, start_test_session, wait_for_status

PHONE = {"width": 390, "height": 844}


async def test_every_console_page_passes_axe_at_desktop_and_phone_widths(
    console_browser: Browser, stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        started = await http.post(
            "/v1/runs",
            json={"workflow": "expense_approval", "input": EXPENSE},
            headers=org["owner"].headers,
        )
        assert started.status_code == 201, started.text
        run_id = started.json()["id"]
        await wait_for_status(
            http, run_id, org["owner"].headers, status="running", stage="awaiting_approval"
        )
    # The owner may open every page; an approver has the step waiting in the inbox.
    pages = {
        "owner": [
            "/console/runs",
            f"/console/runs/{run_id}",
            "/console/runs/new",
            "/console/audit",
            f"/console/runs/{run_id}/custody",
            "/console/audit/verify",
            "/console/audit/sla",
            "/console/admin",
            "/console/admin/members",
            "/console/admin/invites",
            "/console/admin/groups",
            "/console/admin/api-keys",
            "/console/admin/security",
            "/console/admin/integrations",
            "/console/admin/sessions",
        ],
        "approver": ["/console/inbox", f"/console/runs/{run_id}/steps/approve"],
    }
    violations: list[str] = []
    async with watched_page(console_browser, stack.base_url) as watched:
        await watched.page.goto("/console/sign-in")
        violations += await watched.accessibility_violations()
        for who, paths in pages.items():
            token = await start_test_session(engine, org[who].user_id, org.id)
            await watched.use_session(token)
            for path in paths:
                answer = await watched.page.goto(path)
                assert answer is not None, path
                assert answer.status == 200, f"{path}: {answer.status}"
                violations += await watched.accessibility_violations()
        # The read-and-respond pages at a phone's width (contrast and targets reflow there).
        await watched.page.set_viewport_size(PHONE)
        for path in pages["approver"]:
            await watched.page.goto(path)
            violations += await watched.accessibility_violations()
        watched.assert_clean()
    assert violations == [], "\n".join(violations)
