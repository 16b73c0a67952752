"""What only the database broker does (the shared contract: test_broker_contract.py)."""

import queue
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from jobqueue.brokers.base import Outcome
from jobqueue.brokers.database import DatabaseBroker
from jobqueue.brokers.filewatch import FileWatch
from jobqueue.models import Job
from jobqueue.states import JobStatus
from tests.conftest import wait_until
from tests.testapp.tasks import add

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def broker():
    b = DatabaseBroker()
    yield b
    b.close()


def outcome(message, status, **fields):
    now = timezone.now()
    return Outcome(message.id, status, now, now, token=message.token, **fields)


def test_claim_sets_a_lease_in_the_row(broker):
    job = add.delay(1, 2)
    broker.claim(["default"], "w1", 1)
    assert Job.objects.get(id=job.id).lease_expires_at > timezone.now()


def test_finish_ends_the_lease_in_one_statement(broker):
    from django.test.utils import CaptureQueriesContext

    add.map([(1, 1), (2, 2), (3, 3)])
    messages = broker.claim(["default"], "w", 10)
    later = timezone.now() + timedelta(hours=1)
    with CaptureQueriesContext(connection) as queries:
        assert broker.finish("w", [
            outcome(messages[0], JobStatus.SUCCEEDED, result="2"),
            outcome(messages[1], JobStatus.FAILED, error="ValueError: x", traceback="tb"),
            outcome(messages[2], JobStatus.SCHEDULED, error="E: y", run_at=later),
        ]) == 3
    # One statement for the leases; the failed runs' attempts are recorded beside it.
    assert len([q for q in queries.captured_queries if q["sql"].startswith("WITH v")]) == 1
    assert not Job.objects.filter(lease_expires_at__isnull=False).exists()


def test_every_change_raises_the_version_and_a_claim_returns_it_as_its_token(broker):
    job = add.delay(1, 2)

    def version():
        return Job.objects.get(id=job.id).version

    assert version() == 0
    [message] = broker.claim(["default"], "w", 1)
    assert message.token == version() == 1
    broker.release("w", [message.lease])
    assert version() == 2
    [message] = broker.claim(["default"], "w", 1)
    assert message.token == 3
    assert broker.renew("w", [message.lease]) == set()
    assert version() == 3  # a renewal is no change: the token stays valid
    assert broker.cancel(job.id)
    assert version() == 4
    assert broker.requeue([job.id]) == 1
    assert version() == 5


def test_leases_and_due_times_follow_the_database_clock_not_the_hosts(broker):
    """A worker host whose clock is an hour off neither hands out live jobs nor runs jobs
    early: every time that decides is the database's."""
    from unittest import mock

    job = add.apply_async((1, 1), countdown=2)
    skewed = timezone.now() + timedelta(hours=1)
    with mock.patch("django.utils.timezone.now", return_value=skewed):
        assert broker.promote_due() == 0
        Job.objects.filter(id=job.id).update(status="queued")
        [message] = broker.claim(["default"], "w", 1)
        assert broker.recover() == 0
        assert broker.renew("w", [message.lease]) == set()
    row = Job.objects.get(id=job.id)
    lease = (row.lease_expires_at - timezone.now()).total_seconds()
    assert 25 < lease <= 30  # LEASE_TIMEOUT from the database's now, not the skewed host's


def test_a_retry_is_due_after_its_delay_by_the_database_clock_not_the_hosts(broker):
    """The worker's run_at is an hour behind (its host's clock is): the retry still waits its
    delay, counted from the database's now; and one whose host is an hour ahead is not held
    back an hour."""
    add.map([(1, 1), (2, 2)])
    first, second = broker.claim(["default"], "w", 2)
    host_behind = timezone.now() - timedelta(hours=1)
    host_ahead = timezone.now() + timedelta(hours=1)
    assert broker.finish("w", [
        outcome(first, JobStatus.SCHEDULED, run_at=host_behind + timedelta(seconds=600),
                delay=600.0),
        outcome(second, JobStatus.SCHEDULED, run_at=host_ahead + timedelta(seconds=0.3),
                delay=0.3),
    ]) == 2
    row = Job.objects.get(id=first.id)
    assert row.status == "scheduled"
    assert 590 < (row.run_at - timezone.now()).total_seconds() <= 600
    due = Job.objects.get(id=second.id).run_at
    assert (due - timezone.now()).total_seconds() <= 0.3  # not an hour ahead
    wait_until(lambda: broker.promote_due() or Job.objects.get(id=second.id).status == "queued",
               timeout=5, message="the retry to be due")
    assert Job.objects.get(id=second.id).status == "queued"
    assert Job.objects.get(id=first.id).status == "scheduled"


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite set-up")
def test_sqlite_is_set_up_for_many_processes():
    with connection.cursor() as cursor:
        assert cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert cursor.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    assert connection.transaction_mode == "IMMEDIATE"




def test_one_job_is_one_insert_with_every_column_and_the_databases_errors(broker):
    """A single send skips the ORM's save but not what it guarantees: each column as the ORM
    would write it, Django's exceptions, and the caller's transaction."""
    from django.db import IntegrityError, transaction

    message = add.message((1, 2), countdown=60, priority=7)
    broker.enqueue([message])
    row = Job.objects.get(id=message.id)
    expected = Job.from_message(message)
    for field in Job._meta.concrete_fields:
        value = field.to_python(getattr(expected, field.attname))
        assert getattr(row, field.attname) == value, field.name
    assert row.status == "scheduled" and row.version == 0 and row.body == ""
    with pytest.raises(IntegrityError):
        broker.enqueue([message])  # the same id again
    again = add.message((3, 4))
    with pytest.raises(RuntimeError), transaction.atomic():
        broker.enqueue([again])
        raise RuntimeError("rolled back")
    assert not Job.objects.filter(id=again.id).exists()

# -- idle workers: woken, not polling ------------------------------------------------------------

FAR = 30.0  # a wait's timeout (and a poll interval): far beyond every deadline below


class Counting(DatabaseBroker):
    """Counts its looks for a job (SQLite) and its claims: a process woken for nothing shows."""

    def __init__(self):
        super().__init__()
        self.looks = self.claims = 0

    def _look(self, queues):
        found = super()._look(queues)
        self.looks += 1
        return found

    def claim(self, queues, worker, limit):
        self.claims += 1
        return super().claim(queues, worker, limit)


def waiting(broker, queues=("default",)):
    """``broker.wait_and_claim`` in a thread with its own connection; a queue of what it
    returned (a list of messages, or the exception it raised)."""
    returned = queue.Queue()

    def run():
        try:
            returned.put(broker.wait_and_claim(list(queues), "w", 1, timeout=FAR))
        except Exception as exc:  # handed to the test: got() raises it
            returned.put(exc)
        finally:
            broker.close()
            connections.close_all()

    threading.Thread(target=run, daemon=True).start()
    return returned


def got(returned, timeout=5):
    """What the waiting thread returned; what it raised is raised here."""
    value = returned.get(timeout=timeout)
    if isinstance(value, Exception):
        raise value
    return value


def elsewhere(send):
    """Run ``send`` in another thread, with a connection of its own, and wait for it."""

    def run():
        try:
            send()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()


def sent(message):
    elsewhere(lambda: DatabaseBroker().enqueue([message]))
    return message


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's write-ahead log")
@pytest.mark.parametrize("watched", [True, False], ids=["watched", "data-version-read"])
def test_an_idle_sqlite_worker_wakes_for_a_job_sent_elsewhere(settings, monkeypatch, watched):
    """Woken by the commit: the job is claimed long before the wait's timeout, and (the file
    watched) without any poll interval; where the file cannot be watched, by a read of the
    data version every POLL_INTERVAL (a short one here)."""
    if watched:
        settings.JOBQUEUE = {**settings.JOBQUEUE, "POLL_INTERVAL": FAR}
    else:
        monkeypatch.setattr(FileWatch, "open", classmethod(lambda cls, path, files: None))
    broker = Counting()
    returned = waiting(broker)
    wait_until(lambda: broker.looks, message="the first look (found nothing: it sleeps)")
    job = sent(add.message((1, 1)))
    began = time.monotonic()
    [message] = got(returned)
    assert time.monotonic() - began < 5 < FAR
    assert (message.id, message.attempts) == (job.id, 1)


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's write-ahead log")
def test_an_idle_sqlite_worker_promotes_a_job_when_it_is_due(settings):
    """A job scheduled while the worker sleeps wakes it (a commit), and its due time, by the
    database's clock, sets when the worker wakes next: it is promoted and claimed then, not at
    the wait's timeout, and not before."""
    settings.JOBQUEUE = {**settings.JOBQUEUE, "POLL_INTERVAL": FAR}
    broker = Counting()
    returned = waiting(broker)
    wait_until(lambda: broker.looks, message="the first look")
    job = sent(add.message((1, 1), countdown=0.5))
    began = time.monotonic()
    assert Job.objects.get(id=job.id).status == "scheduled"
    wait_until(lambda: broker.looks >= 2, message="the look after the commit")
    [message] = got(returned)
    assert 0.3 < time.monotonic() - began < 5 < FAR
    assert message.id == job.id
    row = Job.objects.get(id=job.id)
    assert row.status == "started" and row.run_at <= row.started_at


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's write-ahead log")
def test_an_idle_sqlite_worker_sleeps_through_writes_that_bring_no_job(settings):
    """Commits that queue nothing it serves (a job of another queue, a Worker row) cost it a
    look, not a claim, and it goes on sleeping."""
    settings.JOBQUEUE = {**settings.JOBQUEUE, "POLL_INTERVAL": FAR}
    broker = Counting()
    returned = waiting(broker)
    wait_until(lambda: broker.looks, message="the first look")
    sent(add.message((1, 1), queue="low"))
    wait_until(lambda: broker.looks >= 2, message="the look after the commit")
    assert returned.empty() and broker.claims == 0
    job = sent(add.message((2, 2)))
    [message] = got(returned)
    assert message.id == job.id and broker.claims == 1


@pytest.mark.skipif(connection.vendor != "postgresql", reason="LISTEN/NOTIFY")
def test_one_notification_wakes_one_idle_process_not_all(settings):
    """Three idle processes of the same queues: only one listens, the others wait for its
    lock. Each job sent is claimed by exactly one of them, with one claim: none is woken to
    race for it and find nothing."""
    settings.JOBQUEUE = {**settings.JOBQUEUE, "POLL_INTERVAL": FAR}
    brokers = [Counting() for _ in range(3)]
    returned = [waiting(broker) for broker in brokers]

    def lock_waiters():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
            )
            return cursor.fetchone()[0]

    wait_until(lambda: lock_waiters() == 2, message="one listener and two waiting for its lock")
    jobs = [add.message((i, i)) for i in range(3)]
    for n, job in enumerate(jobs, start=1):
        sent(job)
        wait_until(lambda n=n: sum(not r.empty() for r in returned) == n, timeout=5,
                   message=f"job {n} claimed")
        assert sum(b.claims for b in brokers) == n  # one claim per job: no race, no empty claim
    claimed = {got(r, timeout=0)[0].id for r in returned}
    assert claimed == {job.id for job in jobs}


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks, LISTEN/NOTIFY")
def test_a_queued_job_locked_by_a_transaction_is_waited_for_not_spun_on():
    """The look sees a queued job that SKIP LOCKED cannot take (a transaction holds its row):
    the idle process waits for news until its timeout instead of looking and claiming again
    and again."""
    import psycopg

    job = add.delay(1, 1)
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params) as holder:
        holder.execute("SELECT 1 FROM jobqueue_job WHERE id = %s FOR UPDATE", (job.id,))
        broker = Counting()
        try:
            began = time.monotonic()
            assert broker.wait_and_claim(["default"], "w", 1, timeout=0.5) == []
            assert time.monotonic() - began >= 0.45
            assert broker.claims <= 2  # after the look, and at the timeout
        finally:
            broker.close()
    [message] = DatabaseBroker().claim(["default"], "w", 1)
    assert message.id == job.id


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's data version")
def test_an_idle_sqlite_worker_skips_claims_only_while_nothing_was_written(broker):
    """After a look found nothing, a claim or promotion is skipped while the database is
    unchanged; a job sent by this very connection (a task sending another), or by another one,
    or a scheduled job coming due, is never hidden by that."""
    broker.wait(["default"], timeout=0)
    assert broker._quiet is not None
    assert broker.claim(["default"], "w", 1) == []
    assert broker.claim(["default", "high"], "w", 1) == [] and broker._quiet is not None
    mine = add.delay(1, 1)  # this thread's connection: its own change
    assert [m.id for m in broker.claim(["default"], "w", 1)] == [mine.id]
    broker.wait(["default"], timeout=0)
    theirs = sent(add.message((2, 2)))  # another connection's commit
    assert [m.id for m in broker.claim(["default"], "w", 1)] == [theirs.id]
    due = add.apply_async((3, 3), countdown=0.3)
    broker.wait(["default"], timeout=0)  # the look learns the due time
    assert broker.promote_due() == 0
    wait_until(broker.promote_due, timeout=5, message="the promotion at the due time")
    assert [m.id for m in broker.claim(["default"], "w", 1)] == [due.id]
