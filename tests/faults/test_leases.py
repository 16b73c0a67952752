"""Issue 9, item 6 (and issue 10, item 5, for the claim): a job a worker holds but no child runs
is not leased for as long as its supervisor lives.

The proxy between the worker and its broker cuts the reply to the claim that took the job: the
broker has leased it, the child never learns it (a Redis client may even re-send the claim).
Leases are renewed only for the jobs children really run, so this one expires, is recovered,
and runs once.
"""

import signal
from uuid import uuid4

import pytest

from jobqueue.states import FINISHED
from tests.faults.conftest import database_port, job_row, postgresql_only, settle
from tests.testapp.tasks import tally

pytestmark = pytest.mark.django_db(transaction=True)

FAST_LEASE = {"JOBQUEUE_LEASE_TIMEOUT": "1"}


def runs_once_after_its_lease(runs, worker, job, item, trigger):
    settle(lambda: job.status in FINISHED or not worker.alive, 12,
           "the orphaned job to be recovered and run", worker, [job])
    assert trigger.fired.is_set()  # the fault did happen
    assert worker.alive, worker.tail()
    assert runs.of(item) == 1
    assert job_row(job).status == "succeeded"
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.tail()


def test_lost_claim_reply_on_redis(use_redis, redis_server, proxy, runs, start_worker):
    p = proxy(redis_server.port)
    use_redis(redis_server, worker_url=f"redis://127.0.0.1:{p.port}/0")
    item = f"orphan-{uuid4().hex}"
    job = tally.delay(runs.counter, item)
    trigger = p.arm("cut", after=8, request=b"EVALSHA", reply=item.encode())
    worker = start_worker(env=FAST_LEASE)
    runs_once_after_its_lease(runs, worker, job, item, trigger)


def test_lost_claim_reply_on_postgresql(live_jobs, proxy, runs, start_worker):
    postgresql_only()
    p = proxy(database_port())
    item = f"orphan-{uuid4().hex}"
    job = tally.delay(runs.counter, item)
    trigger = p.arm("cut", after=0, reply=item.encode())
    worker = start_worker(env={**FAST_LEASE, "PGHOST": "127.0.0.1", "PGPORT": str(p.port)})
    runs_once_after_its_lease(runs, worker, job, item, trigger)


def stalled_claim_is_recovered(runs, worker, job, item, proxy, trigger):
    """The child whose claim reply stalls holds the job unknowingly: its lease must lapse, and
    another child run it; when the stalled reply finally arrives, the run it starts is stale
    (its outcome refused) but counted."""
    settle(lambda: trigger.fired.is_set() or not worker.alive, 10, "the claim reply to stall",
           worker, [job])
    settle(lambda: job.status in FINISHED or not worker.alive, 12,
           "the job to be recovered and run by the other child", worker, [job])
    proxy.pass_()
    assert worker.alive, worker.tail()
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.tail()
    row = job_row(job)
    assert row.status == "succeeded"
    assert 1 <= runs.of(item) <= row.attempts, (runs.of(item), row.attempts)


def test_claim_reply_stalled_past_the_lease_on_redis(use_redis, redis_server, proxy, runs,
                                                     start_worker):
    p = proxy(redis_server.port)
    use_redis(redis_server, worker_url=f"redis://127.0.0.1:{p.port}/0")
    item = f"stalled-{uuid4().hex}"
    job = tally.delay(runs.counter, item)
    trigger = p.arm("stall", after=8, request=b"EVALSHA", reply=item.encode())
    worker = start_worker("--concurrency", "2", env=FAST_LEASE)
    stalled_claim_is_recovered(runs, worker, job, item, p, trigger)


def test_claim_reply_stalled_past_the_lease_on_postgresql(live_jobs, proxy, runs, start_worker):
    postgresql_only()
    p = proxy(database_port())
    item = f"stalled-{uuid4().hex}"
    job = tally.delay(runs.counter, item)
    trigger = p.arm("stall", after=8, reply=item.encode())
    worker = start_worker("--concurrency", "2",
                          env={**FAST_LEASE, "PGHOST": "127.0.0.1", "PGPORT": str(p.port)})
    stalled_claim_is_recovered(runs, worker, job, item, p, trigger)
