"""When schedules are due: cron across both DST changes, intervals, and the catch-up policies,
all from given instants (no clock, no sleeping)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobqueue import Cron
from jobqueue.exceptions import ConfigurationError
from jobqueue.scheduler import CATCH_UP_LIMIT, ON_TIME, due_ticks
from jobqueue.schedules import Every, from_declaration, timing


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# (time zone, cron, start, the next ticks after start in UTC). In 2025 Paris springs forward on
# March 30 (02:00 CET -> 03:00 CEST, 01:00 UTC) and falls back on October 26 (03:00 CEST ->
# 02:00 CET, 01:00 UTC); New York on March 9 (02:00 EST -> 03:00 EDT, 07:00 UTC) and November 2
# (02:00 EDT -> 01:00 EST, 06:00 UTC).
DST_TABLE = [
    # spring-forward: 02:30 does not exist that night; it runs once, at 03:00 (the first valid
    # instant), and the day after at 02:30 again.
    ("Europe/Paris", "30 2 * * *", "2025-03-29 00:00",
     ["2025-03-29 01:30", "2025-03-30 01:00", "2025-03-31 00:30"]),
    ("Europe/Paris", "0 2 * * *", "2025-03-29 12:00", ["2025-03-30 01:00", "2025-03-31 00:00"]),
    # fall-back: 02:30 happens twice that night; it runs once (the first time).
    ("Europe/Paris", "30 2 * * *", "2025-10-25 00:00",
     ["2025-10-25 00:30", "2025-10-26 00:30", "2025-10-27 01:30"]),
    # ... also for a scheduler asking from inside the repeated hour (after the first 02:30).
    ("Europe/Paris", "30 2 * * *", "2025-10-26 01:10", ["2025-10-27 01:30"]),
    ("Europe/Paris", "30 2 * * *", "2025-10-26 00:45", ["2025-10-27 01:30"]),
    # entries with * in the hour follow the clock: hourly stays hourly through both changes.
    ("Europe/Paris", "0 * * * *", "2025-10-25 23:30",
     ["2025-10-26 00:00", "2025-10-26 01:00", "2025-10-26 02:00"]),
    ("Europe/Paris", "0 * * * *", "2025-03-30 00:30", ["2025-03-30 01:00", "2025-03-30 02:00"]),
    ("America/New_York", "30 2 * * *", "2025-03-08 12:00",
     ["2025-03-09 07:00", "2025-03-10 06:30"]),
    ("America/New_York", "30 1 * * *", "2025-11-01 12:00",
     ["2025-11-02 05:30", "2025-11-03 06:30"]),
    ("America/New_York", "30 1 * * *", "2025-11-02 06:10", ["2025-11-03 06:30"]),
    ("America/New_York", "0 9 * * 1-5", "2025-11-01 00:00",
     ["2025-11-03 14:00", "2025-11-04 14:00"]),
    ("America/New_York", "0 9 * * 1-5", "2025-03-07 15:00",
     ["2025-03-10 13:00", "2025-03-11 13:00"]),
]


@pytest.mark.parametrize(("zone", "expression", "start", "expected"), DST_TABLE)
def test_cron_crosses_dst_at_the_right_instants(
    zone: str, expression: str, start: str, expected: list[str]
) -> None:
    ticks = Cron(expression, timezone=zone).upcoming(utc(start), len(expected))
    assert ticks == [utc(t) for t in expected]
    assert all(t.tzinfo is UTC for t in ticks)


def test_ticks_do_not_depend_on_where_a_scheduler_starts_counting() -> None:
    """Schedulers started at different instants must agree on every tick."""
    cron = Cron("30 2 * * *", timezone="Europe/Paris")
    start = utc("2025-10-25 20:00")
    reference = cron.ticks(start, start + timedelta(days=3))
    moment = start
    while moment < reference[-1]:
        assert cron.next_after(moment) == min(t for t in reference if t > moment)
        moment += timedelta(minutes=7, seconds=13)


def _croniter_next(expression: str, zone: str, start: datetime, n: int) -> list[datetime]:
    croniter = pytest.importorskip("croniter").croniter
    it = croniter(expression, start.astimezone(ZoneInfo(zone)))
    return [it.get_next(datetime).astimezone(UTC) for _ in range(n)]


def test_why_cronsim_not_croniter() -> None:
    """croniter runs the repeated 02:30 of fall-back twice (cronsim, through Cron, once: the
    table above); both agree on spring-forward. Revisit the choice if this stops failing."""
    failing = [
        (zone, expression, start)
        for zone, expression, start, expected in DST_TABLE
        if _croniter_next(expression, zone, utc(start), len(expected)) != [utc(t) for t in expected]
    ]
    assert ("Europe/Paris", "30 2 * * *", "2025-10-25 00:00") in failing
    assert ("America/New_York", "30 1 * * *", "2025-11-01 12:00") in failing
    assert not [row for row in failing if row[2][5:7] == "03"], "croniter now fails spring too"


def test_intervals_count_from_the_epoch() -> None:
    every = Every(30)
    assert every.next_after(utc("2025-01-01 00:00:10")) == utc("2025-01-01 00:00:30")
    assert every.next_after(utc("2025-01-01 00:00:30")) == utc("2025-01-01 00:01:00")
    assert Every(1).ticks(utc("2025-01-01 00:00:00.5"), utc("2025-01-01 00:00:03")) == [
        utc("2025-01-01 00:00:01"), utc("2025-01-01 00:00:02"), utc("2025-01-01 00:00:03")]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"cron": "61 * * * *"}, "Bad minute"),
    ({"cron": "* * * *"}, "expected 5 fields"),
    ({"cron": "0 0 0 * * *"}, "expected 5 fields"),
    ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ({"cron": "0 0 15W * *"}, "Bad day-of-month"),  # W (nearest weekday): not supported
    ({"cron": "@daily"}, "expected 5 fields"),
    ({"interval": 0}, "at least 1"),
    ({"interval": 1.5}, "whole number"),
    ({"interval": timedelta(milliseconds=1500)}, "whole seconds"),
    ({}, "exactly one"),
    ({"cron": "* * * * *", "interval": 5}, "exactly one"),
    ({"interval": 5, "timezone": "UTC"}, "applies to a cron"),
])
def test_bad_timing_is_refused_with_the_reason(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        timing(**kwargs)


# What the README says of the cron dialect (cronsim's, Debian's): (cron, zone, start, next runs
# in local time).
DIALECT = [
    # day of month AND day of week both restricted: either matches (the 13th, or a Friday)
    ("0 0 13 * 5", "UTC", "2025-07-05", ["07-11 00:00", "07-13 00:00", "07-18 00:00"]),
    # ...unless one of them starts with *: then both must (odd days that are Fridays)
    ("0 0 */2 * 5", "UTC", "2025-06-01", ["06-13 00:00", "06-27 00:00", "07-11 00:00"]),
    ("0 0 L * *", "UTC", "2025-01-15", ["01-31 00:00", "02-28 00:00", "03-31 00:00"]),  # last day
    ("0 0 * * 5L", "UTC", "2025-06-01", ["06-27 00:00", "07-25 00:00", "08-29 00:00"]),  # last Fri
    ("0 0 * * 5#2", "UTC", "2025-06-01", ["06-13 00:00", "07-11 00:00", "08-08 00:00"]),  # 2nd Fri
    # Lord Howe Island shifts by 30 minutes. A fixed time follows the DST rules (02:15, skipped
    # on October 5, runs at 02:30, the first valid instant; 01:45, repeated on April 6, once)...
    ("15 2 * * *", "Australia/Lord_Howe", "2025-10-04 12:00", ["10-05 02:30", "10-06 02:15"]),
    ("45 1 * * *", "Australia/Lord_Howe", "2025-04-05 12:00", ["04-06 01:45", "04-07 01:45"]),
    # ...an entry with * in its minute field follows the clock: a repeated 01:40 runs twice, a
    # skipped 02:00 and 02:20 not at all.
    ("*/20 1 * * *", "Australia/Lord_Howe", "2025-04-05 13:50",
     ["04-06 01:00", "04-06 01:20", "04-06 01:40", "04-06 01:40", "04-07 01:00"]),
    ("*/20 2 * * *", "Australia/Lord_Howe", "2025-10-04 13:50", ["10-05 02:40", "10-06 02:00"]),
]


@pytest.mark.parametrize(("cron", "tz", "start", "expected"), DIALECT)
def test_the_cron_dialect(cron: str, tz: str, start: str, expected: list[str]) -> None:
    local = ZoneInfo(tz)
    first = datetime.fromisoformat(start).replace(tzinfo=local if tz != "UTC" else UTC)
    ticks = Cron(cron, timezone=tz).upcoming(first, len(expected))
    assert [t.astimezone(local).strftime("%m-%d %H:%M") for t in ticks] == expected


def test_declarations() -> None:
    assert from_declaration("*/5 * * * *") == Cron("*/5 * * * *")
    assert from_declaration(timedelta(minutes=1)) == Every(60)
    with pytest.raises(ConfigurationError, match="expected a cron string"):
        from_declaration(30)


# -- catch-up after downtime ----------------------------------------------------------------------
HOURLY = Cron("0 * * * *", timezone="UTC")
DOWN_FROM = utc("2025-06-01 09:50")  # the last tick sent was 09:00


@pytest.mark.parametrize(("policy", "max_delay", "expected"), [
    ("latest", None, ["12:00"]),
    ("skip", None, []),
    ("all", None, ["10:00", "11:00", "12:00"]),
    ("all", 3600, ["12:00"]),
    ("latest", 600, []),  # the last missed tick is 20 minutes late: too late
])
def test_catch_up_policies(policy: str, max_delay: int | None, expected: list[str]) -> None:
    now = utc("2025-06-01 12:20")
    ticks = due_ticks(HOURLY, utc("2025-06-01 09:00"), now, policy, max_delay)
    assert [t.strftime("%H:%M") for t in ticks] == expected


@pytest.mark.parametrize("policy", ["latest", "skip", "all"])
def test_ticks_on_time_are_all_sent_whatever_the_policy(policy: str) -> None:
    """A scheduler that looks in a little late sees two ticks due: neither was missed."""
    ticks = due_ticks(Every(1), utc("2025-06-01 12:00:00"), utc("2025-06-01 12:00:02.5"), policy)
    assert ticks == [utc("2025-06-01 12:00:01"), utc("2025-06-01 12:00:02")]


@pytest.mark.parametrize("policy", ["latest", "skip", "all"])
def test_max_delay_holds_for_ticks_on_time_too(policy: str) -> None:
    """max_delay=2: of the ticks 1 to 5 s late (all "on time"), those over 2 s late are not sent."""
    ticks = due_ticks(Every(1), utc("2025-06-01 12:00:00"), utc("2025-06-01 12:00:05"), policy, 2)
    assert ticks == [utc("2025-06-01 12:00:03"), utc("2025-06-01 12:00:04"),
                     utc("2025-06-01 12:00:05")]


def test_skip_sends_the_ticks_still_on_time_after_downtime() -> None:
    now = utc("2025-06-01 12:00:00.5")
    ticks = due_ticks(Every(1), utc("2025-06-01 11:00:00"), now, "skip")
    assert ticks[0] > now - ON_TIME and ticks[-1] == utc("2025-06-01 12:00:00")


def test_all_is_capped_and_latest_is_cheap_after_a_long_downtime() -> None:
    after, now = utc("2024-06-01 00:00"), utc("2025-06-01 00:00:30")
    every_minute = Cron("* * * * *", timezone="UTC")
    ticks = due_ticks(every_minute, after, now, "all")
    assert len(ticks) == CATCH_UP_LIMIT and ticks[-1] == utc("2025-06-01 00:00")
    assert due_ticks(every_minute, after, now, "latest") == [utc("2025-06-01 00:00")]


def test_nothing_due() -> None:
    assert due_ticks(HOURLY, utc("2025-06-01 09:00"), utc("2025-06-01 09:59:59")) == []


# -- properties of due_ticks over any sequence of looks -------------------------------------------
TIMINGS = [Every(1), Every(7), Cron("*/2 * * * *", timezone="UTC"),
           Cron("30 2 * * *", timezone="Europe/Paris"), Cron("0 * * * *", timezone="Europe/Paris")]
START = utc("2025-10-25 23:00")


@settings(max_examples=150, deadline=None)
@given(
    timing=st.sampled_from(TIMINGS),
    policy=st.sampled_from(["latest", "skip", "all"]),
    gaps=st.lists(st.floats(min_value=0.05, max_value=9.5), min_size=1, max_size=60),
    downtime=st.integers(min_value=0, max_value=3 * 3600),
)
def test_due_ticks_send_each_tick_at_most_once_in_order(timing, policy, gaps, downtime):
    """A scheduler looking at any instants sends ticks in order, each once, none from the future,
    and, while it looks at least every ON_TIME, every tick."""
    after = now = START
    sent: list[datetime] = []
    for i, gap in enumerate(gaps):
        now += timedelta(seconds=gap + (downtime if i == len(gaps) // 2 else 0))
        ticks = due_ticks(timing, after, now, policy)
        assert ticks == sorted(ticks) and all(after < t <= now for t in ticks)
        if ticks:
            sent += ticks
            after = ticks[-1]
    assert len(sent) == len(set(sent))
    if downtime == 0:  # looked at least every ON_TIME: nothing was missed
        assert sent == timing.ticks(START, now)
