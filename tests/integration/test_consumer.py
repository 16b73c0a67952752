"""One worker child's loop, run in this process (burst mode) against the real database."""

import multiprocessing

import pytest
from django.test import override_settings
from django.utils import timezone

from jobqueue import JobFailed, JobResult, ResultExpired
from jobqueue.brokers.database import DatabaseBroker
from jobqueue.conf import get_settings
from jobqueue.consumer import Consumer
from jobqueue.message import new_job_id
from jobqueue.models import Job
from jobqueue.slot import Slot
from tests.testapp.models import Note
from tests.testapp.tasks import add, fail, fail_later, flaky, note_text

pytestmark = pytest.mark.django_db(transaction=True)


def drain(queues=("high", "default", "low")):
    context = multiprocessing.get_context("fork")
    broker = DatabaseBroker()
    slot = Slot(context, 2 * get_settings().MAX_BATCH + 2)
    try:
        Consumer(broker, queues, "test-worker", slot, context.RawValue("b", 0), burst=True).run()
    finally:
        broker.close()
    return {"jobs_done": slot.jobs_done, "slot": slot}


def bad_row(task="tests.testapp.tasks.add", arguments='{"args":[1,2],"kwargs":{}}'):
    now = timezone.now()
    return Job.objects.create(id=new_job_id(), task=task, queue="default", arguments=arguments,
                              enqueued_at=now, run_at=now)


def test_jobs_run_and_results_are_read_back():
    jobs = add.map([(i, 1) for i in range(30)])
    assert drain()["jobs_done"] == 30
    assert [j.get(timeout=0) for j in jobs] == [i + 1 for i in range(30)]
    assert {j.status for j in jobs} == {"succeeded"}
    row = jobs[0].job
    assert row.started_at <= row.ended_at
    assert row.duration is not None and row.duration >= 0


def test_failure_carries_the_remote_traceback():
    job = fail.delay("broken")
    drain()
    with pytest.raises(JobFailed) as info:
        job.get(timeout=0)
    assert (info.value.exc_type, info.value.exc_message) == ("ValueError", "broken")
    assert "raise ValueError(message)" in info.value.traceback
    assert "Remote traceback" in str(info.value)
    assert job.result is None


def test_retries_run_when_due_in_the_same_burst(tmp_path):
    job = flaky.delay(str(tmp_path / "count"), 3)
    drain()
    assert job.get(timeout=0) == 3
    row = job.job
    assert (row.attempts, row.status) == (3, "succeeded")


def test_a_retry_waits_for_its_backoff_in_scheduled():
    job = fail_later.delay("once")
    began = timezone.now()
    drain()
    row = job.job
    assert (row.status, row.attempts, row.error) == ("scheduled", 1, "ValueError: once")
    assert 1800 <= (row.run_at - began).total_seconds() <= 3600


def test_retries_give_up_after_max_retries(tmp_path):
    job = flaky.delay(str(tmp_path / "count"), 10)
    drain()
    row = job.job
    assert (row.status, row.attempts) == ("failed", 3)
    assert row.error == "RuntimeError: try 3 fails"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"task": "os.system"}, "UnknownTask: no task named 'os.system'"),
        ({"arguments": "{not json"}, "DecodeError: not valid JSON"),
        ({"arguments": '{"args": 1, "kwargs": {}}'}, 'DecodeError: arguments must be'),
        ({"arguments": '{"args":[{"$jq":"pickle","v":"x"}],"kwargs":{}}'}, "unknown tagged value"),
    ],
)
def test_bad_messages_fail_with_a_reason_and_the_worker_carries_on(fields, reason):
    bad = bad_row(**fields)
    good = add.delay(1, 1)
    drain()
    bad.refresh_from_db()
    assert bad.status == "failed"
    assert reason in bad.error
    assert bad.attempts == 1  # no retry for input that cannot get better
    assert good.get(timeout=0) == 2


def test_a_deleted_model_instance_fails_the_job_clearly():
    note = Note.objects.create(text="x")
    job = note_text.delay(note)
    note.delete()
    drain()
    with pytest.raises(JobFailed, match=r"testapp.Note with pk=\d+ no longer exists"):
        job.get(timeout=0)


def test_model_instance_is_fetched_fresh():
    note = Note.objects.create(text="old")
    job = note_text.delay(note)
    Note.objects.filter(pk=note.pk).update(text="new")
    drain()
    assert job.get(timeout=0) == "new"


def test_queues_not_served_are_left_alone():
    job = add.apply_async((1, 1), queue="low")
    drain(queues=["default"])
    assert job.status == "queued"


def test_get_times_out_on_a_waiting_job():
    job = add.delay(1, 1)
    with pytest.raises(TimeoutError, match="still queued"):
        job.get(timeout=0.05)


def test_cancel_before_it_runs():
    job = add.delay(1, 1)
    assert job.cancel()
    drain()
    assert job.status == "canceled"
    with pytest.raises(JobFailed):
        job.get(timeout=0)
    assert not job.cancel()


def test_results_expire_after_result_ttl():
    job = add.delay(1, 1)
    drain()
    with override_settings(JOBQUEUE={"RESULT_TTL": 0}):
        with pytest.raises(ResultExpired):
            job.get(timeout=0)
        assert DatabaseBroker().expire_results() == 1
    assert job.job.result is None
    assert job.status == "succeeded"


def test_unknown_id_is_job_not_found():
    from jobqueue import JobNotFound

    with pytest.raises(JobNotFound):
        _ = JobResult(new_job_id()).status
    with pytest.raises(ValueError, match="not a job id"):
        JobResult("not-a-uuid")


def test_an_ack_that_fails_keeps_its_outcomes_and_is_retried_before_claiming_more():
    """Issue case 5: a flush that raises forgot the rest of its batch; now the outcomes stay
    (in the slot too) and are acknowledged before anything more is claimed."""
    from tests.testapp.brokers import FlakyFinishBroker
    from tests.testapp.models import Run
    from tests.testapp.worker_tasks import count

    jobs = [count.delay(f"k{i}") for i in range(5)]
    context = multiprocessing.get_context("fork")
    broker = FlakyFinishBroker(failures=2)
    slot = Slot(context, 2 * get_settings().MAX_BATCH + 2)
    try:
        Consumer(broker, ["default"], "w", slot, context.RawValue("b", 0), burst=True).run()
    finally:
        broker.close()
    assert [j.status for j in jobs] == ["succeeded"] * 5
    assert sorted(Run.objects.values_list("key", flat=True)) == [f"k{i}" for i in range(5)]
    calls = broker.calls
    first_failure = calls.index("finish-failed")
    # From the first failed ack on, nothing is claimed until an ack went through.
    assert "claim" not in calls[first_failure : calls.index("finish")]
    assert calls.count("finish-failed") == 2
    assert slot.header.buffered == 0


def test_a_job_dropped_by_the_supervisor_is_not_started():
    """A job of the batch that was canceled (or is no longer this child's) before its turn is
    skipped: its run would be refused anyway."""
    from tests.testapp.models import Run
    from tests.testapp.worker_tasks import count

    first, second = count.delay("first"), count.delay("second")
    context = multiprocessing.get_context("fork")
    broker = DatabaseBroker()
    slot = Slot(context, 8)
    consumer = Consumer(broker, ["default"], "w", slot, context.RawValue("b", 0))
    try:
        messages = broker.claim(["default"], "w", 2)
        slot.claimed(messages)
        assert second.cancel()
        slot.drop({second.id})  # what the supervisor does on seeing the cancel
        consumer.run_batch(messages)
        consumer.flush()
    finally:
        broker.close()
    assert list(Run.objects.values_list("key", flat=True)) == ["first"]
    assert (first.status, second.status) == ("succeeded", "canceled")
    assert slot.leases() == {}
