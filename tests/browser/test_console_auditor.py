"""The auditor's and the operator's console journeys in Debian's chromium, with zero CSP
violations, console errors or requests elsewhere: an auditor filters the events, opens a
completed run's chain of custody and sees every link verified, verifies the chain now, downloads
the export and reads the SLA chart; an operator starts a run from the generated form and
cancels another from its run page."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx
from playwright.async_api import Browser, Dialog, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.browser.console_browser import Watched, watched_page
from tests.support import (
    EXPENSE,
    Org,
    Stack,
    make_org,
    start_test_session,
    wait_for_status,
)

RUN_ACTIONS = ["run.started", "step.opened", "step.decided", "step.closed", "run.completed"]


async def _sign_in(watched: Watched, stack: Stack, engine: AsyncEngine, org: Org, who: str) -> None:
    token = await start_test_session(engine, org[who].user_id, org.id)
    await watched.use_session(token)


async def _waiting_run(http: httpx.AsyncClient, org: Org) -> str:
    started = await http.post(
        "/v1/runs",
        json={"workflow": "expense_approval", "input": EXPENSE},
        headers=org["operator"].headers,
    )
    assert started.status_code == 201, started.text
    run_id: str = started.json()["id"]
    await wait_for_status(
        http, run_id, org["operator"].headers, status="running", stage="awaiting_approval"
    )
    return run_id


async def test_an_auditor_checks_a_runs_custody_exports_and_reads_the_sla_chart(
    console_browser: Browser, stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        run_id = await _waiting_run(http, org)
        decided = await http.post(
            f"/v1/runs/{run_id}/steps/approve/decisions",
            json={"decision": "approve", "comment": "fine"},
            headers=org["approver"].headers,
        )
        assert decided.status_code == 200, decided.text
        await wait_for_status(http, run_id, org["operator"].headers, status="completed")

    async with watched_page(console_browser, stack.base_url) as watched:
        page = watched.page
        await _sign_in(watched, stack, engine, org, "auditor")
        await page.goto("/console/audit")
        await expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
        await page.get_by_label("Run id").first.fill(run_id)
        await page.get_by_role("button", name="Filter").click()
        await expect(page).to_have_url(re.compile(rf"run_id={run_id}"))
        rows = page.locator("table tbody tr")
        await expect(rows).to_have_count(len(RUN_ACTIONS))
        await expect(rows.locator("td:nth-child(3)")).to_have_text(
            [re.compile(rf"^{re.escape(action)}") for action in RUN_ACTIONS]
        )

        await rows.first.get_by_role("link", name="custody").click()
        await expect(page.get_by_role("heading", name="Chain of custody")).to_be_visible()
        await expect(page.locator("p.verified")).to_contain_text("✓ Intact")
        hashes = page.locator("table tbody td:nth-child(5)")
        await expect(hashes).to_have_count(len(RUN_ACTIONS))
        await expect(hashes).to_contain_text(["✓ verified"] * len(RUN_ACTIONS))
        await expect(page.locator(".broken")).to_have_count(0)

        await page.get_by_role("button", name="Verify now").click()
        await expect(page.get_by_role("heading", name="Chain verification")).to_be_visible()
        await expect(page.get_by_role("status")).to_contain_text("✓ The audit chain verifies")
        await page.get_by_role("link", name="Back").click()
        await expect(page).to_have_url(re.compile(rf"/console/runs/{run_id}/custody$"))

        async with page.expect_download() as info:
            await page.get_by_role("link", name="JSON Lines (verifiable offline)").click()
        download = await info.value
        assert download.suggested_filename.endswith(".jsonl")
        text = await asyncio.to_thread(Path(await download.path()).read_text, encoding="utf-8")
        lines = [json.loads(line) for line in text.splitlines()]
        exported = [line.get("action") for line in lines if line.get("type") == "event"]
        assert exported == RUN_ACTIONS, lines[:2]

        await page.goto("/console/audit/sla")
        await expect(page.get_by_role("heading", name="SLA report")).to_be_visible()
        chart = page.get_by_role("img", name=re.compile("expense_approval"))
        await expect(chart).to_be_visible()
        await expect(chart.locator("rect.bar.met")).not_to_have_count(0)
        met = chart.locator("rect.bar.met").last
        assert float(await met.get_attribute("height") or 0) > 0
        await expect(page.locator("table tbody tr").first).to_contain_text("expense_approval")
        watched.assert_clean()


async def test_an_operator_starts_a_run_from_the_form_and_cancels_another(
    console_browser: Browser, stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    async with stack.http() as http:
        other = await _waiting_run(http, org)
    async with watched_page(console_browser, stack.base_url) as watched:
        started = await _operate(watched, stack, engine, org, other)
        watched.assert_clean()
    async with stack.http() as http:
        await wait_for_status(http, other, org["operator"].headers, status="canceled")
        body = await wait_for_status(http, started, org["operator"].headers, status="running")
        assert body["workflow"] == "expense_approval"


async def _operate(
    watched: Watched, stack: Stack, engine: AsyncEngine, org: Org, other: str
) -> str:
    """Start a run from the generated form, cancel `other` from its page; the new run's id."""
    page = watched.page
    await _sign_in(watched, stack, engine, org, "operator")
    await page.goto("/console/runs")
    await page.get_by_role("link", name="Start a run").click()
    await page.get_by_label("Workflow").select_option("expense_approval")
    await page.get_by_role("button", name="Next").click()
    await page.get_by_label("Amount").fill("42.10")
    await page.get_by_label("Currency").fill("EUR")
    await page.get_by_label("Description").fill("Taxi to the client")
    await page.get_by_role("button", name="Start run").click()
    await expect(page.get_by_role("status")).to_have_text("The run was started.")
    started = re.search(r"/console/runs/([0-9a-f-]{36})\?done=started$", page.url)
    assert started is not None, page.url

    async def confirm(dialog: Dialog) -> None:
        assert dialog.type == "confirm"
        await dialog.accept()

    page.on("dialog", confirm)
    await page.goto(f"/console/runs/{other}")
    await expect(page.get_by_role("link", name="Open this step")).to_be_visible()
    await page.get_by_label("Reason").fill("Duplicate of another request")
    await page.get_by_role("button", name="Cancel run").click()
    await expect(page.get_by_role("status")).to_contain_text("Cancellation requested")
    return started.group(1)
