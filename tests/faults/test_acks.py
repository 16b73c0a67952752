"""A lost acknowledgement: the broker recorded the outcome, the worker never heard back (the
reply to FINISH cut), so it sends it again. The second send changes nothing: the job ran once,
is counted once, and stays ``succeeded``."""

import signal
from uuid import uuid4

import pytest

from jobqueue.states import FINISHED
from tests.faults.conftest import database_port, job_row, postgresql_only, settle
from tests.testapp.tasks import tally

pytestmark = pytest.mark.django_db(transaction=True)


def acknowledged_once(runs, worker, job, item, trigger):
    settle(lambda: job.status in FINISHED or not worker.alive, 12, "the job's outcome", worker,
           [job])
    assert trigger.fired.is_set()  # the fault did happen
    assert worker.alive, worker.tail()
    row = job_row(job)
    assert (row.status, row.attempts, runs.of(item)) == ("succeeded", 1, 1)
    assert tally.delay(runs.counter, "next").get(timeout=20) == "next"
    assert runs.of(item) == 1
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.tail()
    assert job_row(job).status == "succeeded"


def test_lost_finish_reply_on_redis(use_redis, redis_server, proxy, runs, start_worker):
    p = proxy(redis_server.port)
    use_redis(redis_server, worker_url=f"redis://127.0.0.1:{p.port}/0")
    item = f"acked-{uuid4().hex}"
    trigger = p.arm("cut", after=0, request=item.encode())  # only the outcome carries it up
    job = tally.delay(runs.counter, item)
    worker = start_worker()
    acknowledged_once(runs, worker, job, item, trigger)


def test_lost_finish_reply_on_postgresql(live_jobs, proxy, runs, start_worker):
    postgresql_only()
    p = proxy(database_port())
    item = f"acked-{uuid4().hex}"
    trigger = p.arm("cut", after=0, request=item.encode())
    job = tally.delay(runs.counter, item)
    worker = start_worker(env={"PGHOST": "127.0.0.1", "PGPORT": str(p.port)})
    acknowledged_once(runs, worker, job, item, trigger)
