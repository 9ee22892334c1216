"""Browser fixtures: one chromium (Debian's) for the session's console tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright

from tests.browser.console_browser import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="session")
async def console_browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(
            "chromium is not installed (Debian: apt-get install chromium; `make test` does it)"
        )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()
