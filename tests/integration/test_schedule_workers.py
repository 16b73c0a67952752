"""Three real ``jobworker`` processes, each with its scheduler, on each broker: every tick of a
one-second schedule becomes exactly one job, none missing, none doubled."""

from __future__ import annotations

import signal
from datetime import datetime, timedelta
from itertools import pairwise

import pytest
from django.conf import settings
from django.utils import timezone

from jobqueue.models import Job, Schedule, ScheduleTick
from tests.conftest import wait_until
from tests.integration import schedule_tasks  # noqa: F401 (registers the tasks)

TASKS = "tests.integration.schedule_tasks"
TICKS = 32
pytestmark = [pytest.mark.jobqueue(TASK_MODULES=[TASKS]), pytest.mark.timeout(150),
              pytest.mark.per_database]


def ran(path) -> list[datetime]:
    """The ticks the runs belonged to, one per run, as the task wrote them."""
    if not path.exists():
        return []
    return [datetime.fromisoformat(line.split()[0]) for line in path.read_text().splitlines()]


def test_three_schedulers_send_each_tick_once(broker, jobworker, worker_env, tmp_path):
    env = {"DJANGO_SETTINGS_MODULE": "tests.integration.schedule_settings"}
    options = settings.JOBQUEUE["BROKER"].get("OPTIONS", {})
    if "url" in options:
        env.update(JOBQUEUE_TEST_REDIS_URL=options["url"],
                   JOBQUEUE_TEST_REDIS_PREFIX=options["prefix"])
    log = tmp_path / "ticks"
    # Every 7th second's job fails: a failing job keeps its schedule. Every missed tick is sent
    # ("all"), so a second in which all three schedulers stalled on a loaded machine is sent late,
    # not skipped: what is asserted is each tick sent once, whatever the timing.
    schedule = Schedule.objects.create(name="every-second", task=f"{TASKS}.tick", interval=1,
                                       kwargs={"path": str(log), "fail_every": 7},
                                       since=timezone.now(), catch_up=Schedule.CatchUp.ALL)
    workers = [jobworker("--name", f"sched{i}", env=env) for i in range(3)]
    bystander = jobworker("--name", "nosched", "--no-scheduler", env=env)
    wait_until(lambda: len(ran(log)) >= TICKS, timeout=90, message=f"{TICKS} ticks run")
    Schedule.objects.filter(pk=schedule.pk).update(enabled=False)
    sent = wait_until(lambda: (n := ScheduleTick.objects.filter(schedule=schedule).count())
                      == len(ran(log)) and n, message="the last jobs sent to run")
    for worker in [*workers, bystander]:
        worker.signal(signal.SIGTERM)
    for worker in workers:
        assert worker.wait() == 0, worker.output
        assert "state=schedules-synced" in worker.output  # its scheduler ran
    assert bystander.wait() == 0, bystander.output
    assert "state=sent" not in bystander.output  # --no-scheduler: it only ran jobs
    assert "schedules-synced" not in bystander.output

    ticks = sorted(ran(log))
    assert len(ticks) == len(set(ticks)) == sent >= TICKS, "a tick ran twice"
    assert all((b - a).total_seconds() == 1 for a, b in pairwise(ticks)), "a tick is missing"
    assert ticks[0] <= schedule.since.replace(microsecond=0) + timedelta(seconds=10)
    broker.sync()
    jobs = Job.objects.filter(schedule_tick__schedule=schedule)
    assert sorted(jobs.values_list("schedule_tick__tick", flat=True)) == ticks  # one Job per tick
    assert all(j.run_at >= j.schedule_tick.tick for j in jobs)  # none queued before its tick
    failed = {j.schedule_tick.tick for j in jobs.filter(status="failed")}
    assert failed == {t for t in ticks if t.second % 7 == 0} and failed
    assert set(jobs.values_list("status", flat=True)) == {"succeeded", "failed"}
