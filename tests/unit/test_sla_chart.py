"""The SLA chart: counts per workflow and week, bar heights from the numbers, and an SVG in which
a workflow's name is text (escaped), with attributes only (the CSP allows no style attribute)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from xml.etree.ElementTree import Element

from defusedxml.ElementTree import fromstring

from blocks.api.console.audit.sla_chart import (
    PLOT_HEIGHT,
    TOP,
    UNKNOWN_WORKFLOW,
    bar_height,
    charts,
    week_of,
    weekly_counts,
)
from blocks.api.console.pages import environment

SVG = "{http://www.w3.org/2000/svg}"
MONDAY = datetime(2026, 11, 30, 9, tzinfo=UTC)
NEXT_WEEK = datetime(2026, 12, 7, 23, 59, tzinfo=UTC)


def _svgs(html: str) -> list[Element]:
    # The template's output is well-formed XML once wrapped: each <svg> parses on its own.
    root = fromstring(f"<div>{html}</div>")
    return root.findall(f".//{SVG}svg")


def test_weeks_start_on_monday_utc_and_only_met_and_breached_count() -> None:
    assert week_of(datetime(2026, 12, 6, 23, 0, tzinfo=UTC)) == date(2026, 11, 30)
    assert week_of(datetime(2026, 12, 7, 0, 0, tzinfo=UTC)) == date(2026, 12, 7)
    counts = weekly_counts(
        [
            ("expense", MONDAY, "met"),
            ("expense", MONDAY, "met"),
            ("expense", MONDAY, "breached"),
            ("expense", MONDAY, "open"),
            ("expense", NEXT_WEEK, "breached"),
            (None, MONDAY, "met"),
        ]
    )
    assert counts["expense"][date(2026, 11, 30)].met == 2
    assert counts["expense"][date(2026, 11, 30)].breached == 1
    assert counts["expense"][date(2026, 12, 7)].met == 0
    assert counts["expense"][date(2026, 12, 7)].breached == 1
    assert counts[UNKNOWN_WORKFLOW][date(2026, 11, 30)].met == 1


def test_bar_heights_are_proportional_to_the_numbers_on_one_scale() -> None:
    assert bar_height(4, 4) == PLOT_HEIGHT
    assert bar_height(1, 4) == PLOT_HEIGHT / 4
    assert bar_height(0, 4) == 0
    assert bar_height(3, 0) == 0
    drawn = charts(
        weekly_counts(
            [("a", MONDAY, "met")] * 4
            + [("a", MONDAY, "breached")] * 2
            + [("b", NEXT_WEEK, "breached")]
        )
    )
    assert [c.workflow for c in drawn] == ["a", "b"]
    a, b = drawn
    # Both charts have both weeks (an empty week is drawn empty), on the largest value's scale.
    assert [g.label for g in a.groups] == ["30 Nov", "07 Dec"]
    [met, breached] = a.groups[0].bars
    assert (met.kind, met.value, met.height) == ("met", 4, PLOT_HEIGHT)
    assert (breached.kind, breached.value, breached.height) == ("breached", 2, PLOT_HEIGHT / 2)
    # Bars stand on the baseline.
    assert met.y + met.height == TOP + PLOT_HEIGHT == breached.y + breached.height
    assert [bar.height for bar in a.groups[1].bars] == [0, 0]
    assert [bar.height for bar in b.groups[1].bars] == [0, PLOT_HEIGHT / 4]
    assert "Week of 30 Nov 2026: 4 met, 2 breached" in a.summary


def test_the_svg_escapes_a_workflow_name_and_has_no_style_attribute() -> None:
    name = '<script>alert(1)</script>"><svg onload=alert(2)>'
    drawn = charts(weekly_counts([(name, MONDAY, "met"), (name, MONDAY, "breached")]))
    html = environment.get_template("sla_chart.html").render(charts=drawn)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "style=" not in html
    [svg] = _svgs(html)
    title = svg.find(f"{SVG}title")
    assert title is not None
    assert title.text is not None
    assert title.text.endswith(name)  # the name as text, exactly as given
    rects = svg.findall(f".//{SVG}rect")
    assert [(r.get("class"), float(r.get("height") or -1)) for r in rects] == [
        ("bar met", PLOT_HEIGHT),
        ("bar breached", PLOT_HEIGHT),
    ]
    assert all(r.get("fill") for r in rects)
    labels = [t.text for t in svg.findall(f".//{SVG}text")]
    assert labels == ["1", "1", "30 Nov"]
    assert svg.get("role") == "img"
    # No element of the SVG came from the name: only what the template writes.
    tags = {element.tag.removeprefix(SVG) for element in svg.iter()}
    assert tags == {"svg", "title", "desc", "line", "g", "rect", "text"}
