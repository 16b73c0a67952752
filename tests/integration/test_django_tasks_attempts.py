"""The failed attempts both brokers record (``JobAttempt``, read by ``TaskResult.errors`` and
``worker_ids``) and ``job_finished``, sent once a final outcome is stored: through the Broker
interface, on each broker. A run that succeeds records nothing; a failure retried or final, a
lost run (released or recovered) records its attempt once, whatever is replayed; a stale token
records nothing; a requeue starts afresh and a purge takes the attempts with the job."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from jobqueue.brokers import Broker, get_broker
from jobqueue.brokers.base import Outcome, job_finished
from jobqueue.brokers.redis.tracking import Event, Tracker
from jobqueue.message import Message
from jobqueue.models import Job, JobAttempt
from jobqueue.states import JobStatus
from tests.conftest import wait_until
from tests.testapp.tasks import add


def ended(message: Message, status: JobStatus, **fields) -> Outcome:
    now = timezone.now()
    return Outcome(message.id, status, now, now, token=message.token, task=message.task, **fields)


def retry(message: Message, error: str = "ValueError: no") -> Outcome:
    return ended(
        message,
        JobStatus.SCHEDULED,
        error=error,
        traceback=f"Traceback (most recent call last):\n{error}\n",
        run_at=timezone.now(),
        delay=0.0,
    )


def attempts(broker: Broker, job_id: str) -> list[tuple[int, str, str]]:
    broker.sync()
    return [
        (a.number, a.worker, a.error)
        for a in JobAttempt.objects.filter(job_id=job_id).order_by("number")
    ]


def claim(broker: Broker, worker: str) -> Message:
    [message] = broker.claim(["default"], worker, 1)
    return message


@pytest.fixture
def announced():
    """The ``job_finished`` signals sent, with what the broker held for the job by then."""
    seen: list[tuple[str, str, str, str]] = []

    def receiver(sender, job_id, task, status, **kwargs):
        seen.append((job_id, task, status, get_broker().state(job_id).status))

    job_finished.connect(receiver)
    yield seen
    job_finished.disconnect(receiver)


def test_a_success_records_no_attempt(broker, announced):
    job = add.delay(1, 1)
    message = claim(broker, "w1")
    assert broker.finish("w1", [ended(message, JobStatus.SUCCEEDED, result="2")]) == 1
    assert attempts(broker, job.id) == []
    assert announced == [(job.id, add.name, "succeeded", "succeeded")]


def test_each_failed_run_is_recorded_once_with_its_worker(broker, announced):
    job = add.delay(1, 1)
    first = claim(broker, "w1")
    assert broker.finish("w1", [retry(first, "ValueError: first")]) == 1
    assert broker.finish("w1", [retry(first, "ValueError: again")]) == 0  # stale: refused
    assert announced == []  # retried: not finished
    broker.promote_due()
    second = claim(broker, "w2")
    final = ended(second, JobStatus.FAILED, error="KeyError: 'last'", traceback="tb")
    assert broker.finish("w2", [final]) == 1
    assert broker.finish("w2", [final]) == 0

    assert attempts(broker, job.id) == [
        (1, "w1", "ValueError: first"),
        (2, "w2", "KeyError: 'last'"),
    ]
    [record] = JobAttempt.objects.filter(job_id=job.id, number=1)
    assert record.traceback == "Traceback (most recent call last):\nValueError: first\n"
    assert record.started_at is not None and record.ended_at >= record.started_at
    assert announced == [(job.id, add.name, "failed", "failed")]  # once, after it was stored


def test_a_stale_token_records_nothing(broker, announced):
    job = add.delay(1, 1)
    message = claim(broker, "w1")
    assert job.cancel()
    assert broker.finish("w1", [ended(message, JobStatus.FAILED, error="E: x")]) == 0
    assert attempts(broker, job.id) == []
    assert [status for _, _, status, _ in announced] == ["canceled"]  # the cancel, not the run


def test_lost_runs_are_recorded_as_worker_lost(broker, announced):
    job = add.delay(1, 1)
    first = claim(broker, "w1")
    assert broker.release("w1", [first.lease], lost="signal 9") == 1
    assert broker.release("w1", [first.lease], lost="signal 9") == 0  # replayed: refused
    second = claim(broker, "w2")
    assert broker.release("w2", [second.lease], lost="exit code 3") == 1  # its last chance

    recorded = attempts(broker, job.id)
    assert [(n, worker) for n, worker, _ in recorded] == [(1, "w1"), (2, "w2")]
    assert recorded[0][2] == "WorkerLost: its worker process died (signal 9)"
    assert recorded[1][2].startswith(
        "WorkerLost: its worker process died (exit code 3) on attempt 2"
    )
    assert announced == [(job.id, add.name, "failed", "failed")]  # once failed for good
    row = Job.objects.get(id=job.id)
    assert (row.status, row.worker) == ("failed", "w2")


@pytest.mark.jobqueue(LEASE_TIMEOUT=0.2)
def test_a_recovered_run_is_recorded_and_a_renewed_one_is_not(broker, announced):
    dead, live = add.map([(1, 1), (2, 2)])
    claim(broker, "dead")
    running = claim(broker, "live")

    def recovered() -> int:
        assert broker.renew("live", [running.lease]) == set()
        return broker.recover()

    wait_until(lambda: recovered() == 1, message="the dead worker's lease to be recovered")
    assert attempts(broker, dead.id) == [
        (1, "dead", "WorkerLost: its worker process died (its worker stopped renewing its lease)")
    ]
    assert attempts(broker, live.id) == []
    assert announced == []  # the first loss is retried
    row = Job.objects.get(id=dead.id)
    assert (row.status, row.worker, row.started_at) == ("queued", "", None)


@pytest.mark.jobqueue(LEASE_TIMEOUT=0.2)
def test_a_run_recovered_for_the_last_time_fails_and_is_announced(broker, announced):
    job = add.delay(1, 1)
    for number in (1, 2):
        claim(broker, f"dead{number}")
        wait_until(lambda: broker.recover() == 1, message="the lease to be recovered")
    recorded = attempts(broker, job.id)
    assert [(n, worker) for n, worker, _ in recorded] == [(1, "dead1"), (2, "dead2")]
    assert recorded[1][2].startswith(
        "WorkerLost: its worker process died (its worker stopped renewing its lease) on attempt 2"
    )
    assert announced == [(job.id, add.name, "failed", "failed")]


@pytest.mark.parametrize("running", [False, True])
def test_a_cancel_is_announced_once_it_is_stored(broker, announced, running):
    """A canceled job has finished for good too (a running one is then killed, and whatever
    its worker tells the broker after is refused, so the cancel is its only end)."""
    job = add.delay(1, 1)
    if running:
        message = claim(broker, "w1")
    assert job.cancel()
    assert not job.cancel()
    if running:
        assert broker.release("w1", [message.lease], lost="canceled") == 0
    assert announced == [(job.id, add.name, "canceled", "canceled")]


def test_a_requeue_starts_afresh_and_a_purge_takes_the_attempts(broker):
    job = add.delay(1, 1)
    message = claim(broker, "w1")
    assert broker.finish("w1", [ended(message, JobStatus.FAILED, error="E: 1")]) == 1
    assert [n for n, _, _ in attempts(broker, job.id)] == [1]

    assert broker.requeue([job.id]) == 1
    assert attempts(broker, job.id) == []
    again = claim(broker, "w2")
    assert again.attempts == 1
    assert broker.finish("w2", [ended(again, JobStatus.FAILED, error="E: 2")]) == 1
    assert attempts(broker, job.id) == [(1, "w2", "E: 2")]

    Job.objects.filter(id=job.id).update(ended_at=timezone.now() - timedelta(days=2))
    assert broker.purge_finished(timedelta(days=1)) == 1
    assert not JobAttempt.objects.filter(job_id=job.id).exists()


def test_deleting_jobs_deletes_their_attempts(broker):
    kept, gone, alone = add.map([(1, 1), (2, 2), (3, 3)])
    assert kept.id not in (gone.id, alone.id)
    for _ in range(3):
        message = claim(broker, "w")
        assert broker.finish("w", [ended(message, JobStatus.FAILED, error="E: x")]) == 1
    broker.sync()
    Job.objects.filter(id=gone.id).delete()
    Job.objects.get(id=alone.id).delete()
    assert list(JobAttempt.objects.values_list("job_id", flat=True)) == [Job.objects.get().id]
    assert Job.objects.get().id == uuid.UUID(kept.id)


# -- the Redis broker's projection ------------------------------------------------------------
def failure_event(job_id: str, number: int, version: int, status: str = "scheduled") -> Event:
    payload = json.dumps(
        {
            "status": status,
            "result": None,
            "error": f"E: {number}",
            "traceback": f"tb {number}",
            "started_ms": 1700000000000,
            "ended_ms": 1700000001000,
        }
    )
    data = {"status": status, "attempts": str(number), "worker": f"w{number}", "p": payload}
    return Event("f", job_id, version, data)


@pytest.mark.django_db(transaction=True)
def test_tracking_records_attempts_once_whatever_is_replayed():
    job = add.message(args=(1, 1))
    Job.from_message(job).save()
    first, second = failure_event(job.id, 1, 10), failure_event(job.id, 2, 20, "failed")
    tracker = Tracker()
    tracker.apply([], [first, second])
    tracker.apply([], [second, first, first])  # replayed, reordered, repeated
    assert list(JobAttempt.objects.values_list("number", "worker", "error", "version")) == [
        (1, "w1", "E: 1", 10),
        (2, "w2", "E: 2", 20),
    ]
    # A requeue forgets the attempts before it, not those after; replaying it changes nothing.
    requeued = Event("r", job.id, 30)
    later = failure_event(job.id, 1, 40)
    tracker.apply([], [requeued, later])
    tracker.apply([], [first, requeued, later])
    assert list(JobAttempt.objects.values_list("number", "version")) == [(1, 40)]


@pytest.mark.django_db(transaction=True)
def test_on_the_database_broker_a_batch_of_successes_is_one_statement():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from jobqueue.brokers.database import DatabaseBroker

    broker = DatabaseBroker()
    add.map([(1, 1), (2, 2)])
    messages = broker.claim(["default"], "w", 10)
    with CaptureQueriesContext(connection) as queries:
        done = [ended(m, JobStatus.SUCCEEDED, result="2") for m in messages]
        assert broker.finish("w", done) == 2
    assert len(queries.captured_queries) == 1  # no transaction, no attempt, no read


@pytest.mark.django_db(transaction=True)
def test_the_job_page_shows_its_failed_attempts(admin_client):
    from django.urls import reverse

    from jobqueue.brokers.database import DatabaseBroker

    broker = DatabaseBroker()
    job = add.delay(1, 1)
    first = claim(broker, "host.1/1")
    assert broker.finish("host.1/1", [retry(first, "ValueError: the first one")]) == 1
    broker.promote_due()
    claim(broker, "host.1/2")

    response = admin_client.get(reverse("admin:jobqueue_job_change", args=[job.id]))
    assert response.status_code == 200
    page = response.content.decode()
    assert "failed attempts" in page.lower()
    assert "ValueError: the first one" in page
    assert "host.1/1" in page
    assert "Traceback (most recent call last)" in page
