"""The operator commands: jobinfo, jobrequeue and jobpurge, run through ``call_command``."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from jobqueue.management.commands import jobinfo
from jobqueue.management.commands.jobpurge import parse_age
from jobqueue.message import new_job_id
from jobqueue.models import Job, Worker
from jobqueue.states import FINISHED, JobStatus
from tests.testapp.tasks import add

pytestmark = pytest.mark.django_db

ADD = "tests.testapp.tasks.add"


def make_job(status: str = JobStatus.QUEUED, *, queue: str = "default", ended_ago: float = 0,
             **fields: Any) -> Job:
    now = timezone.now()
    values: dict[str, Any] = {
        "id": uuid.UUID(new_job_id()), "task": ADD, "queue": queue, "status": status,
        "arguments": json.dumps({"args": [1, 2], "kwargs": {}}), "enqueued_at": now,
        "run_at": now,
    }
    if status not in (JobStatus.QUEUED, JobStatus.SCHEDULED):
        values.update(attempts=1, worker="host.1/1", started_at=now)
    if status in FINISHED:
        values["ended_at"] = now - timedelta(seconds=ended_ago)
    if status == JobStatus.FAILED:
        values.update(error="ValueError: no", traceback="Traceback ...\nValueError: no\n")
    values.update(fields)
    return Job.objects.create(**values)


def run(*args: str, **options: Any) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO(), no_color=True, **options)
    return out.getvalue()


def statuses() -> dict[uuid.UUID, str]:
    return dict(Job.objects.values_list("id", "status"))


def make_worker(name: str, job: Job | None = None, **fields: Any) -> Worker:
    now = timezone.now()
    values: dict[str, Any] = {
        "name": name, "hostname": "host", "pid": 42, "queues": "high,default,low",
        "started_at": now, "last_seen": now, "jobs_done": 3,
        "current_job": job.id if job else None, "current_task": job.task if job else "",
    }
    values.update(fields)
    return Worker.objects.create(**values)


def line_of(output: str, start: str) -> str:
    [line] = [line for line in output.splitlines() if line.startswith(start)]
    return line


# -- jobinfo -----------------------------------------------------------------------------------
def test_jobinfo_shows_each_queue_in_order_with_counts() -> None:
    make_job()
    make_job()
    make_job(JobStatus.SCHEDULED, queue="high", run_at=timezone.now() + timedelta(hours=1))
    make_job(JobStatus.STARTED, queue="high")
    make_job(JobStatus.FAILED, queue="low")
    make_job(JobStatus.SUCCEEDED, queue="low")  # finished: not counted
    output = run("jobinfo")
    queue_lines = [line.split()[0] for line in output.splitlines()[:3]]
    assert queue_lines == ["high", "default", "low"]
    default = line_of(output, "default")
    assert "\u2588" * jobinfo.BAR_WIDTH in default  # the longest queue has the full bar
    assert "queued 2  scheduled 0  started 0  failed 0" in default
    assert "queued 0  scheduled 1  started 1  failed 0" in line_of(output, "high")
    assert "queued 0  scheduled 0  started 0  failed 1" in line_of(output, "low")
    assert "3 queues, 5 jobs" in output


def test_jobinfo_shows_busy_and_idle_workers() -> None:
    job = make_job(JobStatus.STARTED)
    make_worker("host.42/1", job)
    make_worker("host.42/2")
    make_worker("gone.7/1", last_seen=timezone.now() - timedelta(days=1))
    output = run("jobinfo")
    busy = line_of(output, "host.42/1")
    assert "busy" in busy and str(job.id) in busy and ADD in busy
    assert "idle" in line_of(output, "host.42/2")
    assert "stale" in line_of(output, "gone.7/1")
    assert "3 workers, 1 busy" in output


def test_jobinfo_shows_a_queue_no_longer_in_settings() -> None:
    make_job(queue="retired")
    output = run("jobinfo")
    assert "not in JOBQUEUE['QUEUES']" in line_of(output, "retired")
    assert "0 workers" in output


class TerminalOutput(StringIO):
    def isatty(self) -> bool:
        return True


def test_jobinfo_interval_refreshes_until_interrupted(monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []

    def fake_sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 1:
            add.delay(1, 2)  # something changes between two screens
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr(jobinfo, "sleep", fake_sleep)
    out = TerminalOutput()
    call_command("jobinfo", "--interval", "2.5", stdout=out, no_color=True)
    screens = out.getvalue().split(jobinfo.CLEAR_SCREEN)[1:]
    assert pauses == [2.5, 2.5]
    assert len(screens) == 2
    assert "queued 0" in line_of(screens[0], "default")
    assert "queued 1" in line_of(screens[1], "default")


def test_jobinfo_interval_does_not_clear_a_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(jobinfo, "sleep", interrupt)
    output = run("jobinfo", "--interval", "1")
    assert jobinfo.CLEAR_SCREEN not in output
    assert output.startswith("high")


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_jobinfo_rejects_a_bad_interval(value: str) -> None:
    with pytest.raises(CommandError, match="--interval"):
        run("jobinfo", "--interval", value)


# -- jobrequeue --------------------------------------------------------------------------------
def test_jobrequeue_all_puts_failed_and_canceled_jobs_back() -> None:
    failed = make_job(JobStatus.FAILED, attempts=3)
    canceled = make_job(JobStatus.CANCELED, queue="low")
    succeeded = make_job(JobStatus.SUCCEEDED)
    queued = make_job()
    output = run("jobrequeue", "--all")
    assert "Requeued 2 jobs." in output
    assert statuses() == {failed.id: JobStatus.QUEUED, canceled.id: JobStatus.QUEUED,
                          succeeded.id: JobStatus.SUCCEEDED, queued.id: JobStatus.QUEUED}
    failed.refresh_from_db()
    assert (failed.attempts, failed.error, failed.traceback, failed.queue) == (0, "", "", "default")
    canceled.refresh_from_db()
    assert canceled.queue == "low"


def test_jobrequeue_by_id_touches_only_those_jobs() -> None:
    chosen = make_job(JobStatus.FAILED)
    other = make_job(JobStatus.FAILED)
    output = run("jobrequeue", str(chosen.id))
    assert "Requeued 1 job." in output
    assert statuses() == {chosen.id: JobStatus.QUEUED, other.id: JobStatus.FAILED}


def test_jobrequeue_says_when_a_given_job_was_not_failed() -> None:
    succeeded = make_job(JobStatus.SUCCEEDED)
    err = StringIO()
    call_command("jobrequeue", str(succeeded.id), stdout=StringIO(), stderr=err)
    assert "not failed or canceled" in err.getvalue()
    assert statuses() == {succeeded.id: JobStatus.SUCCEEDED}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["not-a-uuid"], "not a job id: 'not-a-uuid'"),
        ([], "give --all, or the ids"),
        (["--all", str(uuid.uuid4())], "not both"),
    ],
)
def test_jobrequeue_refuses_bad_arguments(args: list[str], message: str) -> None:
    failed = make_job(JobStatus.FAILED)
    with pytest.raises(CommandError, match=message):
        run("jobrequeue", *args)
    assert statuses() == {failed.id: JobStatus.FAILED}


# -- jobpurge ----------------------------------------------------------------------------------
def test_jobpurge_deletes_only_old_finished_jobs() -> None:
    week = 7 * 86400
    old = [make_job(status, ended_ago=week + 60) for status in FINISHED]
    recent = make_job(JobStatus.SUCCEEDED, ended_ago=week - 60)
    waiting = make_job(enqueued_at=timezone.now() - timedelta(days=30))
    running = make_job(JobStatus.STARTED, started_at=timezone.now() - timedelta(days=30))
    output = run("jobpurge", "--finished-older-than", "7d")
    assert "Deleted 3 jobs finished more than 7d ago." in output
    remaining = set(Job.objects.values_list("id", flat=True))
    assert remaining == {recent.id, waiting.id, running.id}
    assert not remaining & {job.id for job in old}


def test_jobpurge_queue_empties_only_the_waiting_jobs_of_that_queue() -> None:
    low_queued = make_job(queue="low")
    low_scheduled = make_job(JobStatus.SCHEDULED, queue="low")
    low_started = make_job(JobStatus.STARTED, queue="low")
    low_failed = make_job(JobStatus.FAILED, queue="low")
    default_queued = make_job()
    output = run("jobpurge", "--queue", "low")
    assert "Deleted 2 jobs waiting in queue 'low'." in output
    remaining = set(Job.objects.values_list("id", flat=True))
    assert remaining == {low_started.id, low_failed.id, default_queued.id}
    assert low_queued.id not in remaining and low_scheduled.id not in remaining


def test_jobpurge_takes_options_as_call_command_keywords() -> None:
    make_job(JobStatus.SUCCEEDED, ended_ago=7200)
    make_job(queue="high")
    output = run("jobpurge", finished_older_than="1h", queue="high")
    assert "Deleted 1 job finished more than 1h ago." in output
    assert "Deleted 1 job waiting in queue 'high'." in output
    assert not Job.objects.exists()


def test_jobpurge_refuses_an_unknown_queue_before_deleting_anything() -> None:
    old = make_job(JobStatus.SUCCEEDED, ended_ago=86400)
    with pytest.raises(CommandError, match="unknown queue 'nope'"):
        run("jobpurge", "--finished-older-than", "1h", "--queue", "nope")
    assert Job.objects.filter(id=old.id).exists()


def test_jobpurge_needs_an_option() -> None:
    with pytest.raises(CommandError, match="--finished-older-than AGE, --queue NAME"):
        run("jobpurge")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 7 * 86400), ("12h", 12 * 3600), ("30m", 1800), ("90s", 90), ("45", 45),
     ("2w", 14 * 86400), ("1.5h", 5400), (" 10M ", 600)],
)
def test_parse_age(text: str, seconds: int) -> None:
    assert parse_age(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "7 days", "-5", "d", "7y", "1e3"])
def test_jobpurge_refuses_an_unreadable_age(text: str) -> None:
    finished = make_job(JobStatus.SUCCEEDED, ended_ago=86400)
    with pytest.raises(CommandError, match="cannot read"):
        run("jobpurge", "--finished-older-than", text)
    assert Job.objects.filter(id=finished.id).exists()
