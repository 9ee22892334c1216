"""The API reference in a real browser (Debian's chromium, driven by Playwright): /docs renders
and calls the API with no network beyond the API itself, under the site's strict CSP.

`make test` installs chromium when it is missing; run by hand without it, this test is skipped,
saying so.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import ConsoleMessage, Request, Response, Route, async_playwright
from sqlalchemy.ext.asyncio import AsyncEngine

from blocks.api.reference.openapi import API_KEY_SCHEME
from blocks.api.security_headers import CONTENT_SECURITY_POLICY
from tests.support import Stack, make_org

CHROMIUM = Path("/usr/bin/chromium")
# Debian's chromium, not a browser build of Playwright's own (`playwright install` is never run).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="chromium is not installed (Debian: apt-get install chromium; `make test` does it)",
)
# Every CSP violation the page sees, reported back by a listener Playwright adds to each page.
_REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.reportViolation(`${event.violatedDirective} blocked ${event.blockedURI}`);
});
"""
_TIMEOUT_MS = 15_000


async def test_try_it_out_lists_runs_with_an_api_key_offline_under_the_csp(
    stack: Stack, engine: AsyncEngine
) -> None:
    org = await make_org(engine)
    key = org["operator"].key
    outside: list[str] = []
    failed: list[str] = []
    violations: list[str] = []
    console_errors: list[str] = []
    list_requests: list[Request] = []

    async def only_the_api(route: Route) -> None:
        if route.request.url.startswith(f"{stack.base_url}/"):
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()

    def on_console(message: ConsoleMessage) -> None:
        # Chromium also logs each CSP refusal here, as an error.
        if message.type == "error":
            console_errors.append(message.text)

    def on_violation(description: str) -> None:
        violations.append(description)

    def on_response(response: Response) -> None:
        if response.status >= 400:
            failed.append(f"{response.url}: {response.status}")

    def on_request(request: Request) -> None:
        if request.url.startswith(f"{stack.base_url}/v1/runs"):
            list_requests.append(request)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            context = await browser.new_context()
            context.set_default_timeout(_TIMEOUT_MS)
            await context.route("**/*", only_the_api)
            await context.expose_function("reportViolation", on_violation)
            await context.add_init_script(_REPORT_VIOLATIONS)
            page = await context.new_page()
            page.on("console", on_console)
            page.on("pageerror", lambda error: console_errors.append(str(error)))
            page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
            page.on("response", on_response)
            page.on("request", on_request)

            answer = await page.goto(f"{stack.base_url}/docs")
            assert answer is not None
            assert answer.status == 200
            assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY

            # The operations list renders, from the document the API serves.
            runs = page.locator(".opblock-get").filter(
                has=page.locator('.opblock-summary-path[data-path="/v1/runs"]')
            )
            await runs.wait_for()
            assert await page.locator(".opblock").count() >= 20

            # Authorize with the operator's API key, through the dialog.
            await page.locator(".auth-wrapper button.authorize").click()
            dialog = page.locator(".dialog-ux .modal-ux")
            bearer = dialog.locator("form").filter(has_text=f"{API_KEY_SCHEME} (http, Bearer)")
            await bearer.locator("input").fill(key)
            await bearer.locator("button.authorize").click()
            await dialog.locator("button.close-modal").click()

            # Try it out -> Execute on GET /v1/runs: the key goes along, the API answers 200.
            await runs.locator(".opblock-summary").click()
            await runs.locator("button.try-out__btn").click()
            await runs.locator("button.execute").click()
            status = runs.locator(".live-responses-table .response .response-col_status")
            await status.first.wait_for()
            assert (await status.first.inner_text()).strip() == "200"
            await page.wait_for_load_state("networkidle")
        finally:
            await browser.close()

    assert len(list_requests) == 1
    assert list_requests[0].headers["authorization"] == f"Bearer {key}"
    assert outside == []
    assert failed == []
    assert violations == []
    assert console_errors == []
