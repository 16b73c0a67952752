"""The scheduler: turns the ticks of enabled schedules into jobs, once each, however many run.

Every worker supervisor runs one (``jobworker --no-scheduler`` opts out). About once a second it
reads the enabled schedules (one query; nothing more when nothing is due) and, for each due tick,
sends its job in one database transaction that also

- moves the schedule's ``last_tick`` forward, only if it is still before this tick (a
  compare-and-set: a scheduler that lost the race changes nothing, and a tick older than one
  already sent is never sent after it), and
- writes the (schedule, tick) row, unique, as Procrastinate's periodic deferrer and Solid Queue's
  recurring executions do.

The job goes through the broker's public ``enqueue`` inside that transaction: the database
broker writes the Job row in it; the Redis broker writes the job to its outbox in it and delivers
it when it commits (never, if it rolls back). A scheduler that loses the race rolls back its job
with its tick row, on either broker.

After downtime a schedule's ``catch_up`` decides (see ``due_ticks``).

Clocks: a pass takes its "now" from the database (the query that reads the schedules), so every
scheduler, on whatever host, agrees on which ticks are due: a host whose clock runs ahead cannot
send a tick the others think is still to come (and with it move ``last_tick`` past ticks they
have yet to send). A job sent late enters its queue at its send time (``run_at``), behind the
jobs already waiting; the tick itself stays in the tick row and in ``scheduled_at``.

Locks: the transaction first takes the schedule's row with ``SKIP LOCKED`` (a schedule another
scheduler is sending is left to it for this pass), and on PostgreSQL its lock waits, statements
and idle time are bounded (``LOCK_TIMEOUT``...): a scheduler stopped mid-transaction (SIGSTOP, a
half-open connection) neither blocks the others nor holds its row for long. A pass stops after
``BUDGET`` seconds and leaves the rest for the next, so the supervisor that runs it gets back to
renewing its children's leases in time.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, OperationalError, connections, router, transaction
from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Now
from django.utils import timezone

from jobqueue.brokers import get_broker
from jobqueue.exceptions import BrokerError, JobQueueError
from jobqueue.schedule_sync import build_message, sync
from jobqueue.schedules import Timing

logger = logging.getLogger(__name__)

POLL = 1.0  # seconds between reads of the schedules
ON_TIME = timedelta(seconds=10)  # a tick sent later than this after its time was "missed"
CATCH_UP_LIMIT = 100  # ticks sent at most for one catch-up with catch_up="all"
PRUNE_EVERY = 3600.0  # seconds between prunings of tick rows whose job was purged
PRUNE_AFTER = timedelta(days=1)  # tick rows younger than this are kept, purged job or not
PRUNE_BATCH = 1000
BUDGET = 0.5  # seconds a pass may take; what is left waits for the next pass
# PostgreSQL bounds of a tick's transaction (SET LOCAL: they end with it).
LOCK_TIMEOUT = "1s"
STATEMENT_TIMEOUT = "2s"
IDLE_IN_TRANSACTION_TIMEOUT = "10s"
TIMEOUT_SQLSTATES = {"55P03", "57014"}  # lock_not_available, query_canceled


def due_ticks(
    timing: Timing,
    after: datetime,
    now: datetime,
    catch_up: str = "latest",
    max_delay: int | None = None,
) -> list[datetime]:
    """The ticks to send now, oldest first, for a schedule whose ticks up to ``after`` are done.

    Ticks at most ``ON_TIME`` late are all sent, whatever the policy. Once one is later than that
    (the schedulers were down), ``catch_up`` decides: ``latest`` sends the last due tick once,
    ``skip`` only the ticks still on time, ``all`` each due tick (the last ``CATCH_UP_LIMIT``).
    A tick more than ``max_delay`` seconds late is never sent, on time or not (so a
    ``max_delay`` shorter than a scheduler's poll, about a second, may drop ticks).

    E.g. ``"0 * * * *"`` (hourly), schedulers down from 09:50 to 12:20: ``latest`` sends the
    12:00 tick at 12:20, ``skip`` sends nothing until 13:00, ``all`` sends 10:00, 11:00 and
    12:00; with ``max_delay=3600`` ``all`` sends only 12:00 (10:00 and 11:00 are too late).
    """
    first = timing.next_after(after)
    if first > now:
        return []
    if now - first <= ON_TIME:
        found = timing.ticks(after, now)
    elif catch_up == "skip":
        found = timing.ticks(max(after, now - ON_TIME), now)
    elif catch_up == "all":
        found = timing.latest_ticks(after, now, CATCH_UP_LIMIT)
    else:
        found = timing.latest_ticks(after, now, 1)
    if max_delay is not None:
        oldest = now - timedelta(seconds=max_delay)
        found = [tick for tick in found if tick >= oldest]
    return found


def owed_after(schedule: Any) -> datetime:
    """Ticks up to this instant are done (sent, or not owed: before the schedule began)."""
    last = schedule.last_tick
    return max(last, schedule.since) if last is not None else schedule.since


def bound(alias: str) -> None:
    """Bound the current transaction's lock waits, statements and idle time (PostgreSQL)."""
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return  # SQLite: its busy timeout bounds the wait for the write lock
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('lock_timeout', %s, true), "
            "set_config('statement_timeout', %s, true), "
            "set_config('idle_in_transaction_session_timeout', %s, true)",
            [LOCK_TIMEOUT, STATEMENT_TIMEOUT, IDLE_IN_TRANSACTION_TIMEOUT],
        )


def _timed_out(exc: OperationalError) -> bool:
    cause = exc.__cause__
    return getattr(cause, "sqlstate", None) in TIMEOUT_SQLSTATES or (
        getattr(cause, "pgcode", None) in TIMEOUT_SQLSTATES
    )


def send(
    schedule: Any, tick: datetime, *, manual: bool = False, now: datetime | None = None
) -> str | None:
    """Send the job of ``schedule``'s ``tick``; return its id, or None when another scheduler
    sent it (or a later tick) first, or is sending it now. ``manual``: a "run now", not a tick
    of the clock. ``now``: the time of sending (the pass's database clock; default this host's).

    The job's ``enqueued_at`` is ``now`` and its ``run_at`` is ``max(tick, now)``: a tick sent
    late enters its queue behind the jobs already waiting (the brokers order by ``run_at``)."""
    from jobqueue.models import Job, Schedule, ScheduleTick

    message = build_message(
        schedule.task,
        schedule.args,
        schedule.kwargs,
        queue=schedule.queue,
        priority=schedule.priority,
        tick=tick,
    )
    now = now or timezone.now()
    message.enqueued_at = now
    message.run_at = max(tick, now)
    # The transaction is on the Job table's database: the broker writes the job (or its outbox
    # entry) there, so the schedule's rows must be written there too.
    alias = router.db_for_write(Job)
    rows = Schedule.objects.using(alias).filter(pk=schedule.pk)
    changes: dict[str, Any] = {"last_job_id": message.id, "last_run_at": now}
    if not manual:
        rows = rows.filter(Q(last_tick__isnull=True) | Q(last_tick__lt=tick), enabled=True)
        changes["last_tick"] = tick
    try:
        with transaction.atomic(using=alias):
            bound(alias)
            # The row first, without waiting: a scheduler holding it is sending this schedule.
            if not list(rows.select_for_update(skip_locked=True).values_list("pk", flat=True)):
                return None
            rows.update(**changes)
            ScheduleTick.objects.using(alias).create(
                schedule_id=schedule.pk, tick=tick, job_id=message.id, manual=manual, created_at=now
            )
            get_broker().enqueue([message])
    except IntegrityError:
        return None
    except OperationalError as exc:
        if not _timed_out(exc):
            raise
        logger.warning("schedule=%s tick=%s state=skipped error=%s", schedule.name, tick, exc)
        return None
    logger.info(
        "schedule=%s job=%s task=%s tick=%s state=sent%s",
        schedule.name,
        message.id,
        schedule.task,
        tick.isoformat(),
        " manual=true" if manual else "",
    )
    return message.id


def run_now(schedule: Any) -> str:
    """Send one job of ``schedule`` now, outside its timing (the admin's "run now")."""
    job_id = send(schedule, timezone.now(), manual=True)
    if job_id is None:
        raise JobQueueError(
            f"schedule {schedule.name!r} no longer exists, or a scheduler is sending it: try again"
        )
    return job_id


def prune(now: datetime | None = None) -> int:
    """Delete tick rows whose job is gone (purged) and that are older than ``PRUNE_AFTER``: the
    table does not grow for ever, and a tick that old is never sent again anyway (``last_tick``
    is past it). Returns how many, at most ``PRUNE_BATCH`` a call."""
    from jobqueue.models import Job, ScheduleTick

    cutoff = (now or timezone.now()) - PRUNE_AFTER
    orphans = (
        ScheduleTick.objects.filter(created_at__lt=cutoff)
        .filter(~Exists(Job.objects.filter(pk=OuterRef("job_id"))))
        .values_list("pk", flat=True)[:PRUNE_BATCH]
    )
    deleted, _ = ScheduleTick.objects.filter(pk__in=list(orphans)).delete()
    return deleted


class Scheduler:
    """The scheduler of one worker supervisor: ``step()`` at every turn of its loop."""

    def __init__(self) -> None:
        self.next_poll = 0.0
        self.synced = False
        self.reported: dict[int, Any] = {}  # schedules whose jobs cannot be built, as reported
        self.next_prune = time.monotonic() + PRUNE_EVERY

    def step(self) -> int:
        """Send what is due, at most once per ``POLL`` seconds; return how many jobs."""
        if time.monotonic() < self.next_poll:
            return 0
        self.next_poll = time.monotonic() + POLL
        if not self.synced:
            if not self.installed():
                return 0
            counts = sync()
            self.synced = True
            logger.info(
                "state=schedules-synced %s", " ".join(f"{k}={v}" for k, v in counts.items())
            )
        sent = self.run_once()
        if time.monotonic() >= self.next_prune:
            self.next_prune = time.monotonic() + PRUNE_EVERY
            prune()
        return sent

    def installed(self) -> bool:
        """Whether the schedule tables exist; if not (jobqueue upgraded, not yet migrated), the
        scheduler says so once and stays off, instead of failing every second."""
        from jobqueue.models import Job, Schedule

        connection = connections[router.db_for_write(Job)]
        if Schedule._meta.db_table in connection.introspection.table_names():
            return True
        logger.error(
            "state=scheduler-off error=the table %s is missing: run manage.py migrate",
            Schedule._meta.db_table,
        )
        self.next_poll = float("inf")
        return False

    def run_once(self, now: datetime | None = None) -> int:
        """One pass at the instant ``now``: the database's clock, read with the schedules (tests
        give their own). Stops after ``BUDGET`` seconds; the rest waits for the next pass."""
        from jobqueue.models import Job, Schedule

        started = time.monotonic()
        alias = router.db_for_write(Job)
        schedules = list(
            Schedule.objects.using(alias).filter(enabled=True).annotate(database_now=Now())
        )
        if not schedules:
            return 0
        if now is None:
            now = schedules[0].database_now
        random.shuffle(schedules)  # a pass cut short by its budget favours none of them
        sent, tried = 0, False
        for schedule in schedules:
            if tried and time.monotonic() - started > BUDGET:
                logger.info("state=scheduler-pass-cut budget=%ss sent=%s", BUDGET, sent)
                break
            try:
                ticks = due_ticks(
                    schedule.timing(),
                    owed_after(schedule),
                    now,
                    schedule.catch_up,
                    schedule.max_delay,
                )
                for tick in ticks:
                    clock = now + timedelta(seconds=time.monotonic() - started)
                    tried = True
                    if send(schedule, tick, now=clock):
                        sent += 1
                    if time.monotonic() - started > BUDGET:
                        break
            except BrokerError:
                raise  # the supervisor's guard handles an unreachable broker
            except (JobQueueError, TypeError, ValueError) as exc:
                # A schedule this worker cannot send (a task it does not know, arguments that no
                # longer fit): said once per version of the schedule, the others go on.
                if self.reported.get(schedule.pk) != schedule.updated_at:
                    self.reported[schedule.pk] = schedule.updated_at
                    logger.error("schedule=%s state=invalid error=%s", schedule.name, exc)
        return sent
