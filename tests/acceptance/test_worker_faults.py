"""Real ``jobworker`` processes under the faults of production: processes that die mid-job,
jobs that raise what is not an Exception, kills for timeouts, SIGKILL and SIGSTOP, cut database
connections, recycled children. Runs are counted with ``Run`` rows written when each run starts,
so a run lost or made twice shows whatever jobqueue recorded. Each test runs on both brokers
(the Job table, which the assertions read, is brought up to date first)."""

import os
import signal
from collections import Counter
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection

from jobqueue.brokers import get_broker
from jobqueue.models import Job, Worker
from tests.conftest import wait_until
from tests.testapp.models import Run
from tests.testapp.worker_tasks import (
    close_raw_connection,
    count,
    die,
    fork_and_return,
    hang,
    hold,
    leave_transaction_open,
    long_unicode_name,
    raise_base,
    refused_text,
    terminate_a_child,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.per_database]

FAST_LEASE = {"JOBQUEUE_LEASE_TIMEOUT": "1"}


@pytest.fixture(autouse=True, params=["database", "redis"])
def broker_kind(request, live_jobs, jobworker):
    """Every test here, and the workers it starts, on each broker in turn."""
    if request.param == "redis":
        if request.node.originalname in DATABASE_ONLY:
            pytest.skip("a fault of the database broker's own")
        request.getfixturevalue("use_redis")(request.getfixturevalue("redis_server"))
    return request.param


DATABASE_ONLY = {
    "test_a_database_outage_kills_no_running_job_and_its_outcome_is_acked_after",
    "test_cut_database_connections_during_a_drain_leave_no_job_started",
}


def children_of(pid: int) -> list[int]:
    """Live child processes of ``pid`` (zombies do not count)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def runs(key_prefix: str = "") -> Counter:
    return Counter(Run.objects.filter(key__startswith=key_prefix).values_list("key", flat=True))


def row(job) -> Job:
    """The job's row once the Job table agrees with the broker (on Redis it follows)."""

    def synced() -> Job | None:
        get_broker().sync()
        found = Job.objects.filter(id=job.id).first()
        return found if found is not None and found.status == job.status else None

    return wait_until(synced, message="the Job table to catch up")  # type: ignore[return-value]


def jobs_in(status: str) -> int:
    get_broker().sync()
    return Job.objects.filter(status=status).count()


def stop(worker) -> None:
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output


def test_a_job_whose_process_dies_fails_after_max_retries_plus_one_runs(jobworker):
    """Issue case 1: os._exit() (like a segfault or an OOM kill) no longer loops for ever and
    no longer starves its queue."""
    dying = die.delay("dying", 3)  # max_retries=1
    others = [count.delay(f"other-{i}") for i in range(20)]
    worker = jobworker("--name", "w")
    wait_until(lambda: row(dying).status == "failed", message="the dying job to fail")
    wait_until(lambda: all(row(j).status == "succeeded" for j in others), message="the others")
    failed = row(dying)
    assert runs("dying") == {"dying": 2}
    assert failed.attempts == 2
    assert failed.error.startswith(
        "WorkerLost: its worker process died (exit code 3) on attempt 2, its last"
    )
    assert runs("other-") == {f"other-{i}": 1 for i in range(20)}
    replaced = Worker.objects.get(name="w/1")
    assert (replaced.replaced_because, replaced.replacements) == ("crash: exit code 3", 2)
    out = StringIO()
    call_command("jobinfo", stdout=out)
    assert "replaced 2x, last: crash: exit code 3" in out.getvalue()
    stop(worker)


@pytest.mark.parametrize("kind", ["exit", "interrupt", "generator"])
def test_base_exceptions_fail_the_job_and_the_process_lives_on(jobworker, kind):
    """Issue case 2: sys.exit() (and KeyboardInterrupt, GeneratorExit) in a job fails the job
    with its traceback; the same process runs the next job; the worker does not exit."""
    job = raise_base.delay("raiser", kind)
    worker = jobworker("--name", "w")
    wait_until(lambda: row(job).status == "failed", message="the job to fail")
    failed = row(job)
    expected = {"exit": "SystemExit: 3", "interrupt": "KeyboardInterrupt: ",
                "generator": "GeneratorExit: "}[kind]
    assert failed.error == expected
    assert "raise_base" in failed.traceback
    assert (failed.attempts, runs("raiser")) == (1, {"raiser": 1})
    after = count.delay("after")
    wait_until(lambda: row(after).status == "succeeded", message="the next job")
    assert Run.objects.get(key="after").pid == Run.objects.get(key="raiser").pid
    assert worker.process.poll() is None  # still serving
    assert Worker.objects.get(name="w/1").replacements == 0
    stop(worker)


def test_a_timeout_kill_does_not_run_finished_jobs_again(jobworker):
    """Issue case 3: the child killed for a timeout had finished quick jobs of its batch whose
    acks were still buffered; the supervisor acknowledges them instead of re-running them."""
    quick = [count.delay(f"quick-{i}") for i in range(12)]
    stuck = hang.apply_async(("stuck",), priority=-1)  # last of its batch
    after = count.apply_async(("after",), priority=-2)
    worker = jobworker("--burst", "--name", "w")
    assert worker.wait(timeout=60) == 0, worker.output
    assert runs("quick-") == {f"quick-{i}": 1 for i in range(12)}
    assert [row(j).status for j in quick] == ["succeeded"] * 12
    assert [row(j).attempts for j in quick] == [1] * 12
    assert row(stuck).status == "failed"
    assert row(stuck).error == "TimeoutError: job exceeded its timeout of 1 s"
    assert runs("stuck") == {"stuck": 1}
    assert row(after).status == "succeeded"
    assert "reason='timeout: job" in worker.output


def test_sigkill_of_children_during_a_drain_loses_no_job_and_counts_every_run(jobworker):
    """Issue case 3, SIGKILL: each kill costs at most the run of the job that was running;
    finished outcomes are acknowledged, unstarted jobs given back, every run counted."""
    jobs = [count.delay(f"job-{i}") for i in range(600)]
    worker = jobworker("--concurrency", "2", "--name", "w")
    kills = 0
    for threshold in (100, 250, 400):
        wait_until(lambda t=threshold: Run.objects.count() >= t, timeout=60, message="progress")
        victims = children_of(worker.pid)
        if victims:
            os.kill(victims[0], signal.SIGKILL)
            kills += 1
    wait_until(lambda: jobs_in("succeeded") == 600, timeout=120, message="the drain")
    ran = runs("job-")
    attempts = dict(Job.objects.values_list("id", "attempts"))
    assert set(ran) == {f"job-{i}" for i in range(600)}  # none lost
    for i, job in enumerate(jobs):
        assert attempts[job.job.id] >= ran[f"job-{i}"], f"job-{i}: a run not counted"
    assert sum(ran.values()) - 600 <= kills  # at most the running job of each kill ran twice
    assert kills == 3
    assert Worker.objects.filter(replaced_because="crash: signal 9").exists()
    stop(worker)


def test_a_worker_paused_past_its_lease_loses_the_job_and_its_finish_is_refused(
    jobworker, tmp_path
):
    """Issue case 6: SIGSTOP past the lease; another worker takes the job over; the paused
    worker's outcome, once it wakes, carries a stale token and is refused."""
    release = tmp_path / "release"
    job = hold.delay("held", str(release))
    paused = jobworker("--name", "paused", env=FAST_LEASE)
    wait_until(lambda: runs("held")["held"] == 1, message="the first run")
    os.killpg(paused.pid, signal.SIGSTOP)
    try:
        other = jobworker("--name", "other", env=FAST_LEASE)
        wait_until(lambda: runs("held")["held"] == 2, message="the job to be handed over")
        release.touch()
        wait_until(lambda: row(job).status == "succeeded", message="the second run to finish")
        taken_over = row(job)
        assert taken_over.worker == "other/1"
        assert taken_over.attempts == 2  # the paused run counts
    finally:
        os.killpg(paused.pid, signal.SIGCONT)
    wait_until(lambda: paused.says("state=ack-refused") or "reason='lease lost" in paused._seen,
               message="the paused worker's outcome to be refused")
    final = row(job)
    assert (final.status, final.worker, final.result) == (
        "succeeded", "other/1", str(Run.objects.filter(key="held").last().pid))
    stop(paused)
    stop(other)


def test_max_jobs_recycles_a_child_after_acking_its_jobs(jobworker):
    jobs = [count.delay(f"r-{i}") for i in range(12)]
    worker = jobworker("--max-jobs", "5", "--name", "w")
    wait_until(lambda: all(row(j).status == "succeeded" for j in jobs), message="the jobs")
    by_pid = Counter(Run.objects.values_list("pid", flat=True))
    assert sorted(by_pid.values()) == [2, 5, 5]
    assert runs("r-") == {f"r-{i}": 1 for i in range(12)}
    wait_until(lambda: Worker.objects.get(name="w/1").replacements == 2, message="the record")
    assert Worker.objects.get(name="w/1").replaced_because == "recycled: max-jobs 5"
    stop(worker)


def test_max_memory_recycles_a_child_past_the_limit_after_a_job(jobworker):
    jobs = [count.delay(f"m-{i}") for i in range(3)]
    worker = jobworker("--max-memory", "1", "--name", "w")  # any process is past 1 MB
    wait_until(lambda: all(row(j).status == "succeeded" for j in jobs), message="the jobs")
    assert len(set(Run.objects.values_list("pid", flat=True))) == 3  # one process per job
    wait_until(lambda: Worker.objects.get(name="w/1").replacements >= 2, message="the record")
    assert Worker.objects.get(name="w/1").replaced_because.startswith("recycled: max-memory")
    stop(worker)


def test_a_program_a_task_starts_can_be_stopped_with_sigterm(jobworker):
    """Issue case 7: children no longer hand SIG_IGN for SIGTERM down to what tasks exec."""
    job = terminate_a_child.delay()
    assert jobworker("--burst").wait(timeout=60) == 0
    assert row(job).result == "-15"


def test_a_crashing_child_in_a_burst_is_replaced_and_the_burst_finishes(jobworker):
    dying = die.delay("dying", 7)
    rest = [count.delay(f"rest-{i}") for i in range(5)]
    worker = jobworker("--burst")
    assert worker.wait(timeout=60) == 0, worker.output
    assert row(dying).status == "failed"
    assert all(row(j).status == "succeeded" for j in rest)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="closes a PostgreSQL database")
def test_a_database_outage_kills_no_running_job_and_its_outcome_is_acked_after(
    jobworker, tmp_path
):
    """Issue case 4 on the database: for seconds no connection can be made (the database
    refuses them); the supervisor and the child wait, the running job finishes meanwhile, and
    its outcome is acknowledged once the database is back."""
    release = tmp_path / "release"
    job = hold.delay("outage", str(release))
    worker = jobworker("--name", "w")
    wait_until(lambda: runs("outage")["outage"] == 1, message="the job to start")
    import psycopg

    params = connection.get_connection_params()
    admin = psycopg.connect(host=params.get("host"), port=params.get("port"),
                            user=params.get("user"), dbname="postgres", autocommit=True)
    name = connection.settings_dict["NAME"]
    try:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = %s", [name])
        wait_until(lambda: worker.says("worker=w state=broker-unreachable"),
                   message="the supervisor to meet the outage")
        release.touch()  # the job ends while the database is unreachable
        wait_until(lambda: worker.says("worker=w/1 state=broker-unreachable"),
                   message="the child's ack to fail")
    finally:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.close()
    connection.close()  # this test's own connection was cut too
    wait_until(lambda: row(job).status == "succeeded", timeout=30, message="the ack")
    assert worker.process.poll() is None  # the worker lived through it
    assert (row(job).attempts, runs("outage")) == (1, {"outage": 1})
    assert Worker.objects.get(name="w/1").replacements == 0  # no child was killed
    stop(worker)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="terminates PostgreSQL backends")
def test_cut_database_connections_during_a_drain_leave_no_job_started(jobworker):
    """Issue case 5: pg_terminate_backend three times during a drain: every job ends, none is
    left ``started`` with its worker alive, every run is counted."""
    total = 3000
    jobs = count.map([(f"pg-{i}",) for i in range(total)])
    worker = jobworker("--concurrency", "2", "--name", "w")
    for threshold in (300, 1000, 1800):
        wait_until(lambda t=threshold: Run.objects.count() >= t, timeout=120, message="progress")
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
    wait_until(lambda: not Job.objects.exclude(status__in=("succeeded", "failed")).exists(),
               timeout=90, message="every job to end")
    # A job whose own query was cut fails with that error, like any task's exception; none is
    # left started, none lost, every run counted.
    errors = set(Job.objects.filter(status="failed").values_list("error", flat=True))
    assert all(e.startswith("django.db.utils.OperationalError") for e in errors), errors
    assert Job.objects.filter(status="failed").count() < 20
    ran = runs("pg-")
    attempts = dict(Job.objects.values_list("id", "attempts"))
    succeeded = set(Job.objects.filter(status="succeeded").values_list("id", flat=True))
    for i, job in enumerate(jobs):
        job_id = job.job.id
        assert attempts[job_id] >= ran[f"pg-{i}"]
        assert job_id not in succeeded or ran[f"pg-{i}"] >= 1
    stop(worker)


@pytest.mark.parametrize(
    ("kind", "error"), [("nul", "ValueError: a\\x00b"), ("surrogate", "ValueError: caf\\udce9")]
)
def test_error_text_a_database_refuses_is_stored_escaped_and_the_worker_goes_on(
    jobworker, kind, error
):
    """A NUL (refused by PostgreSQL) or a lone surrogate (refused by every UTF-8 encoder) in an
    exception's text no longer stalls the child or crashes the supervisor: the text is stored
    with the character escaped, and the next job runs in the same process."""
    job = refused_text.delay("refused", kind)
    worker = jobworker("--name", "w")
    wait_until(lambda: row(job).status == "failed", message="the job to fail")
    failed = row(job)
    assert (failed.error, failed.attempts, runs("refused")) == (error, 1, {"refused": 1})
    assert "refused_text" in failed.traceback
    after = count.delay("after")
    wait_until(lambda: row(after).status == "succeeded", message="the next job")
    assert Run.objects.get(key="after").pid == Run.objects.get(key="refused").pid
    assert worker.process.poll() is None
    assert Worker.objects.get(name="w/1").replacements == 0
    stop(worker)


def test_a_long_non_ascii_task_name_is_shown_without_crashing_the_supervisor(jobworker):
    """The slot keeps 200 bytes of the running task's name; one cut inside a character no
    longer crashes the supervisor that reads it."""
    job = long_unicode_name.delay("unicode", 1.0)  # the supervisor reads it every 0.25 s
    worker = jobworker("--name", "w")
    wait_until(lambda: row(job).status == "succeeded", message="the job")
    assert Worker.objects.get(name="w/1").replacements == 0
    assert worker.process.poll() is None
    stop(worker)


def test_a_task_that_forks_does_not_leave_a_second_consumer(jobworker, tmp_path):
    """The copy a task forks returns into the worker's loop; it exits there instead of going
    on to claim and run jobs that nothing supervises."""
    copy = tmp_path / "copy"
    job = fork_and_return.delay("fork", str(copy))
    worker = jobworker("--name", "w")
    wait_until(lambda: row(job).status == "succeeded", message="the forking job")
    wait_until(copy.exists, message="the copy to run")
    jobs = [count.delay(f"n-{i}") for i in range(40)]
    wait_until(lambda: all(row(j).status == "succeeded" for j in jobs), message="the drain")
    pids = set(Run.objects.filter(key__startswith="n-").values_list("pid", flat=True))
    assert pids <= set(children_of(worker.pid)), "a job ran outside the worker's children"
    assert runs("n-") == {f"n-{i}": 1 for i in range(40)}
    assert row(job).attempts == 1
    stop(worker)


def test_a_task_that_closes_the_raw_connection_does_not_stop_the_child(jobworker):
    """On SQLite Django takes a closed driver connection for usable; the child now reconnects
    for real instead of failing on it for ever."""
    job = close_raw_connection.delay("closer")
    worker = jobworker("--name", "w")
    wait_until(lambda: runs("closer")["closer"] == 1, message="the run")
    after = count.delay("after")
    wait_until(lambda: row(after).status == "succeeded", message="the next job")
    assert row(job).status == "succeeded", (row(job).error, row(job).traceback)
    assert worker.process.poll() is None
    stop(worker)


def test_a_transaction_a_task_leaves_open_is_rolled_back_and_the_next_jobs_run(jobworker):
    """A task that runs BEGIN and never ends it would hold every later write of its process
    (and, on SQLite, the database's lock); the connection is closed after the job."""
    job = leave_transaction_open.delay("begin")
    worker = jobworker("--name", "w")
    wait_until(lambda: worker.says("state=transaction-left-open"), message="the warning")
    after = [count.delay(f"after-{i}") for i in range(3)]
    wait_until(lambda: all(row(j).status == "succeeded" for j in after), message="next jobs")
    assert row(job).status == "succeeded"
    assert runs("begin") == {"begin": 1}  # written before its BEGIN
    assert runs("after-") == {f"after-{i}": 1 for i in range(3)}
    stop(worker)
