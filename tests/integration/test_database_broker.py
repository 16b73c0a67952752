"""The database broker's contract, on the database the run was started with."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from jobqueue.brokers.base import Outcome
from jobqueue.brokers.database import DatabaseBroker
from jobqueue.models import Job
from jobqueue.states import JobStatus
from tests.testapp.tasks import add, urgent

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def broker():
    b = DatabaseBroker()
    yield b
    b.close()


def claim_ids(broker, queues=("high", "default", "low"), worker="w", limit=100):
    return [m.id for m in broker.claim(list(queues), worker, limit)]


def test_claim_order_queues_then_priority_then_fifo(broker):
    low = add.apply_async((0, 0), queue="low", priority=100)
    first = add.delay(1, 1)
    second = add.delay(2, 2)
    important = add.apply_async((3, 3), priority=10)
    high = urgent.delay(4)
    assert claim_ids(broker) == [high.id, important.id, first.id, second.id, low.id]


def test_claim_respects_queue_selection_and_limit(broker):
    jobs = add.map([(i, i) for i in range(5)])
    urgent.delay(1)
    assert claim_ids(broker, ["default"], limit=2) == [jobs[0].id, jobs[1].id]
    assert claim_ids(broker, ["default"], limit=10) == [j.id for j in jobs[2:]]
    assert claim_ids(broker, ["default"]) == []


def test_claim_marks_started_under_a_lease(broker):
    job = add.delay(1, 2)
    [message] = broker.claim(["default"], "w1", 1)
    assert (message.task, message.arguments, message.attempts) == (
        "tests.testapp.tasks.add", '{"args":[1,2],"kwargs":{}}', 1)
    row = Job.objects.get(id=job.id)
    assert (row.status, row.worker, row.attempts) == ("started", "w1", 1)
    assert row.lease_expires_at > timezone.now()


def test_scheduled_jobs_wait_for_their_time(broker):
    later = add.apply_async((1, 1), countdown=3600)
    due = add.apply_async((2, 2), eta=timezone.now() + timedelta(milliseconds=1))
    Job.objects.filter(id=due.id).update(run_at=timezone.now() - timedelta(seconds=1))
    assert claim_ids(broker) == []
    assert broker.promote_due() == 1
    assert claim_ids(broker) == [due.id]
    assert Job.objects.get(id=later.id).status == "scheduled"


def outcome(job_id, status, **fields):
    now = timezone.now()
    return Outcome(job_id, status, now, now, **fields)


def test_finish_records_outcomes_in_one_batch(broker):
    ok, bad, retry = add.map([(1, 1), (2, 2), (3, 3)])
    broker.claim(["default"], "w", 10)
    later = timezone.now() + timedelta(hours=1)
    broker.finish("w", [
        outcome(ok.id, JobStatus.SUCCEEDED, result="2"),
        outcome(bad.id, JobStatus.FAILED, error="ValueError: x", traceback="tb"),
        outcome(retry.id, JobStatus.SCHEDULED, error="E: y", run_at=later),
    ])
    rows = {str(r.id): r for r in Job.objects.all()}
    assert (rows[ok.id].status, rows[ok.id].result) == ("succeeded", "2")
    assert (rows[bad.id].status, rows[bad.id].traceback) == ("failed", "tb")
    assert (rows[retry.id].status, rows[retry.id].run_at, rows[retry.id].ended_at) == (
        "scheduled", later, None)
    assert all(r.lease_expires_at is None for r in rows.values())


def test_finish_ignores_jobs_no_longer_held(broker):
    job = add.delay(1, 1)
    broker.claim(["default"], "w", 1)
    broker.cancel(job.id)
    broker.finish("w", [outcome(job.id, JobStatus.SUCCEEDED, result="2")])
    assert Job.objects.get(id=job.id).status == "canceled"


def test_release_returns_jobs_and_attempts(broker):
    a, b = add.map([(1, 1), (2, 2)])
    broker.claim(["default"], "w", 2)
    assert broker.release("w", [a.id], count_attempt=True) == 1
    assert broker.release("w") == 1
    rows = {str(r.id): r for r in Job.objects.all()}
    assert (rows[a.id].status, rows[a.id].attempts) == ("queued", 1)
    assert (rows[b.id].status, rows[b.id].attempts) == ("queued", 0)


def test_expired_leases_are_recovered_and_live_ones_renewed(broker):
    dead, live = add.map([(1, 1), (2, 2)])
    broker.claim(["default"], "dead", 1)
    broker.claim(["default"], "live", 1)
    Job.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    broker.renew(["live"])
    assert broker.recover() == 1
    assert Job.objects.get(id=dead.id).status == "queued"
    assert Job.objects.get(id=live.id).status == "started"
    [again] = broker.claim(["default"], "other", 1)
    assert (again.id, again.attempts) == (dead.id, 2)


def test_cancel_requeue_and_purge(broker):
    waiting, running, done = add.map([(1, 1), (2, 2), (3, 3)])
    assert broker.cancel(waiting.id)
    broker.claim(["default"], "w", 2)
    broker.finish("w", [outcome(running.id, JobStatus.FAILED, error="E: x")])
    broker.finish("w", [outcome(done.id, JobStatus.SUCCEEDED, result="6")])
    assert not broker.cancel(done.id)
    assert broker.requeue() == 2
    assert set(Job.objects.filter(status="queued").values_list("id", flat=True)) == {
        Job.objects.get(id=waiting.id).id, Job.objects.get(id=running.id).id}
    assert broker.counts() == {"default": {"queued": 2}}
    assert broker.purge_queue("default") == 2
    assert list(Job.objects.values_list("status", flat=True)) == ["succeeded"]
    Job.objects.update(ended_at=timezone.now() - timedelta(days=2))
    assert broker.purge_finished(timedelta(days=1)) == 1


def test_no_job_is_claimed_twice_by_concurrent_claimers(broker):
    """Threads with their own connections race for the same rows."""
    import threading

    from django.db import connections

    jobs = add.map([(i, i) for i in range(200)])
    claimed: list[str] = []
    lock = threading.Lock()

    def claimer(name):
        mine = DatabaseBroker()
        try:
            while batch := mine.claim(["default"], name, 7):
                with lock:
                    claimed.extend(m.id for m in batch)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(j.id for j in jobs)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="LISTEN/NOTIFY is PostgreSQL's")
def test_idle_wait_wakes_on_notify(broker):
    import threading
    import time

    from django.db import connections

    def send_from_another_connection():
        add.delay(1, 1)
        connections.close_all()

    broker.wait(["default"], timeout=0)  # LISTEN starts now
    threading.Timer(0.2, send_from_another_connection).start()
    began = time.monotonic()
    broker.wait(["default"], timeout=10)
    assert 0.15 < time.monotonic() - began < 5


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite set-up")
def test_sqlite_is_set_up_for_many_processes():
    with connection.cursor() as cursor:
        assert cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert cursor.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    assert connection.transaction_mode == "IMMEDIATE"
