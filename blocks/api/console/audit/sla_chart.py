"""The SLA report's chart, as numbers: steps met and breached per workflow and week (weeks start
on Monday, UTC, by when the step opened), and the bars' geometry for the server-rendered SVG
(templates/sla_chart.html draws it with attributes only, autoescaped: the strict CSP allows
no style attribute, and a workflow's name is text, never markup)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

# The plot's box in SVG user units (the SVG scales to its container through its viewBox).
PLOT_HEIGHT = 160.0
TOP = 24.0  # room for the value above the tallest bar
BOTTOM = 36.0  # room for the week labels
LEFT = 12.0
BAR_WIDTH = 20.0
BAR_GAP = 4.0
GROUP_GAP = 20.0
# The most recent weeks drawn; the table below the chart holds every workflow's totals.
MAX_WEEKS = 26

MET_FILL = "#1b6b2f"
BREACHED_FILL = "#a4161a"
UNKNOWN_WORKFLOW = "(workflow not recorded)"


@dataclass
class WeekCounts:
    met: int = 0
    breached: int = 0


@dataclass(frozen=True)
class Bar:
    kind: str  # "met" or "breached"
    value: int
    x: float
    y: float
    width: float
    height: float
    fill: str
    label: str  # what a screen reader and a tooltip say: "Week of 30 Nov 2026: 3 met"


@dataclass(frozen=True)
class WeekGroup:
    label: str  # "30 Nov"
    center: float
    bars: tuple[Bar, ...]


@dataclass(frozen=True)
class Chart:
    workflow: str
    width: float
    height: float
    baseline: float
    groups: tuple[WeekGroup, ...]
    summary: str  # the whole chart in words (the SVG's <desc>)


def week_of(moment: datetime) -> date:
    """The Monday (UTC) of the week `moment` falls in."""
    day = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).date()
    return day - timedelta(days=day.weekday())


def weekly_counts(
    rows: Iterable[tuple[str | None, datetime, str]],
) -> dict[str, dict[date, WeekCounts]]:
    """(workflow, opened at, outcome) of each step -> met and breached per workflow and week.
    Other outcomes (open, overdue, no SLA, cancelled, expired) count towards neither."""
    counts: dict[str, dict[date, WeekCounts]] = {}
    for workflow, opened_at, outcome in rows:
        if outcome not in ("met", "breached"):
            continue
        week = counts.setdefault(workflow or UNKNOWN_WORKFLOW, {}).setdefault(
            week_of(opened_at), WeekCounts()
        )
        if outcome == "met":
            week.met += 1
        else:
            week.breached += 1
    return counts


def bar_height(value: int, largest: int) -> float:
    """A bar's height: proportional to its value, the largest value filling the plot."""
    if largest <= 0 or value <= 0:
        return 0.0
    return round(PLOT_HEIGHT * value / largest, 2)


def charts(counts: dict[str, dict[date, WeekCounts]]) -> list[Chart]:
    """One chart per workflow (by name), all on the same weeks and the same scale, so their
    bars compare; a week with no decided step is drawn empty rather than left out."""
    weeks = sorted({week for by_week in counts.values() for week in by_week})[-MAX_WEEKS:]
    largest = max(
        (max(c.met, c.breached) for by_week in counts.values() for c in by_week.values()),
        default=0,
    )
    return [_chart(name, counts[name], weeks, largest) for name in sorted(counts)]


def _chart(
    workflow: str, by_week: dict[date, WeekCounts], weeks: list[date], largest: int
) -> Chart:
    baseline = TOP + PLOT_HEIGHT
    group_width = 2 * BAR_WIDTH + BAR_GAP
    groups: list[WeekGroup] = []
    spoken: list[str] = []
    for index, week in enumerate(weeks):
        counts = by_week.get(week, WeekCounts())
        left = LEFT + index * (group_width + GROUP_GAP)
        named = f"Week of {week:%d %b %Y}"
        bars = tuple(
            _bar(kind, value, left + offset, largest, fill, named)
            for kind, value, offset, fill in (
                ("met", counts.met, 0.0, MET_FILL),
                ("breached", counts.breached, BAR_WIDTH + BAR_GAP, BREACHED_FILL),
            )
        )
        groups.append(WeekGroup(f"{week:%d %b}", left + group_width / 2, bars))
        spoken.append(f"{named}: {counts.met} met, {counts.breached} breached")
    width = LEFT * 2 + max(len(weeks), 1) * (group_width + GROUP_GAP) - GROUP_GAP
    return Chart(
        workflow=workflow,
        width=round(width, 2),
        height=TOP + PLOT_HEIGHT + BOTTOM,
        baseline=baseline,
        groups=tuple(groups),
        summary="; ".join(spoken) if spoken else "No step was decided in this window.",
    )


def _bar(kind: str, value: int, x: float, largest: int, fill: str, week: str) -> Bar:
    height = bar_height(value, largest)
    return Bar(
        kind=kind,
        value=value,
        x=round(x, 2),
        y=round(TOP + PLOT_HEIGHT - height, 2),
        width=BAR_WIDTH,
        height=height,
        fill=fill,
        label=f"{week}: {value} {kind}",
    )
