"""What the approver's console pages compute without a server: where `next` may send a browser,
and how a deadline reads ("in 3 h", "overdue by 2 h") with the class that colours it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from blocks.api.console.sign_in.flow import HOME, console_next
from blocks.api.console.time_text import deadline, span, utc, when

NOW = datetime(2026, 12, 2, 14, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "candidate",
    [
        None,
        "",
        "https://evil.example/console/inbox",
        "//evil.example/console",
        "/\\evil.example",
        "/\t/evil.example",
        "/v1/me",
        "/auth/signin",
        "/consolex",
        "/console/../v1/me",
        "/console/static/console.js",
    ],
)
def test_next_outside_the_console_is_the_inbox(candidate: str | None) -> None:
    assert console_next(candidate) == HOME


@pytest.mark.parametrize("path", ["/console", "/console/runs", "/console/runs/1/steps/a?x=1"])
def test_next_inside_the_console_is_kept(path: str) -> None:
    assert console_next(path) == path


def test_time_left_and_overdue() -> None:
    later = deadline(NOW + timedelta(days=2, hours=3, minutes=10), NOW)
    assert later is not None
    assert (later.text, later.css, later.at) == ("in 2 d 3 h", "", "2026-12-04 17:10:00 UTC")
    soon = deadline(NOW + timedelta(hours=3, minutes=5), NOW)
    assert soon is not None
    assert (soon.text, soon.css) == ("in 3 h 5 min", "due-soon")
    late = deadline(NOW - timedelta(hours=2), NOW)
    assert late is not None
    assert (late.text, late.css) == ("overdue by 2 h", "overdue")
    assert deadline(None, NOW) is None
    closed = deadline(NOW - timedelta(hours=2), NOW, waiting=False)
    assert closed is not None
    assert (closed.text, closed.css) == ("", "")
    assert span(20) == "less than a minute"
    assert span(-3 * 86400) == "3 d"
    assert utc(datetime(2026, 1, 1, 1, 0, tzinfo=UTC)) == "2026-01-01 01:00:00 UTC"
    assert utc(None, "") == ""
    assert when(NOW - timedelta(minutes=90), NOW) == "2026-12-02 12:30:00 UTC (1 h 30 min ago)"
