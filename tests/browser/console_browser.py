"""A console page in Debian's chromium, driven by Playwright, that records what must never happen
on a console page: a CSP violation, a console error, a script error, a request to anywhere but
the API. Console browser tests share one browser per session (`console_browser` fixture in
tests/browser/conftest.py) and open a fresh context (cookies of their own) per person.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, Route

from blocks.api.identity.sessions import SESSION_COOKIE
from tests.browser.accessibility import accessibility_violations

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
TIMEOUT_MS = 15_000
# Every CSP violation the page sees, reported back by a listener added to each page.
_REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.reportViolation(`${event.violatedDirective} blocked ${event.blockedURI}`);
});
"""


@dataclass
class Watched:
    """A page and what went wrong on it; `assert_clean()` at the end of a test."""

    page: Page
    context: BrowserContext
    violations: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)

    async def use_session(self, token: str) -> None:
        """Carry a session as sign-in sets its cookie: by domain and path (chromium refuses a
        Secure cookie given by an http:// URL, yet sends it to loopback over http)."""
        await self.context.add_cookies(
            [
                {
                    "name": SESSION_COOKIE,
                    "value": token,
                    "domain": "127.0.0.1",
                    "path": "/",
                    "secure": True,
                    "httpOnly": True,
                    "sameSite": "Lax",
                }
            ]
        )

    async def accessibility_violations(self) -> list[str]:
        """The WCAG 2.1 A/AA rules axe-core finds broken on the page as it is now."""
        return await accessibility_violations(self.page)

    def assert_clean(self) -> None:
        assert self.violations == [], self.violations
        assert self.errors == [], self.errors
        assert self.outside == [], self.outside


@asynccontextmanager
async def watched_page(
    browser: Browser, base_url: str, *, viewport: dict[str, int] | None = None
) -> AsyncIterator[Watched]:
    """A fresh context (no cookies) and page on `base_url`, watched for violations."""
    context = await browser.new_context(
        base_url=base_url, viewport=viewport or {"width": 1280, "height": 900}
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    watched = Watched(page=page, context=context)

    async def only_the_api(route: Route) -> None:
        if route.request.url.startswith(f"{base_url}/"):
            await route.continue_()
        else:
            watched.outside.append(route.request.url)
            await route.abort()

    def on_console(message: ConsoleMessage) -> None:
        # Chromium also logs each CSP refusal here, as an error. A page answering 4xx on purpose
        # (a refused form) logs "Failed to load resource": that is not a page fault.
        if message.type == "error" and "Failed to load resource" not in message.text:
            watched.errors.append(message.text)

    await context.route("**/*", only_the_api)

    def report_violation(text: str) -> None:
        watched.violations.append(text)

    # A function of ours: Playwright tags the callable, which a builtin (`list.append`) refuses.
    await context.expose_function("reportViolation", report_violation)
    await context.add_init_script(_REPORT_VIOLATIONS)
    page.on("console", on_console)
    page.on("pageerror", lambda error: watched.errors.append(str(error)))
    try:
        yield watched
    finally:
        await context.close()
