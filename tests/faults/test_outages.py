"""Issue 9, items 4 and 5: a broker or database outage never kills a running job or the worker;
a dropped database connection never leaves a job ``started`` while its worker lives.

A job is held running (``gated``) while the fault is on; it finishes during the outage, and its
outcome must be acknowledged once the broker is back.
"""

import signal

import pytest

from jobqueue.states import FINISHED
from tests.conftest import wait_until
from tests.faults.conftest import (
    database_port,
    freeze,
    job_row,
    postgresql_only,
    settle,
    terminate_backends,
    thaw,
)
from tests.testapp.tasks import gated, tally

pytestmark = pytest.mark.django_db(transaction=True)


def finishes_during_the_outage(runs, worker, gate, outage_seen):
    """The job runs; the fault is on (``outage_seen``: the worker noticed); the job returns."""
    wait_until(lambda: outage_seen() or not worker.alive, timeout=20,
               message="the worker to notice the outage")
    runs.open(gate)
    wait_until(lambda: runs.of("held:done") or not worker.alive, timeout=10,
               message="the held job to return")


def ends_well(runs, worker, held):
    settle(lambda: held.status in FINISHED or not worker.alive, 30, "the held job's outcome",
           worker, [held])
    assert worker.alive, worker.tail()
    assert runs.of("held") == 1
    row = job_row(held)
    assert (row.status, row.attempts) == ("succeeded", 1), worker.tail()
    assert tally.delay(runs.counter, "next").get(timeout=20) == "next"
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.tail()


def test_redis_killed_mid_job_and_restarted(use_redis, durable_redis, runs, start_worker):
    use_redis(durable_redis)
    gate = runs.gate()
    held = gated.delay(runs.counter, "held", gate)
    worker = start_worker()
    runs.wait("held")
    durable_redis.kill()
    finishes_during_the_outage(runs, worker, gate,
                               lambda: worker.says("state=broker-unreachable"))
    durable_redis.restart()
    ends_well(runs, worker, held)


def test_redis_connections_reset_and_refused_mid_job(use_redis, redis_server, proxy, runs,
                                                     start_worker):
    p = proxy(redis_server.port)
    use_redis(redis_server, worker_url=f"redis://127.0.0.1:{p.port}/0")
    gate = runs.gate()
    held = gated.delay(runs.counter, "held", gate)
    worker = start_worker()
    runs.wait("held")
    p.down(rst=True)
    finishes_during_the_outage(runs, worker, gate, lambda: p.refused >= 3)
    p.pass_()
    ends_well(runs, worker, held)


def test_redis_frozen_mid_job(use_redis, volatile_redis, proxy, runs, start_worker):
    """SIGSTOP: connections stay open and nothing answers (a failover, a full disk's fsync). The
    proxy in front only watches: it shows when the worker's requests have gone unanswered."""
    p = proxy(volatile_redis.port)
    use_redis(volatile_redis, worker_url=f"redis://127.0.0.1:{p.port}/0")
    gate = runs.gate()
    held = gated.delay(runs.counter, "held", gate)
    worker = start_worker()
    runs.wait("held")
    freeze(volatile_redis)
    sent = p.bytes_up
    wait_until(lambda: p.bytes_up > sent or not worker.alive, timeout=10,
               message="the supervisor to ask the frozen Redis")
    sent = p.bytes_up
    runs.open(gate)
    wait_until(lambda: runs.of("held:done") or not worker.alive, timeout=10,
               message="the held job to return")
    wait_until(lambda: p.bytes_up > sent or not worker.alive, timeout=10,
               message="the child to report to the frozen Redis")
    thaw(volatile_redis)
    ends_well(runs, worker, held)


def test_database_unreachable_mid_job(live_jobs, proxy, runs, start_worker):
    postgresql_only()
    p = proxy(database_port())
    gate = runs.gate()
    held = gated.delay(runs.counter, "held", gate)
    worker = start_worker(env={"PGHOST": "127.0.0.1", "PGPORT": str(p.port)})
    runs.wait("held")
    p.down(rst=True)
    finishes_during_the_outage(runs, worker, gate, lambda: p.refused >= 3)
    p.pass_()
    ends_well(runs, worker, held)


def test_terminated_database_connections_leave_no_job_started(live_jobs, runs, start_worker):
    postgresql_only()
    gate = runs.gate()
    before = tally.map([(runs.counter, f"before-{i}") for i in range(40)])  # held: mid-batch
    held = gated.delay(runs.counter, "held", gate)
    # Jobs of 30 ms: the outcomes waiting for their acknowledgement are flushed in mid-batch.
    after = tally.map([(runs.counter, f"after-{i}", 0.03) for i in range(30)])
    jobs = [*before, held, *after]
    worker = start_worker(env={"JOBQUEUE_LEASE_TIMEOUT": "1"})
    runs.wait("held")
    assert terminate_backends() >= 1  # the child's at least (its job is running)
    runs.open(gate)
    settle(lambda: all(j.status in FINISHED for j in jobs) or not worker.alive, 12,
           "every job to finish (none stuck started)", worker, jobs)
    assert worker.alive, worker.tail()
    counts = runs.counts()
    for job, item in zip(jobs, [f"before-{i}" for i in range(40)] + ["held"]
                         + [f"after-{i}" for i in range(30)], strict=True):
        row = job_row(job)
        assert row.status == "succeeded", (item, row.status)
        assert 1 <= counts[item] <= row.attempts, (item, counts[item], row.attempts)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.tail()

