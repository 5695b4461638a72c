"""Cron schedules as the CronJob controller reads them (robfig/cron/v3 `ParseStandard`).

Five fields (minute hour day-of-month month day-of-week) with `*`, `?`, numbers, ranges `a-b`, steps `/n`,
lists, month and weekday names (JAN…DEC, SUN…SAT, 7 = Sunday as well), and the descriptors @yearly
(@annually), @monthly, @weekly, @daily (@midnight) and @hourly. As in robfig/cron, when both day fields are
restricted a day matches if either does; `*` in one of them leaves the other to decide.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

_MONTHS = {m: i + 1 for i, m in enumerate(["JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                            "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"])}
_DAYS = {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
_DESCRIPTORS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
                "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}


class CronError(ValueError):
    pass


@dataclass(frozen=True)
class Schedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    days_star: bool
    weekdays_star: bool

    def day_matches(self, t: dt.datetime) -> bool:
        dom = t.day in self.days
        dow = (t.isoweekday() % 7) in self.weekdays
        if self.days_star or self.weekdays_star:
            return dom and dow
        return dom or dow

    def matches(self, t: dt.datetime) -> bool:
        return (t.minute in self.minutes and t.hour in self.hours and t.month in self.months
                and self.day_matches(t))

    def times(self, after: dt.datetime, until: dt.datetime) -> Iterator[dt.datetime]:
        """Every activation t with after < t <= until (both aware; the schedule runs in their zone)."""
        t = after.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        while t <= until:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0) + dt.timedelta(days=32)).replace(day=1)
            elif not self.day_matches(t):
                t = t.replace(hour=0, minute=0) + dt.timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0) + dt.timedelta(hours=1)
            else:
                if t.minute in self.minutes:
                    yield t
                t += dt.timedelta(minutes=1)


def _field(text: str, lo: int, hi: int, names: dict[str, int]) -> tuple[frozenset[int], bool]:
    values: set[int] = set()
    star = False
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"invalid step in {part!r}")
            step = int(step_text)
        if body in ("*", "?"):
            start, end = lo, hi
            star = star or not step_text
        else:
            first, dash, last = body.partition("-")
            start = _value(first, names)
            end = _value(last, names) if dash else (hi if step_text else start)
        if start < lo or end > hi or start > end:
            raise CronError(f"value out of range ({lo}-{hi}) in {part!r}")
        values.update(range(start, end + 1, step))
    return frozenset(values), star


def _value(text: str, names: dict[str, int]) -> int:
    if text.upper() in names:
        return names[text.upper()]
    if not text.isdigit():
        raise CronError(f"failed to parse int from {text}")
    return int(text)


def parse(spec: str) -> Schedule:
    text = spec.strip()
    if text.startswith("@"):
        if text not in _DESCRIPTORS:
            raise CronError(f"unrecognized descriptor: {text}")
        text = _DESCRIPTORS[text]
    fields = text.split()
    if len(fields) != 5:
        raise CronError(f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]")
    minutes, _ = _field(fields[0], 0, 59, {})
    hours, _ = _field(fields[1], 0, 23, {})
    days, days_star = _field(fields[2], 1, 31, {})
    months, _ = _field(fields[3], 1, 12, _MONTHS)
    weekdays, weekdays_star = _field(fields[4], 0, 7, _DAYS)
    if 7 in weekdays:
        weekdays = frozenset((weekdays - {7}) | {0})
    return Schedule(minutes, hours, days, months, weekdays, days_star, weekdays_star)
