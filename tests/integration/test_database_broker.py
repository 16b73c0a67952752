"""What only the database broker does (the shared contract: test_broker_contract.py)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from jobqueue.brokers.base import Outcome
from jobqueue.brokers.database import DatabaseBroker
from jobqueue.models import Job
from jobqueue.states import JobStatus
from tests.testapp.tasks import add

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def broker():
    b = DatabaseBroker()
    yield b
    b.close()


def outcome(job_id, status, **fields):
    now = timezone.now()
    return Outcome(job_id, status, now, now, **fields)


def test_claim_sets_a_lease_in_the_row(broker):
    job = add.delay(1, 2)
    broker.claim(["default"], "w1", 1)
    assert Job.objects.get(id=job.id).lease_expires_at > timezone.now()


def test_finish_ends_the_lease_in_one_statement(broker):
    from django.test.utils import CaptureQueriesContext

    jobs = add.map([(1, 1), (2, 2), (3, 3)])
    broker.claim(["default"], "w", 10)
    later = timezone.now() + timedelta(hours=1)
    with CaptureQueriesContext(connection) as queries:
        broker.finish("w", [
            outcome(jobs[0].id, JobStatus.SUCCEEDED, result="2"),
            outcome(jobs[1].id, JobStatus.FAILED, error="ValueError: x", traceback="tb"),
            outcome(jobs[2].id, JobStatus.SCHEDULED, error="E: y", run_at=later),
        ])
    assert len(queries.captured_queries) == 1
    assert not Job.objects.filter(lease_expires_at__isnull=False).exists()


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite set-up")
def test_sqlite_is_set_up_for_many_processes():
    with connection.cursor() as cursor:
        assert cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert cursor.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    assert connection.transaction_mode == "IMMEDIATE"
