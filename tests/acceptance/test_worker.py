"""Real ``jobworker`` processes: burst, concurrency, signals, crashes, timeouts, cancellation."""

import os
import signal
from pathlib import Path

import pytest
from django.db import connection

from jobqueue import JobFailed
from jobqueue.message import new_job_id
from jobqueue.models import Job, Worker
from jobqueue.states import JobStatus
from tests.conftest import wait_until
from tests.testapp.tasks import add, fail, flaky, record, stuck_in_c, wait_for_file

pytestmark = pytest.mark.django_db(transaction=True)

FAST_LEASE = {"JOBQUEUE_LEASE_TIMEOUT": "1"}


def runs(path: Path) -> list[str]:
    return path.read_text().split() [::2] if path.exists() else []


def status(job) -> str:
    return Job.objects.get(id=job.id).status


def test_burst_drains_every_queue_and_exits_zero(jobworker, tmp_path):
    jobs = add.map([(i, i) for i in range(100)])
    failing = fail.delay("expected")
    retried = flaky.delay(str(tmp_path / "tries"), 2)
    worker = jobworker("--burst", "--concurrency", "2")
    assert worker.wait() == 0, worker.output
    assert [j.get(timeout=0) for j in jobs] == [2 * i for i in range(100)]
    with pytest.raises(JobFailed, match="ValueError: expected"):
        failing.get(timeout=0)
    assert retried.get(timeout=0) == 2
    assert not Worker.objects.exists()  # a worker that stops leaves no trace in jobinfo


def test_two_workers_on_one_queue_never_run_a_job_twice(jobworker, tmp_path):
    log, release = tmp_path / "runs", tmp_path / "release"
    workers = [jobworker("--concurrency", "2", "--name", f"w{i}") for i in range(2)]
    wait_until(lambda: Worker.objects.count() == 4, message="4 worker processes")
    # One blocking job per process: all four markers mean both workers hold a job at once.
    markers = [tmp_path / f"started-{i}" for i in range(4)]
    gates = [wait_for_file.delay(str(release), str(marker)) for marker in markers]
    wait_until(lambda: all(m.exists() for m in markers), message="4 processes busy")
    jobs = record.map([(str(log), i) for i in range(300)])
    release.touch()  # the four processes now race for the 300
    wait_until(lambda: Job.objects.filter(status="succeeded").count() == 304, message="the jobs")
    for worker in workers:
        worker.signal(signal.SIGTERM)
    assert [w.wait() for w in workers] == [0, 0]
    assert sorted(runs(log), key=int) == [str(i) for i in range(300)]
    assert [j.status for j in jobs + gates] == ["succeeded"] * 304
    ran_in = {row.split("/")[0] for row in Job.objects.values_list("worker", flat=True)}
    assert ran_in == {"w0", "w1"}
    assert len({m.read_text() for m in markers}) == 4  # four processes, one job each


def test_queues_are_served_in_the_order_given(jobworker, tmp_path):
    log = tmp_path / "runs"
    record.apply_async((str(log), "low"), queue="low")
    record.apply_async((str(log), "default"), queue="default")
    record.apply_async((str(log), "high"), queue="high")
    assert jobworker("low", "high", "--burst").wait() == 0
    assert runs(log) == ["low", "high"]
    assert Job.objects.filter(status="queued", queue="default").count() == 1


def test_sigterm_finishes_the_running_job_then_exits(jobworker, tmp_path):
    release, marker = tmp_path / "release", tmp_path / "started"
    running = wait_for_file.delay(str(release), str(marker))
    worker = jobworker()
    wait_until(marker.exists, message="the job to start")
    waiting = add.delay(1, 1)
    worker.signal(signal.SIGTERM)
    wait_until(lambda: worker.says("state=stopping"), message="the worker to stop taking jobs")
    release.touch()
    assert worker.wait() == 0
    assert running.get(timeout=0) == "released"
    assert status(waiting) == "queued"  # taken by nobody after the signal


def test_second_signal_returns_the_running_job_to_its_queue(jobworker, tmp_path):
    marker = tmp_path / "started"
    job = wait_for_file.delay(str(tmp_path / "never"), str(marker))
    worker = jobworker()
    wait_until(marker.exists, message="the job to start")
    worker.signal(signal.SIGINT)
    wait_until(lambda: worker.says("state=stopping"), message="the worker to stop taking jobs")
    worker.signal(signal.SIGINT)
    assert worker.wait() == 0
    row = Job.objects.get(id=job.id)
    # The run was cut short, not skipped: it counts, and the job goes to the back of its queue.
    assert (row.status, row.attempts, row.worker) == ("queued", 1, "")
    assert "stopped by a second shutdown signal" in row.error


def test_sigkill_mid_job_runs_it_again_after_the_lease(jobworker, tmp_path):
    release, marker = tmp_path / "release", tmp_path / "started"
    job = wait_for_file.delay(str(release), str(marker))
    first = jobworker(env=FAST_LEASE)
    wait_until(marker.exists, message="the job to start")
    first_pid = marker.read_text()
    first.kill_group()
    first.wait()
    assert status(job) == "started"  # nobody has told the database
    marker.unlink()
    release.touch()
    second = jobworker(env=FAST_LEASE)
    wait_until(lambda: status(job) == "succeeded", message="the job to run again")
    second.signal(signal.SIGTERM)
    assert second.wait() == 0
    row = Job.objects.get(id=job.id)
    assert row.attempts == 2
    assert marker.read_text() != first_pid


def live_members(group: int) -> list[int]:
    """Processes of a process group that have not exited (zombies do not count)."""
    members = []
    for entry in os.listdir("/proc"):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(entry))
    return members


def test_a_supervisor_that_crashes_takes_its_children_down(jobworker, tmp_path):
    release, marker = tmp_path / "release", tmp_path / "started"
    job = wait_for_file.delay(str(release), str(marker))
    worker = jobworker("--concurrency", "2",
                       env={"JOBQUEUE_TEST_BROKER": "tests.testapp.brokers.BrokenTickBroker"})
    assert worker.wait(timeout=30) != 0
    assert "state=crashed" in worker.output
    assert "a bug in the supervisor's bookkeeping" in worker.output
    wait_until(lambda: not live_members(worker.pid), timeout=10,
               message="the children to be gone")
    assert status(job) == "queued"  # given back, if a child had taken it


def test_timeout_kills_code_stuck_in_c_and_the_worker_carries_on(jobworker, tmp_path):
    marker = tmp_path / "started"
    stuck = stuck_in_c.delay(str(marker))
    after = add.delay(2, 2)
    worker = jobworker("--burst")
    assert worker.wait(timeout=30) == 0, worker.output
    with pytest.raises(JobFailed, match="TimeoutError: job exceeded its timeout of 1 s"):
        stuck.get(timeout=0)
    assert after.get(timeout=0) == 4
    assert marker.exists()


def test_a_running_job_can_be_canceled(jobworker, tmp_path):
    marker = tmp_path / "started"
    job = wait_for_file.delay(str(tmp_path / "never"), str(marker))
    worker = jobworker(env=FAST_LEASE)
    wait_until(marker.exists, message="the job to start")
    assert job.cancel()
    after = add.delay(3, 3)
    assert after.get(timeout=20) == 6
    assert status(job) == "canceled"
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_malformed_rows_fail_with_a_reason_in_a_real_worker(jobworker):
    from django.utils import timezone

    now = timezone.now()
    bad = Job.objects.create(id=new_job_id(), task="builtins.eval", queue="default",
                             arguments='{"args":["1+1"],"kwargs":{}}', enqueued_at=now, run_at=now)
    good = add.delay(5, 5)
    assert jobworker("--burst").wait() == 0
    bad.refresh_from_db()
    assert (bad.status, bad.error) == (
        JobStatus.FAILED, "jobqueue.exceptions.UnknownTask: no task named 'builtins.eval' is "
        "registered; tasks live in tasks.py of an installed app or in a module listed in "
        "JOBQUEUE['TASK_MODULES']")
    assert good.get(timeout=0) == 10


def test_worker_rows_show_busy_workers(jobworker, tmp_path):
    marker, release = tmp_path / "started", tmp_path / "release"
    job = wait_for_file.delay(str(release), str(marker))
    worker = jobworker("--concurrency", "2", "--name", "busy", env=FAST_LEASE)
    wait_until(marker.exists, message="the job to start")
    wait_until(lambda: Worker.objects.filter(current_job=job.id).exists(), message="the heartbeat")
    assert set(Worker.objects.values_list("name", flat=True)) == {"busy/1", "busy/2"}
    release.touch()
    job.get(timeout=20)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_idle_worker_wakes_on_notify_not_a_poll(jobworker, tmp_path):
    """PostgreSQL: NOTIFY; SQLite: the write-ahead log, watched."""
    import time

    marker = tmp_path / "started"
    warmup = add.delay(0, 0)
    worker = jobworker()
    warmup.get(timeout=20)
    latencies = []
    for _ in range(5):
        began = time.monotonic()
        add.delay(1, 1).get(timeout=5)
        latencies.append(time.monotonic() - began)
    assert sorted(latencies)[2] < 0.5, latencies
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert not marker.exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="terminates PostgreSQL backends")
def test_worker_survives_its_database_connections_being_cut(jobworker):
    worker = jobworker()
    assert add.delay(1, 1).get(timeout=20) == 2

    def others(where=""):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                f"AND pid <> pg_backend_pid() {where}"
            )
            return cursor.fetchone()[0]

    # The idle child listens while it holds the listener's advisory lock.
    wait_until(lambda: others("AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' "
                              "AND granted)"), message="the idle child to LISTEN")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchone()[0] >= 2  # the child's connection and its LISTEN connection
    assert add.delay(2, 2).get(timeout=20) == 4
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
