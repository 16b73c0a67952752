"""Real ``jobworker`` processes on a private Redis: crashes of workers and of Redis itself, Redis
down while jobs are sent, racing schedulers, and messages nobody should run."""

import signal
import time
from io import StringIO
from pathlib import Path
from uuid import uuid4

import pytest
from django.core.management import call_command
from django.db import transaction

from jobqueue import JobFailed, JobResult
from jobqueue.exceptions import BrokerError
from jobqueue.message import new_job_id
from jobqueue.models import Job, Outbox, Worker
from tests.conftest import wait_until
from tests.redis_server import delete_prefix, serve
from tests.testapp.tasks import add, record, stuck_in_c, wait_for_file

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.per_database]

FAST_LEASE = {"JOBQUEUE_LEASE_TIMEOUT": "1"}


def runs(path: Path) -> list[str]:
    """The values ``record`` wrote, one per run."""
    return path.read_text().split()[::2] if path.exists() else []


def all_succeeded(jobs: list[JobResult]) -> bool:
    return all(j.status == "succeeded" for j in jobs)


def test_sigkill_mid_job_runs_it_again_after_the_lease(use_redis, redis_server, jobworker,
                                                       tmp_path):
    use_redis(redis_server)
    release, marker = tmp_path / "release", tmp_path / "started"
    job = wait_for_file.delay(str(release), str(marker))
    first = jobworker(env=FAST_LEASE)
    wait_until(marker.exists, message="the job to start")
    first_pid = marker.read_text()
    first.kill_group()
    first.wait()
    assert job.status == "started"  # nobody has told Redis
    marker.unlink()
    release.touch()
    second = jobworker(env=FAST_LEASE)
    assert job.get(timeout=30) == "released"
    second.signal(signal.SIGTERM)
    assert second.wait() == 0, second.output
    row = job.job
    assert (row.status, row.attempts) == ("succeeded", 2)
    assert marker.read_text() not in ("", first_pid)


def test_acknowledged_jobs_survive_redis_being_killed(use_redis, durable_redis, jobworker,
                                                      tmp_path):
    log = tmp_path / "runs"
    use_redis(durable_redis)
    jobs = [record.delay(str(log), i) for i in range(200)]
    durable_redis.kill()
    durable_redis.restart()
    worker = jobworker("--burst", "--concurrency", "2")
    assert worker.wait() == 0, worker.output
    assert sorted(runs(log), key=int) == [str(i) for i in range(200)]
    assert all_succeeded(jobs)
    assert Job.objects.filter(status="succeeded").count() == 200  # JobResult.status synced


def test_jobs_sent_while_redis_is_down_wait_in_the_outbox(use_redis, durable_redis, jobworker,
                                                          tmp_path):
    log = tmp_path / "runs"
    use_redis(durable_redis)
    worker = jobworker()
    assert add.delay(0, 0).get(timeout=20) == 0  # the worker is up and serving
    durable_redis.kill()

    began = time.monotonic()
    with transaction.atomic():  # a view under ATOMIC_REQUESTS
        in_view = record.delay(str(log), "in-transaction")
    assert time.monotonic() - began < 2
    began = time.monotonic()
    bare = record.delay(str(log), "bare")
    assert time.monotonic() - began < 2

    jobs = [in_view, bare]
    assert {str(i) for i in Outbox.objects.values_list("job_id", flat=True)} == {j.id for j in jobs}
    assert [j.status for j in jobs] == ["queued", "queued"]
    durable_redis.restart()
    wait_until(lambda: all_succeeded(jobs), timeout=60, message="the relayed jobs to run")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output
    assert sorted(runs(log)) == ["bare", "in-transaction"]
    assert not Outbox.objects.exists()


def memory_for(server, messages) -> int:
    """Bytes of Redis memory these messages take once enqueued (measured under a throwaway
    prefix; the smaller of two tries, as the first also pays for one-time allocations)."""
    from jobqueue.brokers.redis import RedisBroker

    client, sizes = server.client(), []
    for _ in range(2):
        prefix = f"probe{uuid4().hex[:8]}"
        probe = RedisBroker(url=server.url, prefix=prefix)
        before = client.info("memory")["used_memory"]
        probe.enqueue(messages)
        sizes.append(client.info("memory")["used_memory"] - before)
        probe.close()
        delete_prefix(server, prefix)
    return min(sizes)


def test_jobs_redis_accepted_before_refusing_the_rest_run_once(use_redis, durable_redis,
                                                                jobworker, tmp_path):
    """Redis refuses writes part-way through a big ``map()`` (out of memory here; a failover
    mid-batch is alike): the jobs Redis did not confirm go to the outbox, and none runs twice
    when the outbox is relayed."""
    log = tmp_path / "runs"
    broker = use_redis(durable_redis)
    client = durable_redis.client()
    chunk = memory_for(durable_redis, [record.message((str(log), i)) for i in range(500)])
    # Room for one chunk of 500 with half a chunk to spare (a script's arguments and the
    # last allocations take memory too), never for two.
    client.config_set("maxmemory", client.info("memory")["used_memory"] + chunk * 3 // 2)
    jobs = record.map([(str(log), i) for i in range(1000)])
    client.config_set("maxmemory", 0)
    accepted = client.llen(broker.key("q", "default", "0"))
    assert 0 < accepted < 1000  # the batch was cut short
    assert Outbox.objects.count() == 1000 - accepted
    worker = jobworker()
    wait_until(lambda: not Outbox.objects.exists() and broker.counts() == {}, timeout=60,
               message="every job to be relayed and run")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output
    assert all_succeeded(jobs)
    assert sorted(runs(log), key=int) == [str(i) for i in range(1000)]


def test_a_worker_started_while_redis_is_down_waits_for_it(use_redis, durable_redis, jobworker,
                                                           tmp_path):
    log = tmp_path / "runs"
    use_redis(durable_redis)
    durable_redis.kill()
    job = record.delay(str(log), "sent-while-down")
    worker = jobworker()
    wait_until(lambda: worker.says("state=broker-unreachable") or worker.process.poll() is not None,
               message="the worker to miss Redis")
    if worker.process.poll() is not None:
        code = worker.wait()
        pytest.fail(f"jobworker exited ({code}) while Redis was down:\n{worker.output[-3000:]}")
    durable_redis.restart()
    assert job.get(timeout=30) == "sent-while-down"
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output
    assert runs(log) == ["sent-while-down"]


def test_a_job_in_the_outbox_is_visible_while_redis_is_down(use_redis, durable_redis):
    use_redis(durable_redis)
    durable_redis.kill()
    job = add.delay(2, 2)
    assert job.status == "queued"
    assert job.job.status == "queued"  # the admin's view of it


def test_a_job_sent_before_redis_went_down_is_not_reported_missing(use_redis, durable_redis):
    use_redis(durable_redis)
    job = add.delay(1, 1)
    durable_redis.kill()
    with pytest.raises(BrokerError):  # Redis has it; nobody else can tell
        _ = job.status


def test_two_workers_promote_each_due_job_once(use_redis, redis_server, jobworker, tmp_path):
    log = tmp_path / "runs"
    use_redis(redis_server)
    workers = [jobworker("--concurrency", "2", "--name", f"w{i}") for i in range(2)]
    wait_until(lambda: Worker.objects.count() == 4, message="4 worker processes")
    jobs = record.map([(str(log), i) for i in range(50)], countdown=1)
    assert {j.status for j in jobs} == {"scheduled"}
    wait_until(lambda: all_succeeded(jobs), message="the scheduled jobs to run")
    for worker in workers:
        worker.signal(signal.SIGTERM)
    assert [w.wait() for w in workers] == [0, 0]
    assert sorted(runs(log), key=int) == [str(i) for i in range(50)]
    assert Job.objects.filter(status="succeeded", attempts=1).count() == 50


def put_in_queue(broker, job_id: str, body: str, queue: str = "default") -> None:
    """Write a message by hand where the Redis broker keeps them (see its scripts.py)."""
    client = broker.client
    client.hset(broker.key("msg"), job_id, body)
    client.hset(broker.key("ver"), job_id, 1)
    client.rpush(broker.key("q", queue, "0"), f"{job_id}:1")
    client.zadd(broker.key("levels", queue), {"0": 0})


def test_a_malformed_message_fails_with_a_reason_and_the_worker_carries_on(
    use_redis, redis_server, jobworker
):
    broker = use_redis(redis_server)
    bad = JobResult(new_job_id())
    put_in_queue(broker, bad.id, "not a jobqueue message")
    good = add.delay(5, 5)
    worker = jobworker("--burst")
    assert worker.wait() == 0, worker.output
    assert good.get(timeout=0) == 10
    with pytest.raises(JobFailed, match="malformed message"):
        bad.get(timeout=0)
    row = bad.job
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.error.startswith("malformed message (not jobqueue v1)")


def test_a_message_altered_in_redis_is_never_run(use_redis, redis_server, jobworker, tmp_path):
    log = tmp_path / "runs"
    broker = use_redis(redis_server)
    altered = record.delay(str(log), "original")
    body = broker.client.hget(broker.key("msg"), altered.id).decode()
    assert '"original"' in body
    broker.client.hset(broker.key("msg"), altered.id, body.replace('"original"', '"forged"'))
    replayed = JobResult(new_job_id())  # a genuine body under another job's id
    put_in_queue(broker, replayed.id, body)
    good = add.delay(5, 5)
    worker = jobworker("--burst")
    assert worker.wait() == 0, worker.output
    assert good.get(timeout=0) == 10
    for job in (altered, replayed):
        with pytest.raises(JobFailed, match="failed signature verification; it was not run"):
            job.get(timeout=0)
        assert job.job.attempts == 1
    assert runs(log) == []


def test_jobs_a_redis_restart_lost_are_sent_again_and_run_once(use_redis, tmp_path, jobworker):
    """Redis without persistence (the default), 1,000 jobs sent and recorded, Redis restarted
    empty: reconciliation sends each again from its signed body, a worker runs each once."""
    log = tmp_path / "runs"
    with serve(tmp_path / "redis") as server:
        broker = use_redis(server)
        jobs = record.map([(str(log), i) for i in range(1000)])
        wait_until(lambda: broker.tracking.sync(budget=5) and Job.objects.count() == 1000,
                   message="the jobs to be recorded")
        server.restart()
        assert server.client().dbsize() == 0
        worker = jobworker("--concurrency", "2")
        wait_until(lambda: len(runs(log)) >= 1000, timeout=120, message="1,000 runs")
        wait_until(lambda: all_succeeded(jobs), message="the outcomes to be recorded")
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0, worker.output
        assert sorted(runs(log), key=int) == [str(i) for i in range(1000)]
        assert worker.output.count("state=resent-after-broker-loss") == 1000
        broker.sync()
        assert Job.objects.filter(status="succeeded", resent=1).count() == 1000
        out = StringIO()
        call_command("jobinfo", stdout=out)
        assert "1000 jobs sent again after the broker lost them" in out.getvalue()


def test_a_tracking_backlog_never_delays_timeouts_or_leases(use_redis, redis_server, jobworker,
                                                             tmp_path):
    """40,000 jobs' events wait to be recorded while a worker serves another queue: the job it
    runs is still killed at its timeout, and a long job keeps its lease (runs once)."""
    broker = use_redis(redis_server)
    marker, release, started = tmp_path / "stuck", tmp_path / "release", tmp_path / "started"
    worker = jobworker("high", "--concurrency", "2", env=FAST_LEASE)
    long_job = wait_for_file.apply_async((str(release), str(started)), queue="high")
    wait_until(started.exists, message="the long job to start")
    add.map([(i, i) for i in range(40_000)], queue="low")  # not served: only their records
    stuck = stuck_in_c.apply_async((str(marker),), queue="high")
    wait_until(marker.exists, message="the stuck job to start")
    began = time.monotonic()
    backlog = 40_002 - Job.objects.count()  # still to be recorded as its timeout runs
    with pytest.raises(JobFailed, match="TimeoutError"):
        stuck.get(timeout=30)
    assert time.monotonic() - began < 2.5  # its timeout is 1 s
    assert backlog > 0
    release.touch()
    assert long_job.get(timeout=30) == "released"
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output
    assert long_job.job.attempts == 1  # its lease (1 s) was renewed all along
    assert broker.tracking.sync(budget=60)
    assert Job.objects.count() == 40_002
