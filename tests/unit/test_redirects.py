"""After sign-in a browser is sent only to a path on this site."""

from __future__ import annotations

import pytest

from blocks.core.identity.redirects import safe_next


@pytest.mark.parametrize(
    "candidate",
    [
        "/runs/123?tab=audit",
        "/",
        "/v1/inbox#top",
    ],
)
def test_paths_on_this_site_are_kept(candidate: str) -> None:
    assert safe_next(candidate) == candidate


@pytest.mark.parametrize(
    "candidate",
    [
        None,
        "",
        "https://evil.example/",
        "//evil.example/path",
        "/\\evil.example",
        "\\\\evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        "javascript:alert(1)",
        "runs",
        "http:/evil.example",
    ],
)
def test_anything_else_goes_home(candidate: str | None) -> None:
    assert safe_next(candidate) == "/"
