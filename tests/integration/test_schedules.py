"""The scheduler on both brokers, driven with given instants: one job per tick, linked to its
schedule; catch-up after downtime; the sync of schedules declared in code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest
from django.conf import settings
from django.db import IntegrityError, transaction
from django.test import override_settings

from jobqueue.execution import decode_arguments
from jobqueue.models import Job, Outbox, Schedule, ScheduleTick
from jobqueue.schedule_sync import sync
from jobqueue.scheduler import Scheduler, send
from tests.integration import schedule_tasks  # registers the tasks

TASKS = "tests.integration.schedule_tasks"
pytestmark = pytest.mark.jobqueue(TASK_MODULES=[TASKS])

T0 = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)


def at(**delta: float) -> datetime:
    return T0 + timedelta(**delta)


def make(name: str = "greet", **fields: Any) -> Schedule:
    values: dict[str, Any] = {
        "task": f"{TASKS}.greet", "cron": "0 * * * *", "kwargs": {"name": "ada"}, "since": T0,
    }
    values.update(fields)
    return Schedule.objects.create(name=name, **values)


def jobs_of(broker: Any, schedule: Schedule) -> list[Job]:
    broker.sync()  # Redis: the Job table is written from its event stream
    jobs = Job.objects.filter(schedule_tick__schedule=schedule)
    return list(jobs.order_by("schedule_tick__tick"))


def test_a_tick_becomes_one_job_linked_to_its_schedule(broker):
    schedule = make(queue="low", priority=7)
    scheduler = Scheduler()
    assert scheduler.run_once(at(minutes=59)) == 0
    assert scheduler.run_once(at(hours=1, seconds=2)) == 1
    assert scheduler.run_once(at(hours=1, seconds=3)) == 0  # sent already
    assert Scheduler().run_once(at(hours=1, seconds=4)) == 0  # by another scheduler too
    [job] = jobs_of(broker, schedule)
    assert job.schedule_tick.tick == at(hours=1)
    # Sent at 10:00:02 (the pass's clock): it queues from then, behind what already waits.
    assert at(hours=1, seconds=2) <= job.enqueued_at == job.run_at < at(hours=1, seconds=3)
    assert (job.task, job.queue, job.priority) == (f"{TASKS}.greet", "low", 7)
    assert job.schedule_tick.schedule == schedule and not job.schedule_tick.manual
    assert decode_arguments(job.arguments) == (["ada"], {})
    schedule.refresh_from_db()
    assert (schedule.last_tick, str(schedule.last_job_id)) == (at(hours=1), str(job.id))


def test_the_task_gets_its_tick_when_it_asks(broker, tmp_path):
    schedule = make("tick", task=f"{TASKS}.tick", cron="", interval=30,
                    kwargs={"path": str(tmp_path / "ticks")})
    assert Scheduler().run_once(at(seconds=31)) == 1
    [job] = jobs_of(broker, schedule)
    assert decode_arguments(job.arguments)[0] == [str(tmp_path / "ticks"), at(seconds=30)]
    assert job.schedule_tick.tick == at(seconds=30)


def test_a_losing_scheduler_rolls_its_job_back(broker):
    """Another scheduler's tick row is there first: this one's job is rolled back with its
    own; nothing reaches the broker."""
    schedule = make()
    ScheduleTick.objects.create(schedule=schedule, tick=at(hours=1),
                                job_id="00000000-0000-7000-8000-000000000001")
    assert send(schedule, at(hours=1)) is None
    assert jobs_of(broker, schedule) == []
    assert not Outbox.objects.exists()
    assert broker.counts() == {}
    schedule.refresh_from_db()
    assert schedule.last_tick is None  # rolled back too
    with pytest.raises(IntegrityError), transaction.atomic():
        ScheduleTick.objects.create(schedule=schedule, tick=at(hours=1), job_id=
                                    "00000000-0000-7000-8000-000000000002")


def test_an_older_tick_is_never_sent_after_a_newer_one(broker):
    schedule = make()
    stale = Schedule.objects.get(pk=schedule.pk)  # as a slower scheduler read it
    assert send(schedule, at(hours=2))
    assert send(stale, at(hours=1)) is None
    assert [j.schedule_tick.tick for j in jobs_of(broker, schedule)] == [at(hours=2)]


def test_a_paused_schedule_sends_nothing(broker):
    schedule = make(enabled=False)
    assert Scheduler().run_once(at(hours=3)) == 0
    stale = Schedule.objects.get(pk=schedule.pk)
    stale.enabled = True  # read before the pause
    assert send(stale, at(hours=1)) is None
    assert jobs_of(broker, schedule) == []


@pytest.mark.parametrize(("policy", "max_delay", "expected"), [
    ("latest", None, [12]),
    ("skip", None, []),
    ("all", None, [10, 11, 12]),
    ("all", 3600, [12]),
])
def test_catch_up_after_downtime(broker, policy, max_delay, expected):
    """Hourly; the 09:00 tick was sent, then every scheduler was down until 12:20."""
    schedule = make(catch_up=policy, max_delay=max_delay)
    scheduler = Scheduler()
    assert scheduler.run_once(at(seconds=1)) == 0  # 09:00 is not after `since`
    schedule.last_tick = T0
    schedule.save()
    assert scheduler.run_once(at(hours=3, minutes=20)) == len(expected)
    assert scheduler.run_once(at(hours=3, minutes=21)) == 0
    assert [j.schedule_tick.tick.hour for j in jobs_of(broker, schedule)] == expected
    assert scheduler.run_once(at(hours=4, seconds=1)) == 1  # and on time again after
    assert jobs_of(broker, schedule)[-1].schedule_tick.tick == at(hours=4)


def test_a_schedule_the_worker_cannot_send_is_logged_and_the_others_go_on(broker, caplog):
    make("broken", task="nowhere.task")
    good = make("good")
    scheduler = Scheduler()
    assert scheduler.run_once(at(hours=1, seconds=1)) == 1
    assert scheduler.run_once(at(hours=2, seconds=1)) == 1
    assert len(jobs_of(broker, good)) == 2
    errors = [r.getMessage() for r in caplog.records if "state=invalid" in r.getMessage()]
    assert len(errors) == 1 and "no task named 'nowhere.task'" in errors[0]  # said once


# -- sync from code -------------------------------------------------------------------------------
def declared(**schedules: dict) -> Any:
    return override_settings(JOBQUEUE={**settings.JOBQUEUE, "TASK_MODULES": [TASKS],
                                       "SCHEDULES": schedules})


@pytest.mark.django_db
def test_sync_creates_updates_and_disables_but_never_deletes():
    greet = {"task": f"{TASKS}.greet", "cron": "0 6 * * 1", "kwargs": {"name": "fr"},
             "timezone": "Europe/Paris", "queue": "low"}
    with declared(fr=greet, ping={"task": f"{TASKS}.greet", "every": 60, "args": ["x"]}):
        assert sync(T0) == {"created": 2, "updated": 0, "disabled": 0}
        assert sync(T0) == {"created": 0, "updated": 0, "disabled": 0}
    fr = Schedule.objects.get(name="fr")
    assert (fr.cron, fr.timezone, fr.kwargs, fr.queue, fr.origin) == (
        "0 6 * * 1", "Europe/Paris", {"name": "fr"}, "low", "code")
    assert Schedule.objects.get(name="ping").interval == 60

    # An edit in the admin stands while the code does not change...
    Schedule.objects.filter(name="fr").update(queue="high", enabled=False)
    with declared(fr=greet, ping={"task": f"{TASKS}.greet", "every": 60, "args": ["x"]}):
        assert sync(at(hours=1)) == {"created": 0, "updated": 0, "disabled": 0}
    assert Schedule.objects.filter(name="fr", queue="high", enabled=False).exists()

    # ...the code's change wins; a schedule no longer declared is disabled, not deleted.
    with declared(fr={**greet, "cron": "0 7 * * 1"}):
        assert sync(at(hours=2)) == {"created": 0, "updated": 1, "disabled": 1}
    fr.refresh_from_db()
    assert (fr.cron, fr.queue, fr.enabled, fr.since) == ("0 7 * * 1", "low", True, at(hours=2))
    ping = Schedule.objects.get(name="ping")
    assert not ping.enabled and ping.declared is None


@pytest.mark.django_db
def test_sync_leaves_admin_schedules_alone():
    make("mine")
    with declared():
        assert sync(T0) == {"created": 0, "updated": 0, "disabled": 0}
    assert Schedule.objects.get(name="mine").enabled


def test_ticks_of_purged_jobs_are_pruned(broker):
    from jobqueue.scheduler import prune

    schedule = make()
    Scheduler().run_once(at(hours=1, seconds=1))
    Scheduler().run_once(at(hours=2, seconds=1))
    [old, new] = ScheduleTick.objects.order_by("tick")
    ScheduleTick.objects.update(created_at=T0)
    broker.sync()
    Job.objects.filter(id=old.job_id).delete()  # purged
    assert prune(at(days=1, seconds=-1)) == 0  # too young
    assert prune(at(days=2)) == 1
    assert list(ScheduleTick.objects.all()) == [new]
    assert len(jobs_of(broker, schedule)) == 1


@pytest.mark.django_db
def test_a_task_declared_with_a_schedule_is_synced_under_its_name():
    from jobqueue import Cron, registry, task

    @task(name=f"{TASKS}.declared", schedule=Cron("0 3 * * *", timezone="Europe/Paris"))
    def declared_task(scheduled_at=None):
        pass

    try:
        with override_settings(JOBQUEUE={**settings.JOBQUEUE, "TASK_MODULES": [__name__]}):
            assert sync(T0)["created"] == 1
        row = Schedule.objects.get(name=f"{TASKS}.declared")
        assert (row.task, row.cron, row.timezone, row.origin) == (
            f"{TASKS}.declared", "0 3 * * *", "Europe/Paris", "code")
    finally:
        registry._tasks.pop(f"{TASKS}.declared")


@pytest.mark.django_db
def test_the_scheduler_stays_off_without_its_tables(caplog, monkeypatch):
    from django.db import connection

    monkeypatch.setattr(type(connection.introspection), "table_names", lambda self: [])
    scheduler = Scheduler()
    assert scheduler.step() == 0
    assert scheduler.step() == 0
    errors = [r.getMessage() for r in caplog.records if "scheduler-off" in r.getMessage()]
    assert len(errors) == 1 and "run manage.py migrate" in errors[0]


@pytest.mark.parametrize(("night", "expected"), [
    # spring-forward: 02:30 does not exist; its run comes at 03:00 CEST, once
    ("2025-03-29 20:00", ["2025-03-30 01:00"]),
    # fall-back: 02:30 comes twice; one run, at the first
    ("2025-10-25 20:00", ["2025-10-26 00:30"]),
])
def test_the_scheduler_runs_a_dst_night_once(broker, night, expected):
    """A scheduler looking every 7 minutes through the night sends one job, at the right instant."""
    start = datetime.fromisoformat(night).replace(tzinfo=UTC)
    schedule = make(cron="30 2 * * *", timezone="Europe/Paris", since=start)
    scheduler = Scheduler()
    moment = start
    while moment < start + timedelta(hours=10):
        scheduler.run_once(moment)
        moment += timedelta(minutes=7)
    expected_ticks = [datetime.fromisoformat(t).replace(tzinfo=UTC) for t in expected]
    assert [j.schedule_tick.tick for j in jobs_of(broker, schedule)] == expected_ticks


def test_schedulers_racing_for_the_same_ticks_send_each_once(broker):
    """Eight threads, each a scheduler with its own connection, released together at every
    tick: one job per tick."""
    import threading

    from django.db import connections

    schedule = make(cron="", interval=1)
    ticks = [at(seconds=s) for s in range(1, 6)]
    barrier = threading.Barrier(8)
    won: list[str] = []
    errors: list[BaseException] = []

    def scheduler() -> None:
        try:
            for tick in ticks:
                mine = Schedule.objects.get(pk=schedule.pk)
                barrier.wait(timeout=30)
                job_id = send(mine, tick)
                if job_id:
                    won.append(job_id)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=scheduler) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(won) == len(ticks)
    assert [j.schedule_tick.tick for j in jobs_of(broker, schedule)] == ticks
    assert ScheduleTick.objects.filter(schedule=schedule).count() == len(ticks)


# -- clocks, locks and the queue ------------------------------------------------------------------
def sent_ticks(broker: Any, schedule: Schedule) -> list[datetime]:
    return [j.schedule_tick.tick for j in jobs_of(broker, schedule)]


def test_a_scheduler_whose_clock_runs_ahead_sends_nothing_before_its_time(broker, monkeypatch):
    """Host B's clock is 20 s ahead of the database's (and host A's): B's pass sends no tick the
    database's clock has not reached, so it cannot move last_tick past the ticks A is to send."""
    from django.utils import timezone

    real_now = timezone.now
    schedule = make(cron="", interval=1, since=real_now() - timedelta(seconds=3))
    a, b = Scheduler(), Scheduler()
    a.step()
    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(seconds=20))
    b.step()
    monkeypatch.undo()
    ticks = sent_ticks(broker, schedule)
    assert ticks and ticks[-1] <= real_now()
    a.next_poll = 0.0
    a.step()
    ticks = sent_ticks(broker, schedule)
    assert all((y - x).total_seconds() == 1 for x, y in pairwise(ticks)), ticks


def test_a_late_tick_queues_behind_the_jobs_already_waiting(broker):
    """The hourly tick sent after downtime enters the queue at its send time, not at its tick."""
    from django.utils import timezone

    waiting = schedule_tasks.greet.delay("waiting")
    schedule = make(since=timezone.now() - timedelta(hours=3))
    assert Scheduler().run_once() == 1
    [late] = jobs_of(broker, schedule)
    assert late.schedule_tick.tick < waiting_enqueued(broker, waiting.id)
    assert [m.id for m in broker.claim(["default"], "w", 2)] == [waiting.id, str(late.id)]


def waiting_enqueued(broker: Any, job_id: str) -> datetime:
    broker.sync()
    return Job.objects.get(pk=job_id).enqueued_at


def test_a_pass_stops_at_its_time_budget_and_the_next_goes_on(broker, monkeypatch):
    """The supervisor that runs the scheduler renews its children's leases between passes: a
    pass with much to send stops at its budget (here: after one job) and leaves the rest."""
    from jobqueue import scheduler as module

    monkeypatch.setattr(module, "BUDGET", 0.0)
    first, second = make("first"), make("second")
    scheduler = Scheduler()
    assert scheduler.run_once(at(hours=1, seconds=1)) == 1
    assert scheduler.run_once(at(hours=1, seconds=2)) == 1
    assert scheduler.run_once(at(hours=1, seconds=3)) == 0
    assert [len(jobs_of(broker, s)) for s in (first, second)] == [1, 1]


postgresql_only = pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
    reason="row locks and session timeouts of PostgreSQL",
)


@postgresql_only
def test_a_scheduler_stopped_holding_a_schedule_blocks_no_other(broker):
    """Another scheduler holds the schedule's row (stopped mid-transaction: SIGSTOP, a half-open
    connection): this one skips the schedule at once, and sends its tick once the row is free."""
    import threading

    import psycopg
    from django.db import connection, connections

    schedule = make(cron="", interval=1)
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    held = psycopg.connect(**params)
    held.execute("SELECT id FROM jobqueue_schedule WHERE id = %s FOR UPDATE", [schedule.pk])
    result: list[int] = []

    def other() -> None:
        try:
            result.append(Scheduler().run_once(at(seconds=2.5)))
        finally:
            connections.close_all()

    thread = threading.Thread(target=other, daemon=True)
    thread.start()
    thread.join(5)
    stuck = thread.is_alive()
    held.rollback()
    held.close()
    thread.join(10)
    assert not stuck, "a scheduler waited on another's row lock"
    assert result == [0]
    assert Scheduler().run_once(at(seconds=2.6)) == 2  # ticks 1 and 2, now the row is free


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_ticks_transaction_is_bounded_on_postgresql():
    """A scheduler stopped inside its transaction loses its session (and its locks) after
    IDLE_IN_TRANSACTION_TIMEOUT; its own waits end after LOCK_TIMEOUT and STATEMENT_TIMEOUT."""
    from django.db import connection

    from jobqueue.scheduler import bound

    with transaction.atomic(), connection.cursor() as cursor:
        bound("default")
        found = []
        for name in ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout"):
            cursor.execute(f"SHOW {name}")
            found.append(cursor.fetchone()[0])
    assert found == ["1s", "2s", "10s"]
    with connection.cursor() as cursor:
        cursor.execute("SHOW lock_timeout")
        assert cursor.fetchone()[0] == "0"  # SET LOCAL: the bounds end with the transaction


def test_a_tick_whose_delivery_fails_after_commit_is_relayed_once(broker, request):
    """Redis down when the tick's transaction commits: the job waits in the outbox, no scheduler
    sends the tick again, and the relay delivers it once Redis is back."""
    if not hasattr(broker, "client"):
        pytest.skip("the outbox is the Redis broker's")
    from jobqueue.brokers.redis import outbox

    server = request.getfixturevalue("redis_server")
    schedule = make(cron="", interval=60)
    server.stop()
    try:
        job_id = send(schedule, at(seconds=60), now=at(seconds=60.5))
    finally:
        server.restart()
    assert job_id and Outbox.objects.count() == 1
    assert Scheduler().run_once(at(seconds=61)) == 0
    assert send(schedule, at(seconds=60)) is None
    Outbox.objects.update(created_at=at(seconds=0))  # older than the relay's grace
    broker.close()
    assert outbox.relay(broker) == 1
    assert sent_ticks(broker, schedule) == [at(seconds=60)]
    assert [m.id for m in broker.claim(["default"], "w", 5)] == [job_id]
