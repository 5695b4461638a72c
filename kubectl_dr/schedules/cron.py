"""Cron expressions as the Kubernetes CronJob controller reads them (robfig/cron/v3 `ParseStandard`).

Checked here before anything is sent, so a typo is an error that names the field, not a CronJob that never
runs (the API server validates the syntax too, but says nothing about what a schedule means); and used to
show the next run in `schedule list`. Five fields (minute hour day-of-month month day-of-week) with `*`,
`?`, numbers, ranges, steps, lists, month and weekday names, and @hourly/@daily/@weekly/@monthly/@yearly.
When both day fields are restricted a day matches if either does, as in cron.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass

from kubectl_dr.errors import UsageError

_MONTHS = {m: i + 1 for i, m in enumerate(["JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                            "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"])}
_DAYS = {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
DESCRIPTORS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
               "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_NO_NAMES: dict[str, int] = {}
_FIELDS = (("minute", 0, 59, _NO_NAMES), ("hour", 0, 23, _NO_NAMES), ("day of month", 1, 31, _NO_NAMES),
           ("month", 1, 12, _MONTHS), ("day of week", 0, 7, _DAYS))
CRON_HELP = ("five fields: minute hour day-of-month month day-of-week, e.g. '0 */12 * * *' (every 12 hours) or "
             "'30 2 * * *' (02:30 daily); or @hourly, @daily, @weekly, @monthly")


@dataclass(frozen=True)
class Schedule:
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    days_star: bool
    weekdays_star: bool

    def _day(self, t: dt.datetime) -> bool:
        dom, dow = t.day in self.days, (t.isoweekday() % 7) in self.weekdays
        return (dom and dow) if (self.days_star or self.weekdays_star) else (dom or dow)

    def next_after(self, after: dt.datetime) -> dt.datetime | None:
        """The first activation after ``after`` (an aware time; the schedule runs in its zone)."""
        t = after.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        limit = after + dt.timedelta(days=366 * 5)  # "31 2 * *" (February 31st) never comes
        while t <= limit:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0) + dt.timedelta(days=32)).replace(day=1)
            elif not self._day(t):
                t = t.replace(hour=0, minute=0) + dt.timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0) + dt.timedelta(hours=1)
            elif t.minute not in self.minutes:
                t += dt.timedelta(minutes=1)
            else:
                return t
        return None


def _field(text: str, name: str, lo: int, hi: int, names: dict[str, int]) -> tuple[frozenset[int], bool]:
    values: set[int] = set()
    star = False
    for part in text.split(","):
        body, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"invalid step {step_text!r} in the {name} field {part!r}")
            step = int(step_text)
        if body in ("*", "?"):
            start, end = lo, hi
            star = star or not slash
        else:
            first, dash, last = body.partition("-")
            start = _value(first, name, names)
            end = _value(last, name, names) if dash else (hi if slash else start)
        if start < lo or end > hi or start > end:
            raise ValueError(f"the {name} field {part!r} is out of range ({lo}-{hi})")
        values.update(range(start, end + 1, step))
    return frozenset(values), star


def _value(text: str, field: str, names: dict[str, int]) -> int:
    if text.upper() in names:
        return names[text.upper()]
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a number in the {field} field")
    return int(text)


def parse(expr: str) -> Schedule:
    """The schedule, or UsageError saying what is wrong and what a schedule looks like."""
    text = expr.strip()
    body = DESCRIPTORS.get(text, text)
    if text.startswith("@") and text not in DESCRIPTORS:
        raise UsageError(f"invalid --cron {expr!r}: unknown descriptor {text}", hint=f"Use {CRON_HELP}.")
    fields = body.split()
    if len(fields) != 5:
        raise UsageError(f"invalid --cron {expr!r}: expected 5 fields, found {len(fields)}",
                         hint=f"Use {CRON_HELP}. Quote it in the shell.")
    try:
        parsed = [_field(f, name, lo, hi, names) for f, (name, lo, hi, names) in zip(fields, _FIELDS, strict=True)]
    except ValueError as exc:
        raise UsageError(f"invalid --cron {expr!r}: {exc}", hint=f"Use {CRON_HELP}.") from None
    weekdays = parsed[4][0]
    if 7 in weekdays:  # 7 is Sunday too
        weekdays = frozenset((weekdays - {7}) | {0})
    schedule = Schedule(text, parsed[0][0], parsed[1][0], parsed[2][0], parsed[3][0], weekdays, parsed[2][1],
                        parsed[4][1])
    if schedule.next_after(dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)) is None:
        raise UsageError(f"invalid --cron {expr!r}: it never fires (no such day)", hint=f"Use {CRON_HELP}.")
    return schedule


def zone(name: str | None) -> dt.tzinfo:
    """An IANA time zone (the CronJob's spec.timeZone), UTC when None."""
    if not name:
        return dt.timezone.utc
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"unknown time zone {name!r}",
                         hint="Use an IANA name such as Europe/Berlin, America/New_York or Etc/UTC.") from None


def next_run(expr: str, time_zone: str | None, after: dt.datetime) -> dt.datetime | None:
    """The next activation after ``after``, in UTC, or None when the schedule cannot be read."""
    try:
        schedule, tz = parse(expr), zone(time_zone)
    except UsageError:
        return None
    found = schedule.next_after(after.astimezone(tz))
    return found.astimezone(dt.timezone.utc) if found else None
