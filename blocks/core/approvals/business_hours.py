"""Business-hours arithmetic: when an SLA counted in working time ends, in an org's calendar."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

_MAX_DAYS_SCANNED = 3660  # ten years of calendar: a calendar with no working time fails loudly


@dataclass(frozen=True)
class BusinessCalendar:
    """Working days (0 = Monday), one working window per day, a time zone, and holidays."""

    time_zone: str = "UTC"
    working_days: frozenset[int] = frozenset({0, 1, 2, 3, 4})
    opens: time = time(9, 0)
    closes: time = time(17, 0)
    holidays: frozenset[date] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not self.opens < self.closes:
            raise ValueError("a working day must open before it closes")
        if not self.working_days or not self.working_days <= set(range(7)):
            raise ValueError("working days are a non-empty set of 0 (Monday) to 6 (Sunday)")
        ZoneInfo(self.time_zone)  # refuse an unknown zone now, not at the first deadline

    def is_working_day(self, day: date) -> bool:
        return day.weekday() in self.working_days and day not in self.holidays

    def _window(self, day: date) -> tuple[datetime, datetime]:
        zone = ZoneInfo(self.time_zone)
        return (
            datetime.combine(day, self.opens, tzinfo=zone),
            datetime.combine(day, self.closes, tzinfo=zone),
        )

    def add(self, start: datetime, duration: timedelta) -> datetime:
        """The instant `duration` of working time after `start` (an aware datetime), in UTC.

        Time outside working windows does not count; a duration of zero from outside hours
        lands at the next opening. Daylight-saving changes follow the zone's wall clock.
        """
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if duration < timedelta(0):
            raise ValueError("duration must not be negative")
        remaining = duration
        local = start.astimezone(ZoneInfo(self.time_zone))
        day = local.date()
        for _ in range(_MAX_DAYS_SCANNED):
            if self.is_working_day(day):
                opens, closes = self._window(day)
                begin = max(local, opens)
                if begin < closes:
                    available = closes - begin
                    if remaining <= available:
                        return (begin + remaining).astimezone(UTC)
                    remaining -= available
            day += timedelta(days=1)
            local = datetime.combine(day, time(0, 0), tzinfo=ZoneInfo(self.time_zone))
        raise ValueError("the calendar has no working time within ten years")

    def working_time_between(self, start: datetime, end: datetime) -> timedelta:
        """Working time elapsed from `start` to `end` (zero if end is not after start)."""
        if end <= start:
            return timedelta(0)
        zone = ZoneInfo(self.time_zone)
        total = timedelta(0)
        day = start.astimezone(zone).date()
        last = end.astimezone(zone).date()
        while day <= last:
            if self.is_working_day(day):
                opens, closes = self._window(day)
                lo, hi = max(opens, start), min(closes, end)
                if lo < hi:
                    total += hi - lo
            day += timedelta(days=1)
        return total


def deadline_after(
    start: datetime, sla: timedelta | None, calendar: BusinessCalendar | None
) -> datetime | None:
    """When an SLA that starts at `start` ends: wall-clock, or working time in `calendar`."""
    if sla is None:
        return None
    return calendar.add(start, sla) if calendar is not None else start + sla
