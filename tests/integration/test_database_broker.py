"""What only the database broker does (the shared contract: test_broker_contract.py)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from jobqueue.brokers.base import Outcome
from jobqueue.brokers.database import DatabaseBroker
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
