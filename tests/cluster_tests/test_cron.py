"""The CronJob controller's schedule parser (robfig/cron ParseStandard rules) on fixed times, and its
compressed test clock."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from tests.cluster.control.cron import CronError, parse
from tests.cluster.control.cronjob import CronJobController, compressed_clock

UTC = dt.timezone.utc


def times(spec: str, start: dt.datetime, hours: float) -> list[str]:
    return [t.strftime("%a %Y-%m-%d %H:%M") for t in parse(spec).times(start, start + dt.timedelta(hours=hours))]


def test_fields_steps_ranges_and_names() -> None:
    start = dt.datetime(2026, 12, 4, 8, 0, tzinfo=UTC)  # a Friday
    assert times("*/20 9 * * MON-FRI", start, 80) == [
        "Fri 2026-12-04 09:00", "Fri 2026-12-04 09:20", "Fri 2026-12-04 09:40",
        "Mon 2026-12-07 09:00", "Mon 2026-12-07 09:20", "Mon 2026-12-07 09:40"]
    assert times("0 0 1 JAN,jul *", start, 24 * 365) == ["Fri 2027-01-01 00:00", "Thu 2027-07-01 00:00"]
    assert times("5-10/5 0 * * *", start, 24) == ["Sat 2026-12-05 00:05", "Sat 2026-12-05 00:10"]
    assert times("0 12 * * 7", start, 24 * 3) == ["Sun 2026-12-06 12:00"]  # 7 is Sunday too


def test_day_of_month_or_day_of_week() -> None:
    start = dt.datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
    # Both restricted: either matches (13th, or any Friday).
    assert times("0 0 13 * FRI", start, 24 * 20) == ["Fri 2026-12-04 00:00", "Fri 2026-12-11 00:00",
                                                     "Sun 2026-12-13 00:00", "Fri 2026-12-18 00:00"]
    # A star in one of them leaves the other to decide.
    assert times("0 0 13 * *", start, 24 * 20) == ["Sun 2026-12-13 00:00"]
    assert times("0 0 * * FRI", start, 24 * 10) == ["Fri 2026-12-04 00:00", "Fri 2026-12-11 00:00"]


def test_descriptors() -> None:
    start = dt.datetime(2026, 12, 31, 22, 30, tzinfo=UTC)
    assert times("@hourly", start, 2) == ["Thu 2026-12-31 23:00", "Fri 2027-01-01 00:00"]
    assert times("@yearly", start, 2) == ["Fri 2027-01-01 00:00"]
    assert times("@daily", start, 2) == times("@midnight", start, 2) == ["Fri 2027-01-01 00:00"]


def test_time_zone_follows_wall_clock() -> None:
    zurich = zoneinfo.ZoneInfo("Europe/Zurich")
    start = dt.datetime(2026, 3, 28, 0, 0, tzinfo=zurich)  # DST starts on the 29th
    got = list(parse("30 9 * * *").times(start, start + dt.timedelta(days=2)))
    assert [t.astimezone(UTC).strftime("%d %H:%M") for t in got] == ["28 08:30", "29 07:30"]


@pytest.mark.parametrize("spec, error", [
    ("* * * *", "expected exactly 5 fields, found 4"),
    ("61 * * * *", "out of range"),
    ("*/0 * * * *", "invalid step"),
    ("@fortnightly", "unrecognized descriptor"),
    ("x * * * *", "failed to parse int from x"),
])
def test_errors(spec: str, error: str) -> None:
    with pytest.raises(CronError, match=error):
        parse(spec)


def test_compressed_clock_runs_from_its_origin() -> None:
    origin = dt.datetime(2026, 12, 4, 8, 0, 30, tzinfo=UTC).timestamp()
    assert compressed_clock(origin, origin, 2.0) == dt.datetime(2026, 12, 4, 8, 0, 30, tzinfo=UTC)
    # One cron minute per 2 s from the origin on; without a period the real time itself.
    assert compressed_clock(origin + 3.0, origin, 2.0) == dt.datetime(2026, 12, 4, 8, 2, 0, tzinfo=UTC)
    assert compressed_clock(origin + 3.0, origin, None) == dt.datetime(2026, 12, 4, 8, 0, 33, tzinfo=UTC)
    # A controller started later (a restart of the server) on the cluster's origin keeps that clock: it does
    # not start again from the real time, behind the lastScheduleTime it wrote before.
    later = CronJobController(None, None, period_seconds=2.0, clock_origin=origin)  # type: ignore[arg-type]
    real = dt.datetime.fromtimestamp(origin + 600.0, UTC)
    assert later.clock(real) == compressed_clock(origin + 600.0, origin, 2.0)
    assert later.clock(real) - real > dt.timedelta(hours=4)
