"""What every broker promises (DESIGN.md, "Broker semantics"): one suite, run on each broker.

Only the Broker interface, ``task.delay()``/``apply_async()``/``map()``, ``JobResult`` and (after
``broker.sync()``) the Job table are used here; what is one broker's own business is tested in that
broker's file.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from datetime import timedelta

import pytest
from django.db import connections, transaction
from django.utils import timezone

from jobqueue import JobFailed, JobNotFound, JobResult
from jobqueue.brokers import Broker, load_broker_class
from jobqueue.brokers.base import Outcome
from jobqueue.conf import get_settings
from jobqueue.consumer import Consumer
from jobqueue.message import Lease, Message, new_job_id
from jobqueue.models import Job
from jobqueue.slot import Slot
from jobqueue.states import JobStatus
from tests.conftest import wait_until
from tests.testapp.tasks import add, fail, fail_later, flaky, stuck_in_c, urgent

ALL = ("high", "default", "low")


def claim_ids(broker: Broker, queues=ALL, worker="w", limit=100) -> list[str]:
    return [m.id for m in broker.claim(list(queues), worker, limit)]


def take(broker: Broker, queues=ALL, worker="w", limit=100) -> dict[str, Message]:
    """Claim, and keep the messages (their tokens) by job id."""
    return {m.id: m for m in broker.claim(list(queues), worker, limit)}


def outcome(message: Message | Lease, status: JobStatus, **fields) -> Outcome:
    """How the run of a claimed ``message`` ended (its token is the claim's)."""
    now = timezone.now()
    if isinstance(message, Message):
        message = message.lease
    return Outcome(message.job_id, status, now, now, token=message.token, **fields)


def rows(broker: Broker) -> dict[str, Job]:
    """The Job table once the broker has written what it has to say."""
    broker.sync()
    return {str(row.id): row for row in Job.objects.all()}


def status(broker: Broker, job: JobResult) -> str:
    return broker.state(job.id).status


def another_broker() -> Broker:
    """A second instance of the configured broker, with connections of its own."""
    conf = get_settings().BROKER
    return load_broker_class(conf["BACKEND"])(**conf.get("OPTIONS", {}))


def drain(broker: Broker, queues=ALL) -> int:
    """Run one worker child's loop here in burst mode; how many jobs it ran."""
    context = multiprocessing.get_context("fork")
    slot = Slot(context, 2 * get_settings().MAX_BATCH + 2)
    Consumer(broker, queues, "test-worker", slot, context.RawValue("b", 0), burst=True).run()
    return slot.jobs_done


# -- sending ------------------------------------------------------------------------------------


def test_delay_in_a_transaction_is_sent_when_it_commits(broker):
    with transaction.atomic():
        job = add.delay(1, 1)
    assert status(broker, job) == "queued"
    assert claim_ids(broker) == [job.id]


def test_delay_in_a_rolled_back_transaction_is_never_sent(broker):
    with pytest.raises(RuntimeError), transaction.atomic():
        job = add.delay(1, 1)
        raise RuntimeError("roll back")
    assert claim_ids(broker) == []
    with pytest.raises(JobNotFound):
        broker.state(job.id)
    assert rows(broker) == {}


def test_map_sends_every_job_in_order(broker):
    jobs = add.map([(i, i) for i in range(1201)])
    assert claim_ids(broker, limit=2000) == [j.id for j in jobs]
    assert len(rows(broker)) == 1201


# -- claiming ------------------------------------------------------------------------------------


def test_claim_order_queues_then_priority_then_fifo(broker):
    low = add.apply_async((0, 0), queue="low", priority=100)
    last = add.apply_async((9, 9), priority=-100)
    first = add.delay(1, 1)
    second = add.delay(2, 2)
    important = add.apply_async((3, 3), priority=10)
    high = urgent.delay(4)
    assert claim_ids(broker) == [high.id, important.id, first.id, second.id, last.id, low.id]


def test_queues_are_served_in_the_order_given(broker):
    low = add.apply_async((0, 0), queue="low")
    high = urgent.delay(1)
    default = add.delay(1, 1)
    assert claim_ids(broker, ["low", "high"]) == [low.id, high.id]
    assert claim_ids(broker, ["default", "high"]) == [default.id]


def test_claim_respects_queue_selection_and_limit(broker):
    jobs = add.map([(i, i) for i in range(5)])
    urgent.delay(1)
    assert claim_ids(broker, ["default"], limit=2) == [jobs[0].id, jobs[1].id]
    assert claim_ids(broker, ["default"], limit=10) == [j.id for j in jobs[2:]]
    assert claim_ids(broker, ["default"]) == []
    assert len(claim_ids(broker, ["high"])) == 1


def test_claim_hands_out_the_message_and_counts_the_attempt(broker):
    job = add.delay(1, 2)
    [message] = broker.claim(["default"], "w1", 1)
    assert (message.id, message.task, message.arguments, message.queue, message.attempts) == (
        job.id, "tests.testapp.tasks.add", '{"args":[1,2],"kwargs":{}}', "default", 1)
    assert status(broker, job) == "started"
    row = rows(broker)[job.id]
    assert (row.status, row.worker, row.attempts) == ("started", "w1", 1)
    assert row.started_at is not None
    assert claim_ids(broker) == []  # leased: nobody else gets it


def test_a_message_carries_its_task_options_and_arguments_intact(broker):
    retried = flaky.apply_async(("p|ath\n", 2), priority=-5)
    limited = stuck_in_c.apply_async(("é|}{",), queue="low")
    by_id = {m.id: m for m in broker.claim(list(ALL), "w", 2)}
    message = by_id[retried.id]
    assert (message.task, message.queue, message.priority, message.max_retries) == (
        flaky.name, "default", -5, 2)
    assert message.timeout is None
    assert json.loads(message.arguments) == {"args": ["p|ath\n", 2], "kwargs": {}}
    message = by_id[limited.id]
    assert (message.queue, message.timeout, message.max_retries) == ("low", 1.0, 0)
    assert json.loads(message.arguments) == {"args": ["é|}{"], "kwargs": {}}


def test_no_job_is_claimed_twice_by_concurrent_claimers(broker):
    """Threads, each with a broker (and connections) of its own, race for the same jobs."""
    jobs = add.map([(i, i) for i in range(200)])
    claimed: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def claimer(name: str) -> None:
        mine = another_broker()
        try:
            while batch := mine.claim(["default"], name, 7):
                with lock:
                    claimed.extend(m.id for m in batch)
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
        finally:
            mine.close()
            connections.close_all()

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(claimed) == sorted(j.id for j in jobs)


# -- scheduled jobs ------------------------------------------------------------------------------


def test_scheduled_jobs_wait_for_their_time(broker):
    later = add.apply_async((1, 1), countdown=3600)
    soon = add.apply_async((2, 2), countdown=1)
    assert status(broker, soon) == "scheduled"
    assert claim_ids(broker) == []
    assert broker.promote_due() == 0
    assert wait_until(broker.promote_due, timeout=10, message="the job to come due") == 1
    assert status(broker, soon) == "queued"
    assert claim_ids(broker) == [soon.id]
    assert status(broker, later) == "scheduled"
    assert rows(broker)[later.id].status == "scheduled"


def test_a_past_eta_is_queued_at_once(broker):
    job = add.apply_async((1, 1), eta=timezone.now() - timedelta(seconds=5))
    assert status(broker, job) == "queued"
    assert claim_ids(broker) == [job.id]


# -- finishing -----------------------------------------------------------------------------------


def test_finish_records_succeeded_failed_and_retry_scheduled(broker):
    ok, bad, retry = add.map([(1, 1), (2, 2), (3, 3)])
    held = take(broker)
    later = timezone.now() + timedelta(hours=1)
    assert broker.finish("w", [
        outcome(held[ok.id], JobStatus.SUCCEEDED, result="2"),
        outcome(held[bad.id], JobStatus.FAILED, error="ValueError: x", traceback="tb"),
        outcome(held[retry.id], JobStatus.SCHEDULED, error="E: y", run_at=later),
    ]) == 3
    assert [status(broker, j) for j in (ok, bad, retry)] == ["succeeded", "failed", "scheduled"]
    table = rows(broker)
    assert (table[ok.id].status, table[ok.id].result, table[ok.id].attempts) == (
        "succeeded", "2", 1)
    assert table[ok.id].ended_at is not None
    assert (table[bad.id].status, table[bad.id].error, table[bad.id].traceback) == (
        "failed", "ValueError: x", "tb")
    assert (table[retry.id].status, table[retry.id].run_at, table[retry.id].ended_at) == (
        "scheduled", later, None)
    assert claim_ids(broker) == []
    assert broker.promote_due() == 0  # the retry waits for its time


def test_a_retry_that_is_due_runs_again_with_its_attempt_counted(broker):
    job = add.delay(1, 1)
    [message] = broker.claim(["default"], "w", 1)
    due = timezone.now() - timedelta(seconds=1)
    broker.finish("w", [outcome(message, JobStatus.SCHEDULED, error="E: y", run_at=due)])
    broker.promote_due()
    [again] = broker.claim(["default"], "w", 1)
    assert (again.id, again.attempts) == (job.id, 2)
    assert again.token > message.token


def test_finish_ignores_jobs_the_worker_no_longer_holds(broker):
    canceled, other = add.map([(1, 1), (2, 2)])
    held = take(broker)
    assert broker.cancel(canceled.id)
    assert broker.finish("w", [
        outcome(held[canceled.id], JobStatus.SUCCEEDED, result="2"),
        outcome(held[other.id], JobStatus.SUCCEEDED, result="4"),
    ]) == 1
    assert status(broker, canceled) == "canceled"
    assert status(broker, other) == "succeeded"
    assert rows(broker)[canceled.id].status == "canceled"


def test_finish_by_a_worker_whose_lease_was_recovered_is_ignored(broker):
    job = add.delay(1, 1)
    [late] = broker.claim(["default"], "late", 1)
    assert broker.release("late", [late.lease], lost="signal 19") == 1  # as recover() does
    [current] = broker.claim(["default"], "other", 1)
    assert broker.finish("late", [outcome(late, JobStatus.FAILED, error="E: stale")]) == 0
    assert status(broker, job) == "started"
    assert broker.finish("other", [outcome(current, JobStatus.SUCCEEDED, result="2")]) == 1
    assert job.get(timeout=0) == 2
    assert rows(broker)[job.id].worker == "other"


def test_a_stale_token_is_refused_by_finish_release_and_renew(broker):
    job = add.delay(1, 1)
    [first] = broker.claim(["default"], "w", 1)
    assert broker.release("w", [first.lease], lost="exit code 1") == 1
    [second] = broker.claim(["default"], "w", 1)  # the same worker name: only tokens tell
    assert second.token > first.token
    assert broker.renew("w", [first.lease]) == {job.id}
    assert broker.release("w", [first.lease]) == 0
    assert broker.release("w", [first.lease], lost="signal 9") == 0
    assert broker.finish("w", [outcome(first, JobStatus.FAILED, error="E: stale")]) == 0
    assert status(broker, job) == "started"
    assert broker.renew("w", [second.lease]) == set()
    assert broker.finish("w", [outcome(second, JobStatus.SUCCEEDED, result="2")]) == 1
    assert job.get(timeout=0) == 2
    assert rows(broker)[job.id].attempts == 2


def test_finishing_twice_changes_nothing_more(broker):
    job = add.delay(1, 1)
    [message] = broker.claim(["default"], "w", 1)
    assert broker.finish("w", [outcome(message, JobStatus.SUCCEEDED, result="2")]) == 1
    assert broker.finish("w", [outcome(message, JobStatus.FAILED, error="E: late")]) == 0
    assert broker.release("w", [message.lease], lost="signal 9") == 0
    assert broker.renew("w", [message.lease]) == {job.id}
    assert job.get(timeout=0) == 2
    assert rows(broker)[job.id].status == "succeeded"


# -- giving jobs back ----------------------------------------------------------------------------


def test_release_returns_jobs_and_gives_back_attempts_of_jobs_that_never_ran(broker):
    ran, never_ran = add.map([(1, 1), (2, 2)])
    held = take(broker)
    assert broker.release("w", [held[ran.id].lease], lost="exit code 3") == 1
    assert broker.release("w", [held[never_ran.id].lease]) == 1
    assert broker.release("w", [m.lease for m in held.values()]) == 0
    assert [status(broker, j) for j in (ran, never_ran)] == ["queued", "queued"]
    table = rows(broker)
    assert (table[ran.id].attempts, table[never_ran.id].attempts) == (1, 0)
    assert "exit code 3" in table[ran.id].error
    assert (table[ran.id].worker, table[never_ran.id].worker) == ("", "")
    again = {m.id: m.attempts for m in broker.claim(["default"], "w2", 2)}
    assert again == {ran.id: 2, never_ran.id: 1}


def test_a_job_given_back_unrun_keeps_its_place_at_the_front(broker):
    first, second, third = add.map([(1, 1), (2, 2), (3, 3)])
    [message] = broker.claim(["default"], "w", 1)
    assert message.id == first.id
    assert broker.release("w", [message.lease]) == 1
    urgent_job = add.apply_async((4, 4), priority=5)
    assert claim_ids(broker, limit=4) == [urgent_job.id, first.id, second.id, third.id]


@pytest.mark.parametrize("lost", ["exit code 3", "signal 9"])
def test_a_lost_run_goes_to_the_back_of_its_queue_like_a_retry(broker, lost):
    first, second = add.map([(1, 1), (2, 2)])
    [message] = broker.claim(["default"], "w", 1)
    assert broker.release("w", [message.lease], lost=lost) == 1
    third = add.delay(3, 3)
    important = add.apply_async((4, 4), priority=1)
    assert claim_ids(broker) == [important.id, second.id, first.id, third.id]


def test_queue_order_a_retry_re_enters_at_the_back(broker):
    first, second = add.map([(1, 1), (2, 2)])
    [message] = broker.claim(["default"], "w", 1)
    broker.finish("w", [outcome(message, JobStatus.SCHEDULED, error="E: y",
                                run_at=timezone.now() - timedelta(seconds=1))])
    broker.promote_due()
    assert claim_ids(broker) == [second.id, first.id]


def test_poison_pill_a_job_whose_process_keeps_dying_fails(broker):
    """The first loss always gets another run (even with max_retries=0); once attempts pass
    max_retries, a lost run fails the job with WorkerLost."""
    job = add.delay(1, 1)  # max_retries=0
    other = add.delay(2, 2)
    [first] = broker.claim(["default"], "w", 1)
    assert broker.release("w", [first.lease], lost="exit code 3") == 1
    assert status(broker, job) == "queued"
    held = take(broker)
    assert list(held) == [other.id, job.id]  # the lost run went behind the other job
    assert broker.release("w", [held[job.id].lease], lost="signal 9") == 1
    assert status(broker, job) == "failed"
    row = rows(broker)[job.id]
    assert row.attempts == 2
    assert row.ended_at is not None
    assert row.error.startswith("WorkerLost: its worker process died (signal 9) on attempt 2")
    with pytest.raises(JobFailed, match="WorkerLost"):
        job.get(timeout=0)
    assert claim_ids(broker) == []


def test_poison_pill_counts_every_lost_run_up_to_max_retries_plus_one(broker, tmp_path):
    job = flaky.delay(str(tmp_path / "tries"), 99)  # max_retries=2
    for attempt in (1, 2, 3):
        [message] = broker.claim(["default"], "w", 1)
        assert message.attempts == attempt
        broker.release("w", [message.lease], lost="exit code 3")
    assert status(broker, job) == "failed"
    assert rows(broker)[job.id].attempts == 3


def test_release_leaves_other_workers_jobs_alone(broker):
    mine, theirs = add.map([(1, 1), (2, 2)])
    [my_message] = broker.claim(["default"], "me", 1)
    [their_message] = broker.claim(["default"], "them", 1)
    assert broker.release("me", [Lease(theirs.id, their_message.token - 1)]) == 0
    assert broker.release("me", [my_message.lease]) == 1
    assert (status(broker, mine), status(broker, theirs)) == ("queued", "started")
    assert broker.renew("them", [their_message.lease]) == set()


@pytest.mark.jobqueue(LEASE_TIMEOUT=0.2)
def test_expired_leases_are_recovered_and_renewed_ones_kept(broker):
    dead, live = add.map([(1, 1), (2, 2)])
    broker.claim(["default"], "dead", 1)
    [running] = broker.claim(["default"], "live", 1)
    assert broker.recover() == 0  # both leases are fresh

    def recovered() -> int:
        assert broker.renew("live", [running.lease]) == set()  # a live worker's heartbeat
        return broker.recover()

    assert wait_until(recovered, timeout=5, message="the dead worker's lease to expire") == 1
    assert (status(broker, dead), status(broker, live)) == ("queued", "started")
    [again] = broker.claim(["default"], "other", 1)
    assert (again.id, again.attempts) == (dead.id, 2)
    table = rows(broker)
    assert (table[dead.id].worker, table[live.id].worker) == ("other", "live")


# -- operators -----------------------------------------------------------------------------------


def test_cancel_takes_a_job_out_of_its_queue(broker):
    waiting, scheduled, kept = add.map([(1, 1), (2, 2), (3, 3)])
    later = add.apply_async((4, 4), countdown=3600)
    assert broker.cancel(waiting.id)
    assert broker.cancel(later.id)
    assert not broker.cancel(waiting.id)
    assert claim_ids(broker) == [scheduled.id, kept.id]
    assert (status(broker, waiting), status(broker, later)) == ("canceled", "canceled")
    with pytest.raises(JobFailed, match="canceled"):
        waiting.get(timeout=0)
    table = rows(broker)
    assert (table[waiting.id].status, table[later.id].status) == ("canceled", "canceled")
    assert table[waiting.id].ended_at is not None


def test_cancel_a_running_job_tells_its_supervisor(broker):
    running, other = add.map([(1, 1), (2, 2)])
    held = take(broker)
    assert broker.canceled([running.id, other.id]) == set()
    assert running.cancel()
    assert broker.canceled([running.id, other.id]) == {running.id}
    assert broker.renew("w", [m.lease for m in held.values()]) == {running.id}


def test_a_canceled_running_job_is_not_given_back(broker):
    job = add.delay(1, 1)
    [message] = broker.claim(["default"], "w", 1)
    assert job.cancel()
    # What its supervisor does after the kill:
    assert broker.release("w", [message.lease], lost="signal 9") == 0
    assert broker.release("w", [message.lease]) == 0
    assert broker.recover() == 0
    assert claim_ids(broker) == []
    assert status(broker, job) == "canceled"


def test_finished_jobs_cannot_be_canceled(broker):
    job = add.delay(1, 1)
    [message] = broker.claim(["default"], "w", 1)
    broker.finish("w", [outcome(message, JobStatus.SUCCEEDED, result="2")])
    assert not broker.cancel(job.id)
    assert status(broker, job) == "succeeded"


def test_requeue_puts_failed_and_canceled_jobs_back(broker):
    canceled, failed, succeeded = add.map([(1, 1), (2, 2), (3, 3)])
    assert broker.cancel(canceled.id)
    held = take(broker)
    broker.finish("w", [
        outcome(held[failed.id], JobStatus.FAILED, error="E: x"),
        outcome(held[succeeded.id], JobStatus.SUCCEEDED, result="6"),
    ])
    assert broker.requeue() == 2
    assert [status(broker, j) for j in (canceled, failed, succeeded)] == [
        "queued", "queued", "succeeded"]
    again = {m.id: m.attempts for m in broker.claim(["default"], "w", 10)}
    assert again == {canceled.id: 1, failed.id: 1}
    table = rows(broker)
    assert (table[failed.id].error, table[failed.id].ended_at) == ("", None)


def test_requeue_by_id(broker):
    a, b = add.map([(1, 1), (2, 2)])
    held = take(broker)
    broker.finish("w", [outcome(m, JobStatus.FAILED, error="E: x") for m in held.values()])
    assert broker.requeue([b.id]) == 1
    assert (status(broker, a), status(broker, b)) == ("failed", "queued")
    assert claim_ids(broker) == [b.id]


def test_purge_queue_deletes_the_jobs_waiting_in_it(broker):
    running, *waiting = add.map([(i, i) for i in range(3)])
    scheduled = add.apply_async((9, 9), countdown=3600)
    other = urgent.delay(1)
    assert claim_ids(broker, ["default"], limit=1) == [running.id]
    assert broker.purge_queue("default") == 3
    for job in (*waiting, scheduled):
        with pytest.raises(JobNotFound):
            broker.state(job.id)
    assert status(broker, running) == "started"
    assert broker.promote_due() == 0
    assert claim_ids(broker) == [other.id]
    assert set(rows(broker)) == {running.id, other.id}


def test_purge_finished_forgets_old_finished_jobs(broker):
    old, recent = add.map([(1, 1), (2, 2)])
    held = take(broker)
    broker.finish("w", [outcome(m, JobStatus.SUCCEEDED, result="2") for m in held.values()])
    broker.sync()
    Job.objects.filter(id=old.id).update(ended_at=timezone.now() - timedelta(days=2))
    assert broker.purge_finished(timedelta(days=1)) == 1
    with pytest.raises(JobNotFound):
        broker.state(old.id)
    assert status(broker, recent) == "succeeded"


def test_counts_by_queue_and_status(broker):
    add.map([(1, 1), (2, 2)])
    add.apply_async((3, 3), queue="low", countdown=3600)
    urgent.delay(1)
    failed = add.apply_async((4, 4), queue="low")
    broker.claim(["high"], "w", 1)
    [message] = broker.claim(["low"], "w", 1)
    assert message.id == failed.id
    broker.finish("w", [outcome(message, JobStatus.FAILED, error="E: x")])
    assert broker.counts() == {
        "default": {"queued": 2},
        "high": {"started": 1},
        "low": {"scheduled": 1, "failed": 1},
    }


# -- producers waiting -----------------------------------------------------------------------------


def test_unknown_job_is_not_found(broker):
    with pytest.raises(JobNotFound):
        broker.state(new_job_id())
    with pytest.raises(JobNotFound):
        _ = JobResult(new_job_id()).status


def test_state_and_job_result_agree_through_a_jobs_life(broker):
    job = add.delay(1, 2)

    def seen() -> tuple[str, str, str]:
        return status(broker, job), job.status, rows(broker)[job.id].status

    assert seen() == ("queued",) * 3
    [message] = broker.claim(["default"], "w", 1)
    assert seen() == ("started",) * 3
    with pytest.raises(TimeoutError, match="still started"):
        job.get(timeout=0.05)
    broker.finish("w", [outcome(message, JobStatus.SUCCEEDED, result="3")])
    assert seen() == ("succeeded",) * 3
    assert (job.get(timeout=0), job.result) == (3, 3)
    state = broker.wait_finished(job.id, timeout=0)
    assert (state.status, state.result) == ("succeeded", "3")


def test_state_and_job_result_agree_on_failure(broker):
    job = add.delay(1, 2)
    [message] = broker.claim(["default"], "w", 1)
    broker.finish("w", [outcome(message, JobStatus.FAILED, error="ValueError: no", traceback="tb")])
    state = broker.state(job.id)
    assert (state.status, state.error, state.traceback) == ("failed", "ValueError: no", "tb")
    assert job.status == "failed"
    with pytest.raises(JobFailed) as info:
        job.get(timeout=0)
    assert (info.value.exc_type, info.value.traceback) == ("ValueError", "tb")


def test_get_returns_once_another_thread_finishes_the_job(broker):
    job = add.delay(1, 2)

    def work() -> None:
        mine = another_broker()
        try:
            [message] = mine.claim(["default"], "w", 1)
            mine.finish("w", [outcome(message, JobStatus.SUCCEEDED, result="3")])
        finally:
            mine.close()
            connections.close_all()

    threading.Timer(0.1, work).start()
    assert job.get(timeout=10) == 3


# -- idle workers --------------------------------------------------------------------------------


def test_wait_returns_soon_after_an_enqueue_from_elsewhere(broker):

    def send() -> None:
        mine = another_broker()
        try:
            mine.enqueue([add.message((1, 1))])
        finally:
            mine.close()
            connections.close_all()

    broker.wait(["default"], timeout=0)  # set up (LISTEN) before anything is sent
    began = time.monotonic()
    broker.wait(["default"], timeout=0.3)
    assert time.monotonic() - began >= 0.25  # nothing came: it blocked, it did not spin
    threading.Timer(0.2, send).start()
    began = time.monotonic()
    broker.wait(["default"], timeout=10)
    assert 0.15 < time.monotonic() - began < 5
    assert len(claim_ids(broker)) == 1


def test_wait_and_claim_hands_over_the_job_sent_meanwhile(broker):
    assert broker.wait_and_claim(["default"], "w", 5, timeout=0.1) == []
    job = add.message((1, 1))

    def send() -> None:
        mine = another_broker()
        try:
            mine.enqueue([job])
        finally:
            mine.close()
            connections.close_all()

    threading.Timer(0.2, send).start()
    began = time.monotonic()
    [message] = broker.wait_and_claim(["default"], "w", 5, timeout=10)
    assert 0.15 < time.monotonic() - began < 5
    assert (message.id, message.attempts) == (job.id, 1)
    assert claim_ids(broker) == []


# -- a worker's loop -------------------------------------------------------------------------------


def test_a_burst_consumer_drains_every_queue(broker, tmp_path):
    jobs = add.map([(i, 1) for i in range(30)])
    high = urgent.delay("u")
    low = add.apply_async((2, 2), queue="low")
    failing = fail.delay("broken")
    retried = flaky.delay(str(tmp_path / "tries"), 2)
    assert drain(broker) == 30 + 3 + 2
    assert [j.get(timeout=0) for j in jobs] == [i + 1 for i in range(30)]
    assert (high.get(timeout=0), low.get(timeout=0), retried.get(timeout=0)) == ("u", 4, 2)
    with pytest.raises(JobFailed, match="ValueError: broken"):
        failing.get(timeout=0)
    table = rows(broker)
    assert table[retried.id].attempts == 2
    assert all(r.started_at <= r.ended_at for r in table.values())
    assert broker.counts() == {"default": {"failed": 1}}


def test_a_burst_consumer_leaves_unserved_queues_and_future_retries(broker):
    low = add.apply_async((1, 1), queue="low")
    retry = fail_later.delay("once")
    canceled = add.delay(2, 2)
    canceled.cancel()
    assert drain(broker, ["default"]) == 1
    assert (low.status, retry.status, canceled.status) == ("queued", "scheduled", "canceled")
    row = rows(broker)[retry.id]
    assert (row.attempts, row.error) == (1, "ValueError: once")
