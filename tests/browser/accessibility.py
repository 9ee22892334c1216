"""Accessibility checked by axe-core (Deque's engine, from tests/tools/axe, installed by `make
test` from its lock file) on a page as the browser rendered it: WCAG 2.1 A and AA rules (labels,
names, contrast, headings, landmarks, keyboard reachability). axe runs through Playwright's
evaluate, which the page's CSP does not govern: the page itself still loads nothing inline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page

AXE = (
    Path(__file__).resolve().parents[1]
    / "tools"
    / "axe"
    / "node_modules"
    / "axe-core"
    / "axe.min.js"
)
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def _axe_source() -> str:
    if not AXE.exists():
        pytest.skip(
            "axe-core is not installed (npm ci --prefix tests/tools/axe; `make test` does it)"
        )
    return AXE.read_text()


async def accessibility_violations(page: Page) -> list[str]:
    """Each WCAG A/AA rule the page breaks, with the elements that break it."""
    if not await page.evaluate("() => typeof window.axe !== 'undefined'"):
        await page.evaluate(_axe_source())
    result: dict[str, Any] = await page.evaluate(
        "(tags) => axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG_TAGS
    )
    return [
        f"{page.url}: {v['id']} ({v['impact']}): {v['help']} -> "
        + "; ".join(" ".join(node["target"]) for node in v["nodes"][:5])
        for v in result["violations"]
    ]
