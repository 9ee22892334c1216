"""Business-hours SLA arithmetic: weekends, holidays, evenings, time zones and DST."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from blocks.core.approvals.business_hours import BusinessCalendar

BERLIN = ZoneInfo("Europe/Berlin")
CAL = BusinessCalendar(time_zone="Europe/Berlin", holidays=frozenset({date(2026, 12, 25)}))


def _berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


def test_within_one_day() -> None:
    assert CAL.add(_berlin(2026, 11, 24, 10, 0), timedelta(hours=3)) == _berlin(2026, 11, 24, 13, 0)


def test_rolls_over_evening_and_weekend() -> None:
    # Friday 15:00 + 4 working hours = 2 h Friday + 2 h Monday from 09:00.
    assert CAL.add(_berlin(2026, 11, 27, 15, 0), timedelta(hours=4)) == _berlin(2026, 11, 30, 11, 0)


def test_start_outside_hours_begins_at_next_opening() -> None:
    assert CAL.add(_berlin(2026, 11, 28, 12, 0), timedelta(0)) == _berlin(2026, 11, 30, 9, 0)
    assert CAL.add(_berlin(2026, 11, 24, 20, 0), timedelta(hours=1)) == _berlin(2026, 11, 25, 10, 0)


def test_holidays_do_not_count() -> None:
    # Thursday 24 Dec 16:00 + 2 h: 1 h on the 24th, the 25th is a holiday, 1 h on Monday 28th.
    assert CAL.add(_berlin(2026, 12, 24, 16, 0), timedelta(hours=2)) == _berlin(2026, 12, 28, 10, 0)


def test_a_24h_sla_is_three_working_days() -> None:
    assert CAL.add(_berlin(2026, 11, 24, 9, 0), timedelta(hours=24)) == _berlin(2026, 11, 26, 17, 0)


def test_daylight_saving_follows_the_wall_clock() -> None:
    # Berlin leaves summer time on Sunday 25 Oct 2026; Friday 16:00 + 2 h ends Monday 10:00 CET.
    end = CAL.add(_berlin(2026, 10, 23, 16, 0), timedelta(hours=2))
    assert end == _berlin(2026, 10, 26, 10, 0)
    assert end.utcoffset() == timedelta(0)  # returned in UTC
    assert end == datetime(2026, 10, 26, 9, 0, tzinfo=UTC)


def test_working_time_between_inverts_add() -> None:
    start = _berlin(2026, 11, 27, 15, 30)
    for hours in (0.5, 4, 13, 40):
        end = CAL.add(start, timedelta(hours=hours))
        assert CAL.working_time_between(start, end) == timedelta(hours=hours)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"opens": time(17), "closes": time(9)},
        {"working_days": frozenset()},
        {"working_days": frozenset({7})},
        {"time_zone": "Mars/Olympus"},
    ],
)
def test_bad_calendars_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(Exception):  # noqa: B017, PT011 - ValueError or ZoneInfoNotFoundError
        BusinessCalendar(**kwargs)  # type: ignore[arg-type]


def test_naive_or_negative_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        CAL.add(datetime(2026, 11, 24, 10), timedelta(hours=1))
    with pytest.raises(ValueError, match="negative"):
        CAL.add(_berlin(2026, 11, 24, 10), timedelta(hours=-1))
