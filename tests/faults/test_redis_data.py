"""Issue 10 on a real Redis: scripts re-sent by the client (item 5), Redis that loses its data
(item 6), a stray entry in a queue (item 7), and a Redis that accepts connections but does not
answer (item 9)."""

import contextlib
import signal
import threading
import time
from uuid import uuid4

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings

from jobqueue.brokers import get_broker
from jobqueue.models import Job
from jobqueue.states import FINISHED
from tests.conftest import wait_until
from tests.faults.conftest import freeze, job_row, settle, thaw
from tests.redis_server import REDIS_BACKEND
from tests.testapp.tasks import gated, tally

pytestmark = pytest.mark.django_db(transaction=True)


def table_status(job):
    """What the Job table says of the job (Redis no longer knows it), tracking folded in."""
    get_broker().sync()
    return Job.objects.filter(id=job.id).values_list("status", flat=True).first()


def stop(worker):
    assert worker.alive, worker.tail()
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.tail()


def test_enqueue_reply_lost_and_resent_runs_the_job_once(use_redis, redis_server, proxy, runs,
                                                         start_worker):
    p = proxy(redis_server.port)
    use_redis(redis_server, url=f"redis://127.0.0.1:{p.port}/0")  # this process's .delay()
    gate = runs.gate()
    item = f"sent-once-{uuid4().hex}"
    trigger = p.arm("cut", after=0, request=item.encode())
    held = gated.delay(runs.counter, item, gate)
    assert trigger.fired.is_set()
    canary = tally.delay(runs.counter, "canary")
    worker = start_worker("--concurrency", "2")
    # The second child takes the canary, or (pushed twice) the held job a second time.
    settle(lambda: canary.status in FINISHED or runs.of(item) >= 2 or not worker.alive, 20,
           "the second child to take the next job", worker, [held, canary])
    runs.open(gate)
    settle(lambda: held.status in FINISHED or not worker.alive, 20, "the held job", worker,
           [held])
    assert worker.alive, worker.tail()
    assert runs.of(item) == 1
    assert job_row(held).status == "succeeded"
    stop(worker)


def test_jobs_recorded_then_lost_by_a_restart_without_persistence_run_once(
    use_redis, volatile_redis, runs, start_worker
):
    use_redis(volatile_redis)
    items = [f"lost-{i}" for i in range(20)]
    jobs = tally.map([(runs.counter, item) for item in items])

    def recorded():
        get_broker().sync()
        return Job.objects.filter(id__in=[j.id for j in jobs]).count() == len(jobs)

    wait_until(recorded, timeout=10, message="the jobs to be in the Job table")
    volatile_redis.restart()  # no AOF, no snapshot: it comes back empty
    assert volatile_redis.client().dbsize() == 0
    worker = start_worker()
    settle(lambda: all(j.status in FINISHED for j in jobs) or not worker.alive, 12,
           "the lost jobs to be re-sent and run", worker, jobs)
    assert worker.alive, worker.tail()
    assert runs.counts() == {item: 1 for item in items}
    assert {job_row(j).status for j in jobs} == {"succeeded"}
    assert "resent-after-broker-loss" in worker.log()
    stop(worker)


def test_a_running_job_lost_by_a_restart_without_persistence_is_not_stuck(
    use_redis, volatile_redis, runs, start_worker
):
    use_redis(volatile_redis)
    gate = runs.gate()
    held = gated.delay(runs.counter, "held", gate)
    worker = start_worker()
    runs.wait("held")
    wait_until(lambda: table_status(held) == "started" or not worker.alive, timeout=10,
               message="the Job table to record the job as started")
    volatile_redis.restart()  # empty: the job and its lease are gone
    runs.open(gate)
    settle(lambda: table_status(held) == "succeeded" or not worker.alive, 15,
           "the lost running job to end (re-sent, and run again)", worker, [held])
    assert worker.alive, worker.tail()
    assert 1 <= runs.of("held") <= job_row(held).attempts
    stop(worker)


@pytest.mark.parametrize("kind", ["junk", "id-without-body", "raw-json"])
def test_a_stray_entry_in_a_queue_does_not_stop_it(use_redis, redis_server, runs,
                                                   start_worker, kind):
    prefix = use_redis(redis_server)
    marker = uuid4()
    stray = {
        "junk": f"stray-{marker.hex}",
        "id-without-body": str(marker),
        "raw-json": f'{{"task": "tests.testapp.tasks.tally", "args": ["{marker.hex}"]}}',
    }[kind]
    redis_server.client().rpush(f"{{{prefix}}}:q:default:0", stray)  # where job ids wait
    worker = start_worker()
    job = tally.delay(runs.counter, "after-the-stray")
    settle(lambda: job.status in FINISHED or not worker.alive, 10, "the next job to run", worker,
           [job])
    assert worker.alive, worker.tail()
    assert job.get(timeout=0) == "after-the-stray"
    seen = str(marker) if kind == "id-without-body" else marker.hex
    wait_until(lambda: seen in worker.log(), timeout=5, message="the stray entry to be logged")
    stop(worker)


def delay_in_thread(task, *args):
    """``task.delay(*args)`` on a thread of its own: (thread, box with the result or error)."""
    box = {}

    def send():
        try:
            box["job"] = task.delay(*args)
        except Exception as exc:
            box["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread, box


@pytest.mark.parametrize("hang", ["sigstop", "sigstop-cache", "proxy-stall"])
def test_delay_gives_up_on_a_hung_redis_within_about_a_second(use_redis, redis_server,
                                                               volatile_redis, proxy, runs,
                                                               start_worker, request, hang):
    if hang.startswith("sigstop"):
        server = volatile_redis
        prefix = use_redis(server)
        if hang == "sigstop-cache":  # the client of a django-redis cache, as OPTIONS {"cache"}
            stack = contextlib.ExitStack()
            stack.enter_context(override_settings(
                CACHES={**settings.CACHES, "faults": {
                    "BACKEND": "django_redis.cache.RedisCache", "LOCATION": server.url}},
                JOBQUEUE={**settings.JOBQUEUE, "BROKER": {
                    "BACKEND": REDIS_BACKEND, "OPTIONS": {"cache": "faults", "prefix": prefix}}},
            ))  # fmt: skip
            request.addfinalizer(stack.close)
    else:
        server = redis_server
        p = proxy(server.port)
        use_redis(server, url=f"redis://127.0.0.1:{p.port}/0")
    assert tally.delay(runs.counter, "warm-up").status == "queued"  # a pooled connection
    freeze(server) if hang.startswith("sigstop") else p.stall()
    began = time.monotonic()
    thread, box = delay_in_thread(tally, runs.counter, "sent-while-hung")
    thread.join(2.5)
    returned = not thread.is_alive()
    elapsed = time.monotonic() - began
    thaw(server) if hang.startswith("sigstop") else p.pass_()
    thread.join(30)
    assert returned, f".delay() still blocked after {elapsed:.1f} s"
    assert "error" not in box, box
    worker = start_worker()
    job = box["job"]
    settle(lambda: job.status in FINISHED or not worker.alive, 20, "the job", worker, [job])
    assert worker.alive, worker.tail()
    assert runs.of("sent-while-hung") == 1
    assert job.get(timeout=0) == "sent-while-hung"
    stop(worker)
