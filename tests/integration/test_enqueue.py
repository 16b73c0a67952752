"""Sending jobs: rows, options, transactions, EAGER mode."""

import pytest
from django.db import connection, transaction
from django.test import override_settings

from jobqueue import JobFailed, JobResult
from jobqueue.models import Job
from tests.testapp.models import Note
from tests.testapp.tasks import add, fail, flaky, make_note, note_text, urgent

pytestmark = pytest.mark.django_db(transaction=True)


def test_delay_writes_a_queued_row():
    job = add.delay(2, 3)
    row = Job.objects.get(id=job.id)
    assert (row.task, row.queue, row.status, row.attempts) == (add.name, "default", "queued", 0)
    assert row.arguments == '{"args":[2,3],"kwargs":{}}'
    assert job.status == "queued"


def test_apply_async_options():
    job = urgent.apply_async((1,), queue="low", countdown=60, priority=7)
    row = Job.objects.get(id=job.id)
    assert (row.queue, row.priority, row.status) == ("low", 7, "scheduled")
    assert 59 < (row.run_at - row.enqueued_at).total_seconds() <= 60


def test_map_sends_many_in_one_statement():
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        jobs = add.map([(i, i) for i in range(50)])
    inserts = [q for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) <= 2  # SQLite: Django splits a statement past 999 parameters
    assert Job.objects.filter(id__in=[j.id for j in jobs]).count() == 50


def test_refused_arguments_write_nothing():
    with pytest.raises(TypeError, match="argument 'y'"):
        add.delay(1, object())
    assert not Job.objects.exists()


def test_delay_in_a_transaction_lands_with_its_commit():
    with transaction.atomic():
        job = add.delay(1, 1)
    assert Job.objects.filter(id=job.id).exists()


def test_rollback_sends_nothing():
    with pytest.raises(RuntimeError), transaction.atomic():
        add.delay(1, 1)
        raise RuntimeError("roll back")
    assert not Job.objects.exists()


@override_settings(JOBQUEUE={"EAGER": True})
def test_eager_runs_inline_after_commit_and_records_the_row():
    with transaction.atomic():
        job = add.delay(2, 2)
        assert not Job.objects.filter(id=job.id).exists()
    assert job.get(timeout=0) == 4
    assert Job.objects.get(id=job.id).status == "succeeded"


@override_settings(JOBQUEUE={"EAGER": True})
def test_eager_rollback_runs_nothing():
    with pytest.raises(RuntimeError), transaction.atomic():
        make_note.delay("never")
        raise RuntimeError
    assert not Note.objects.exists()


@override_settings(JOBQUEUE={"EAGER": True})
def test_eager_round_trips_arguments_and_models():
    note = Note.objects.create(text="hello")
    assert note_text.delay(note).get() == "hello"
    with pytest.raises(TypeError):
        add.delay(1, {1, 2})


@override_settings(JOBQUEUE={"EAGER": True})
def test_eager_failure_and_retries(tmp_path):
    with pytest.raises(JobFailed) as info:
        fail.delay("nope").get()
    assert info.value.exc_type == "ValueError"
    assert "raise ValueError(message)" in info.value.traceback
    job = flaky.delay(str(tmp_path / "count"), 3)
    assert job.get() == 3
    assert JobResult(job.id).job.attempts == 3
