"""The approver's journey in Debian's chromium: sign in through the form, find the step in the
inbox with its SLA, open it, fill the decision form generated from the step's schema, approve,
and the run completes; the inbox and step pages hold up at a phone's width; no CSP violation."""

from __future__ import annotations

import asyncio

import httpx
from playwright.async_api import Browser, Page, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.browser.console_browser import watched_page
from tests.e2e.test_console_sign_in import STRONG, set_password
from tests.support import Org, Stack, make_org, wait_for_status

PHONE = {"width": 390, "height": 844}


async def _purchase_at_director(http: httpx.AsyncClient, org: Org) -> str:
    """A purchase whose review is approved (by API), now waiting for its director: `approver`."""
    started = await http.post(
        "/v1/runs",
        json={
            "workflow": "purchase_approval",
            "input": {
                "amount": "25000.00",
                "description": "Annual licence",
                "finance": [str(org["approver2"].user_id), str(org["operator_approver"].user_id)],
                "legal": [str(org["admin"].user_id)],
                "director": str(org["approver"].user_id),
            },
        },
        headers=org["operator"].headers,
    )
    assert started.status_code == 201, started.text
    run_id: str = started.json()["id"]
    await wait_for_status(
        http, run_id, org["operator"].headers, status="running", stage="awaiting_approval"
    )
    for who in ("approver2", "operator_approver", "admin"):
        voted = await http.post(
            f"/v1/runs/{run_id}/steps/review/decisions",
            json={"decision": "approve", "comment": f"ok from {who}"},
            headers=org[who].headers,
        )
        assert voted.status_code == 200, voted.text
    for _ in range(400):
        run = (await http.get(f"/v1/runs/{run_id}", headers=org["operator"].headers)).json()
        if [s["step_id"] for s in run["pending_steps"]] == ["director"]:
            return run_id
        await asyncio.sleep(0.05)
    raise AssertionError("the director's step never opened")


async def _fits_the_phone(page: Page) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{page.url} scrolls sideways: {width}px"


async def test_an_approver_signs_in_and_approves_from_the_inbox(
    console_browser: Browser, stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    await set_password(engine, org["approver"].user_id)
    async with stack.http() as http:
        run_id = await _purchase_at_director(http, org)
    title = "Sign off the purchase of 25000.00"

    async with watched_page(console_browser, stack.base_url) as watched:
        page = watched.page
        await page.goto("/console/inbox")
        await expect(page).to_have_url(f"{stack.base_url}/console/sign-in?next=/console/inbox")
        await page.get_by_label("Email").fill(org["approver"].email)
        await page.get_by_label("Password").fill(STRONG)
        await page.get_by_role("button", name="Sign in").click()

        await expect(page).to_have_url(f"{stack.base_url}/console/inbox")
        row = page.locator("table.inbox tbody tr", has_text=title)
        await expect(row).to_have_count(1)
        await expect(row.locator(".time-left")).to_have_text("in 1 d 23 h")
        await expect(row).to_contain_text("purchase_approval")
        await expect(row).to_contain_text(org["operator"].email)  # the requester

        await page.set_viewport_size(PHONE)
        await page.reload()
        await expect(row.get_by_role("link", name=title)).to_be_visible()
        await _fits_the_phone(page)
        await row.get_by_role("link", name=title).click()

        await expect(page).to_have_url(f"{stack.base_url}/console/runs/{run_id}/steps/director")
        await expect(page.get_by_role("heading", level=1)).to_have_text(title)
        approve = page.get_by_role("button", name="Approve")
        reject = page.get_by_role("button", name="Reject")
        for button in (approve, reject):
            await expect(button).to_be_visible()
            box = await button.bounding_box()
            assert box is not None
            assert box["x"] + box["width"] <= PHONE["width"]
        await _fits_the_phone(page)

        await page.get_by_label("Budget Code").fill("FI-2024")
        await page.get_by_label("Comment").fill("Signed off for <em>FY26</em>")
        await approve.click()

        await expect(page).to_have_url(f"{stack.base_url}/console/inbox?done=approved")
        await expect(page.get_by_role("status")).to_have_text("Your approval is recorded.")
        await expect(page.locator("table.inbox tbody tr", has_text=title)).to_have_count(0)
        watched.assert_clean()

    async with stack.http() as http:
        done = await wait_for_status(http, run_id, org["operator"].headers, status="completed")
    assert done["result"] == {"status": "approved", "budget_code": "FI-2024"}
