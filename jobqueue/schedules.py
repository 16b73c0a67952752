"""When periodic jobs are due: cron expressions and intervals, as instants.

Cron expressions are read by cronsim. Both cronsim and croniter were held against the two daylight
saving rules jobqueue promises (``tests/unit/test_schedules.py``): a wall-clock time that
spring-forward skips runs once, at the first valid instant after it, and a time that fall-back
repeats runs once. Both get spring-forward right; croniter runs a repeated 02:30 twice, cronsim once
(it follows Debian's cron, whose rule this is). So cronsim it is. As in Debian's cron, the rule is
for fixed-time entries (minute and hour fields without ``*``); entries with ``*`` in the minute or
hour field follow the clock, as they run every hour or more often anyway.

Every instant here is an aware datetime, and the ticks of a schedule are the same for every
process that computes them (intervals count from the Unix epoch), so that any number of
schedulers agree on what one tick is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from django.conf import settings

from jobqueue.exceptions import ConfigurationError

# How far back ``latest_ticks`` looks at a time: a minute's cron over a day is 1440 steps.
_WINDOWS = (timedelta(hours=1), timedelta(days=1), timedelta(days=32), timedelta(days=400))


def zone(name: str | None) -> ZoneInfo:
    """The time zone ``name`` (default ``settings.TIME_ZONE``); ConfigurationError if unknown."""
    name = name or settings.TIME_ZONE or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(f"unknown time zone {name!r}") from exc


class Timing:
    """When a schedule is due: ``next_after`` is the first tick strictly after an instant."""

    def next_after(self, moment: datetime) -> datetime:
        raise NotImplementedError

    def ticks(self, after: datetime, until: datetime, limit: int = 100_000) -> list[datetime]:
        """The ticks in ``(after, until]``, oldest first, at most ``limit``."""
        found: list[datetime] = []
        tick = self.next_after(after)
        while tick <= until and len(found) < limit:
            found.append(tick)
            tick = self.next_after(tick)
        return found

    def upcoming(self, moment: datetime, n: int = 5) -> list[datetime]:
        """The next ``n`` ticks after ``moment`` (the admin's preview)."""
        found: list[datetime] = []
        for _ in range(n):
            moment = self.next_after(moment)
            found.append(moment)
        return found

    def latest_ticks(self, after: datetime, until: datetime, n: int) -> list[datetime]:
        """The last ``n`` ticks in ``(after, until]``, oldest first, without walking every tick
        since ``after`` (which may be a year ago for a minute's cron)."""
        for window in _WINDOWS:
            start = until - window
            if start <= after:
                break
            found = self.ticks(start, until)
            if len(found) >= n:
                return found[-n:]
        return self.ticks(after, until)[-n:]


@dataclass(frozen=True)
class Cron(Timing):
    """A five-field cron expression in wall-clock time of ``timezone`` (default
    ``settings.TIME_ZONE``). Raises ConfigurationError when either is invalid."""

    expression: str
    timezone: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.expression, str) or len(self.expression.split()) != 5:
            raise ConfigurationError(
                f"cron {self.expression!r}: expected 5 fields (minute hour day month weekday), "
                "e.g. '*/5 * * * *'"
            )
        try:
            CronSim(self.expression, datetime(2000, 1, 1, tzinfo=UTC))
        except CronSimError as exc:
            raise ConfigurationError(f"cron {self.expression!r}: {exc}") from None
        if self.timezone is not None:
            zone(self.timezone)

    def next_after(self, moment: datetime) -> datetime:
        tz = zone(self.timezone)
        for tick in self._iterate(moment.astimezone(tz)):
            # cronsim's DST rule may hand back the first pass of a repeated time when asked from
            # within the second: that tick has run already, and is not "after".
            if tick > moment:
                return tick.astimezone(UTC)
        raise ConfigurationError(f"cron {self.expression!r} never matches a date")

    def _iterate(self, start: datetime) -> Iterator[datetime]:
        return iter(CronSim(self.expression, start))

    def __str__(self) -> str:
        return f"cron {self.expression}" + (f" ({self.timezone})" if self.timezone else "")


@dataclass(frozen=True)
class Every(Timing):
    """Every ``seconds`` (a whole number, at least 1), at multiples of it since the Unix epoch,
    so every scheduler sees the same ticks."""

    seconds: int

    def __post_init__(self) -> None:
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, int) or self.seconds < 1:
            raise ConfigurationError(
                f"interval {self.seconds!r}: expected a whole number of seconds, at least 1"
            )

    def next_after(self, moment: datetime) -> datetime:
        epoch_us = (moment - _EPOCH) // timedelta(microseconds=1)
        step = self.seconds * 1_000_000
        return _EPOCH + timedelta(microseconds=(epoch_us // step + 1) * step)

    def __str__(self) -> str:
        return f"every {timedelta(seconds=self.seconds)}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timing(
    *, cron: str = "", interval: int | float | timedelta | None = None, timezone: str = ""
) -> Timing:
    """A Cron or Every from a cron expression or an interval (seconds or timedelta); exactly one
    of them. Raises ConfigurationError with what is wrong."""
    if bool(cron) == (interval is not None):
        raise ConfigurationError("give a cron expression or an interval, exactly one")
    if cron:
        return Cron(cron, timezone or None)
    if timezone:
        raise ConfigurationError("a time zone applies to a cron expression, not to an interval")
    if isinstance(interval, timedelta):
        seconds = interval.total_seconds()
        if seconds != int(seconds):
            raise ConfigurationError(f"interval {interval}: expected whole seconds")
        interval = int(seconds)
    if isinstance(interval, float) and interval.is_integer():
        interval = int(interval)
    return Every(interval)  # type: ignore[arg-type]


def from_declaration(value: object) -> Timing:
    """What ``@task(schedule=...)`` accepts: a cron string, a Cron, or a timedelta."""
    if isinstance(value, Timing):
        return value
    if isinstance(value, str):
        return Cron(value)
    if isinstance(value, timedelta):
        return timing(interval=value)
    raise ConfigurationError(
        f"schedule={value!r}: expected a cron string, Cron('0 3 * * *', timezone=...) or a "
        "timedelta"
    )
