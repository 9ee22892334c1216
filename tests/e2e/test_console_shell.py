"""The console's shell: pages need a sign-in (and come back to where they were), a page that does
not exist is an HTML page rather than problem+json, and every answer carries the strict CSP."""

from __future__ import annotations

from blocks.api.security_headers import CONTENT_SECURITY_POLICY
from tests.support import Stack


async def test_a_page_without_a_session_goes_to_sign_in_and_back(stack: Stack) -> None:
    async with stack.http() as http:
        home = await http.get("/console")
        assert home.status_code == 303
        assert home.headers["location"] == "/console/inbox"
        page = await http.get("/console/runs")
        assert page.status_code == 303
        assert page.headers["location"] == "/console/sign-in?next=/console/runs"


async def test_an_unknown_page_is_html_under_the_strict_policy(stack: Stack) -> None:
    async with stack.http() as http:
        missing = await http.get("/console/no-such-page")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    assert missing.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "<h1>Not Found</h1>" in missing.text
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert "'unsafe-eval'" not in CONTENT_SECURITY_POLICY


async def test_the_stylesheet_and_script_are_files_of_this_site(stack: Stack) -> None:
    async with stack.http() as http:
        css = await http.get("/console/static/console.css")
        js = await http.get("/console/static/console.js")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert js.status_code == 200
    assert "javascript" in js.headers["content-type"]
    assert js.headers["x-content-type-options"] == "nosniff"
