"""The site's Content Security Policy: on every answer (JSON, refusals, errors, the /docs page
and its files), except a page that sets a policy of its own, which keeps it."""

from __future__ import annotations

from blocks.api.security_headers import CONTENT_SECURITY_POLICY
from tests.support import Stack


def _directives(policy: str) -> dict[str, str]:
    return dict(part.strip().partition(" ")[::2] for part in policy.split(";"))


def test_the_policy_allows_only_this_site_and_no_inline_code() -> None:
    directives = _directives(CONTENT_SECURITY_POLICY)
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["object-src"] == "'none'"
    assert directives["base-uri"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert not any("unsafe" in value or "*" in value for value in directives.values())


async def test_every_answer_carries_the_policy(stack: Stack) -> None:
    async with stack.http() as http:
        answers = {
            "json": await http.get("/healthz"),
            "document": await http.get("/openapi.json"),
            "refusal": await http.get("/v1/runs"),
            "unknown route": await http.get("/no-such-page"),
            "docs page": await http.get("/docs"),
        }
    assert answers["refusal"].status_code == 401
    assert answers["unknown route"].status_code == 404
    for name, answer in answers.items():
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, name


async def test_a_page_with_its_own_policy_keeps_it(stack: Stack) -> None:
    # The emailed-link pages (api.html_pages) set a stricter one: no script at all.
    async with stack.http() as http:
        page = await http.get("/auth/signin")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert policy != CONTENT_SECURITY_POLICY
    assert _directives(policy)["default-src"] == "'none'"
    assert len(page.headers.get_list("content-security-policy")) == 1
