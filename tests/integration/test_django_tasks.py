"""Django's tasks framework on jobqueue's backend, run by real ``jobworker`` processes on both
brokers: the cases Django's own tests/tasks/ checks of a backend (enqueue, results and errors,
defer, priority, queue names, context, async tasks, signals), plus jobqueue's retries, timeouts
and transactions."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from asgiref.sync import async_to_sync
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

framework = pytest.importorskip("jobqueue.framework", exc_type=ImproperlyConfigured)

from jobqueue import JobResult, exceptions  # noqa: E402
from jobqueue.backend import JobQueueBackend  # noqa: E402
from jobqueue.conf import get_settings  # noqa: E402
from jobqueue.message import Message  # noqa: E402
from jobqueue.models import Job  # noqa: E402
from jobqueue.serialization import json_text  # noqa: E402
from tests.conftest import WorkerProcess, wait_until  # noqa: E402
from tests.tasksapp import tasks  # noqa: E402
from tests.testapp.tasks import add  # noqa: E402

READY = framework.TaskResultStatus.READY
RUNNING = framework.TaskResultStatus.RUNNING
FAILED = framework.TaskResultStatus.FAILED
SUCCESSFUL = framework.SUCCESSFUL


@dataclass
class Workers:
    start: Callable[..., WorkerProcess]

    def drain(self, *args: str) -> WorkerProcess:
        """A ``--burst`` worker: runs every runnable job, then exits."""
        worker = self.start("--burst", *args)
        assert worker.wait() == 0, worker.output
        return worker


@pytest.fixture
def workers(broker, jobworker, worker_env) -> Iterator[Workers]:
    """Workers on the test's broker (``broker`` runs the test once per broker)."""
    options = get_settings().BROKER.get("OPTIONS", {})
    if "url" in options:
        worker_env["JOBQUEUE_TEST_REDIS_URL"] = options["url"]
        worker_env["JOBQUEUE_TEST_REDIS_PREFIX"] = options["prefix"]
    yield Workers(jobworker)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def finished(result) -> bool:
    result.refresh()
    return result.is_finished


# -- the backend ----------------------------------------------------------------------------------
def test_the_default_backend_is_jobqueue_with_every_capability():
    backend = framework.task_backends["default"]
    assert isinstance(backend, JobQueueBackend)
    assert tasks.noop_task.get_backend() is backend
    assert backend.supports_defer
    assert backend.supports_priority
    assert backend.supports_get_result
    assert backend.supports_async_task


# -- enqueue and results --------------------------------------------------------------------------
def test_enqueue_returns_a_ready_result_and_a_worker_runs_it(workers):
    before = timezone.now()
    result = tasks.calculate_meaning_of_life.enqueue()

    assert result.status == READY
    assert not result.is_finished
    assert (result.started_at, result.last_attempted_at, result.finished_at) == (None, None, None)
    assert before <= result.enqueued_at <= timezone.now()
    assert (result.attempts, result.errors, result.worker_ids) == (0, [], [])
    assert (result.args, result.kwargs, result.backend) == ([], {}, "default")
    assert result.task is tasks.calculate_meaning_of_life
    with pytest.raises(ValueError, match="Task has not finished yet"):
        _ = result.return_value
    row = JobResult(result.id).job  # the same Job table and admin as @jobqueue.task
    assert (row.task, row.queue, row.status) == (
        "tests.tasksapp.tasks.calculate_meaning_of_life",
        "default",
        "queued",
    )

    workers.drain()
    result.refresh()

    assert result.status == SUCCESSFUL
    assert result.is_finished
    assert result.return_value == 42
    assert result.errors == []
    assert result.attempts == 1
    assert result.worker_ids == [JobResult(result.id).job.worker]
    assert result.worker_ids[0]
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.last_attempted_at == result.started_at


def test_get_result_reads_the_job_from_any_process(workers):
    sent = tasks.echo.enqueue({"a": [1, 2.5, None, True], "b": "é"})
    workers.drain()

    result = framework.task_backends["default"].get_result(sent.id)
    same = tasks.echo.get_result(sent.id)

    assert result.id == same.id == sent.id
    assert result.task.func is tasks.echo.func
    assert result.status == SUCCESSFUL
    assert result.return_value == {"a": [1, 2.5, None, True], "b": "é"}
    assert result.args == [{"a": [1, 2.5, None, True], "b": "é"}]
    assert result.kwargs == {}


def test_arguments_come_back_exactly_even_when_they_look_like_jobqueue_tags(workers):
    tricky = {"$jq": "datetime", "v": "2026-01-01T00:00:00"}  # plain data, not a datetime
    result = tasks.echo.enqueue(value=[tricky, (1, 2)])
    workers.drain()
    result.refresh()
    assert result.kwargs == {"value": [tricky, [1, 2]]}
    assert result.return_value == [tricky, [1, 2]]


def test_aenqueue_and_aget_result(workers):
    result = async_to_sync(tasks.calculate_meaning_of_life.aenqueue)()
    assert result.status == READY
    workers.drain()

    again = async_to_sync(tasks.calculate_meaning_of_life.aget_result)(result.id)
    async_to_sync(result.arefresh)()

    assert again.status == result.status == SUCCESSFUL
    assert again.return_value == result.return_value == 42


def test_a_result_of_another_task_is_a_mismatch(workers):
    result = tasks.echo.enqueue(1)
    with pytest.raises(framework.TaskResultMismatch, match="Task does not match"):
        tasks.calculate_meaning_of_life.get_result(result.id)


def test_unknown_ids_do_not_exist(workers):
    backend = framework.task_backends["default"]
    for missing in (str(uuid4()), "not-a-uuid", ""):
        with pytest.raises(framework.TaskResultDoesNotExist):
            backend.get_result(missing)
    with pytest.raises(framework.TaskResultDoesNotExist):
        async_to_sync(backend.aget_result)(str(uuid4()))
    # A job of an @jobqueue.task is no result of the framework's.
    with pytest.raises(framework.TaskResultDoesNotExist, match="not a task of Django's tasks"):
        backend.get_result(add.delay(1, 2).id)


def test_a_failure_is_recorded_with_its_exception_class_and_traceback(workers):
    result = tasks.failing_task_value_error.enqueue()
    workers.drain()
    result.refresh()

    assert result.status == FAILED
    assert result.is_finished
    assert result.finished_at is not None
    with pytest.raises(ValueError, match="Task failed"):
        _ = result.return_value
    [error] = result.errors
    assert error.exception_class_path == "builtins.ValueError"
    assert error.exception_class is ValueError
    assert "This Task failed due to ValueError" in error.traceback
    assert "Traceback (most recent call last)" in error.traceback
    assert "failing_task_value_error" in error.traceback


@pytest.mark.parametrize(
    ("declared", "raised"),
    [
        (tasks.cancels_itself, "asyncio.exceptions.CancelledError"),  # async def
        (tasks.exits, "builtins.SystemExit"),
        (tasks.interrupted, "builtins.KeyboardInterrupt"),  # workers ignore SIGINT: the task's own
    ],
)
def test_a_base_exception_from_the_task_fails_it_once(workers, tmp_path, declared, raised):
    runs = tmp_path / "runs"
    result = declared.enqueue(str(runs))
    worker = workers.start("--burst")
    assert worker.wait(30) == 0, worker.output
    result.refresh()

    assert lines(runs) == ["run"]  # the worker process survived it: no second attempt
    assert result.status == FAILED
    assert result.attempts == 1
    assert [error.exception_class_path for error in result.errors] == [raised]
    assert "Traceback (most recent call last)" in result.errors[0].traceback


def test_a_return_value_json_cannot_carry_fails_the_task(workers):
    result = tasks.bad_return_value.enqueue()
    workers.drain()
    result.refresh()
    assert result.status == FAILED
    assert result.errors[0].exception_class is TypeError


def test_complex_return_value(workers):
    result = tasks.complex_return_value.enqueue()
    workers.drain()
    result.refresh()
    assert result.return_value == {
        "list": [1, 2, 3],
        "nested": {"a": None, "b": True},
        "text": "é",
    }


# -- async tasks ----------------------------------------------------------------------------------
def test_async_tasks_run_on_an_event_loop_in_the_worker(workers):
    result = tasks.async_echo.enqueue("hello")
    noop = tasks.noop_task_async.enqueue()
    workers.drain()
    result.refresh()
    noop.refresh()
    assert result.status == noop.status == SUCCESSFUL
    assert result.return_value["value"] == "hello"
    assert "EventLoop" in result.return_value["loop"]
    assert noop.return_value is None


def test_an_async_tasks_orm_calls_use_the_workers_own_thread_and_connection(workers):
    """As under Django's ``Task.call``: ``sync_to_async`` runs on the thread that runs the job,
    whose connection the worker manages (health checks, closing), not on a thread of its own
    holding a second connection."""
    results = [
        tasks.uses_the_orm.enqueue(),
        tasks.uses_the_orm.enqueue(),
        tasks.uses_the_orm_sync.enqueue(),
    ]
    workers.drain("--concurrency", "1")
    seen = []
    for result in results:
        result.refresh()
        assert result.status == SUCCESSFUL, result.errors
        seen.append(result.return_value)
    assert [value["main_thread"] for value in seen] == [True, True, True]
    assert len({value["connection"] for value in seen}) == 1  # one connection in the process


def test_jobqueues_own_task_takes_async_def_too(workers):
    job = tasks.jobqueue_async_echo.delay([1, "two"])
    workers.drain()
    value = job.get(timeout=10)
    assert value["value"] == [1, "two"]
    assert "EventLoop" in value["loop"]


@pytest.mark.parametrize(
    "tagged",
    [
        {"$jq": "model", "v": ["testapp.note", 999_999]},  # no such row: a lookup would say so
        {"$jq": "datetime", "v": "2026-01-01T00:00:00"},
    ],
)
def test_a_forged_job_of_a_framework_task_with_tagged_arguments_fails_unread(
    workers, broker, tmp_path, tagged
):
    runs = tmp_path / "runs"
    forged = Message(
        task=tasks.record.module_path,
        arguments=json_text({"args": [str(runs), tagged], "kwargs": {}}),
        queue="default",
    )
    broker.enqueue([forged])
    workers.drain()

    assert lines(runs) == []
    row = JobResult(forged.id).job
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.error.startswith("jobqueue.serialization.DecodeError: a tagged value")
    assert "plain JSON only" in row.error
    assert "no longer exists" not in row.error
    with pytest.raises(framework.TaskResultDoesNotExist, match="unreadable arguments"):
        tasks.record.get_result(forged.id)


@pytest.mark.parametrize(
    ("sent", "priority"),
    [
        ({"run_after": "2026-01-01T00:00:00"}, 0),  # naive: the framework refuses it
        ({}, 1000),  # past the framework's -100..100
    ],
)
def test_a_forged_job_the_framework_would_refuse_fails_unread(
    workers, broker, tmp_path, sent, priority
):
    runs = tmp_path / "runs"
    forged = Message(
        task=tasks.record.module_path,
        arguments=json_text({"args": [str(runs), 1], "kwargs": {}, "sent": sent}),
        queue="default",
        priority=priority,
        max_retries=2,  # bad input stays bad: never retried
    )
    broker.enqueue([forged])
    workers.drain()

    assert lines(runs) == []
    row = JobResult(forged.id).job
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.error.startswith("jobqueue.serialization.DecodeError: ")
    with pytest.raises(framework.TaskResultDoesNotExist, match="unreadable arguments"):
        tasks.record.get_result(forged.id)


# -- context and retries --------------------------------------------------------------------------
def test_a_task_that_takes_context_gets_its_result_and_attempt(workers, tmp_path):
    result = tasks.get_context.enqueue(str(tmp_path / "runs"))
    workers.drain()
    result.refresh()

    seen = result.return_value
    assert seen["id"] == result.id
    assert seen["attempt"] == 1
    assert seen["status"] == str(RUNNING)
    assert seen["worker_ids"] == result.worker_ids
    assert seen["queue"] == "default"
    assert lines(tmp_path / "runs") == ["attempt 1"]


def test_a_retrys_context_names_the_failed_attempts_before_it(workers):
    result = tasks.sees_its_past_attempts.enqueue()
    workers.drain()
    result.refresh()

    assert result.status == SUCCESSFUL
    seen = result.return_value
    assert seen["errors"] == ["builtins.RuntimeError"]  # as get_result says: not []
    assert seen["workers"] == result.worker_ids  # the first attempt's too, not ""
    assert_real_workers(result)


def test_a_task_sent_through_another_backend_runs_with_that_backends_options(workers, tmp_path):
    runs = tmp_path / "runs"
    result = tasks.fails_every_time.using(backend="retrying").enqueue(str(runs))
    workers.drain()  # "retrying": MAX_RETRIES 2, RETRY_BACKOFF 0, so every retry is due at once

    assert lines(runs) == [f"attempt {n} retrying retrying" for n in (1, 2, 3)]
    again = tasks.fails_every_time.get_result(result.id)
    assert (again.backend, again.task.backend) == ("retrying", "retrying")
    assert (again.status, again.attempts) == (FAILED, 3)


def test_retries_of_a_task_are_counted_attempts(workers, tmp_path):
    runs = tmp_path / "runs"
    result = tasks.flaky.enqueue(str(runs), 3)  # @task(max_retries=2)
    workers.drain()
    result.refresh()

    assert lines(runs) == ["attempt 1", "attempt 2", "attempt 3"]
    assert result.status == SUCCESSFUL
    assert result.return_value == 3
    assert result.attempts == 3
    # One error per failed attempt, though it succeeded in the end.
    assert [e.exception_class_path for e in result.errors] == ["builtins.RuntimeError"] * 2
    for number, error in enumerate(result.errors, 1):
        assert f"RuntimeError: attempt {number} fails" in error.traceback
        assert "Traceback (most recent call last)" in error.traceback
    assert_real_workers(result)


def assert_real_workers(result) -> None:
    """One worker id per attempt, each the name of a worker child that ran it; the last the
    Job row's."""
    assert len(result.worker_ids) == result.attempts
    row = JobResult(result.id).job
    assert result.worker_ids[-1] == row.worker
    for name in result.worker_ids:
        assert name.rpartition("/")[2].isdigit(), result.worker_ids  # "<host>.<pid>/<n>"


def test_a_retry_then_a_success_keeps_the_failed_attempts_error_and_worker(workers, tmp_path):
    runs = tmp_path / "runs"
    result = tasks.flaky.enqueue(str(runs), 2)  # fails once, then succeeds
    worker = workers.drain("--concurrency", "2")
    result.refresh()

    assert result.status == SUCCESSFUL
    [error] = result.errors
    assert error.exception_class_path == "builtins.RuntimeError"
    assert error.exception_class is RuntimeError
    assert "RuntimeError: attempt 1 fails" in error.traceback
    assert 'in flaky\n    raise RuntimeError(f"attempt' in error.traceback  # the task's own frame
    assert len(result.worker_ids) == 2
    assert_real_workers(result)
    assert all(name.startswith(worker_name(worker)) for name in result.worker_ids)


def worker_name(worker) -> str:
    """The name a ``jobworker`` process's children take: "<host>.<pid>/"."""
    import socket

    return f"{socket.gethostname()}.{worker.process.pid}/"


def test_a_task_out_of_retries_has_an_error_per_attempt(workers, tmp_path):
    runs = tmp_path / "runs"
    result = tasks.always_fails.enqueue(str(runs))  # @task(max_retries=1)
    workers.drain()
    result.refresh()

    assert lines(runs) == ["run", "run"]
    assert result.status == FAILED
    assert result.attempts == 2
    assert [e.exception_class for e in result.errors] == [KeyError, KeyError]
    assert all("KeyError: 'never'" in e.traceback for e in result.errors)
    assert_real_workers(result)


def test_retries_default_to_the_backends_options(workers, tmp_path):
    runs = tmp_path / "runs"
    result = tasks.retried_by_backend_options.enqueue(str(runs))  # OPTIONS MAX_RETRIES=2
    assert result.backend == "retrying"
    workers.drain()
    result.refresh()
    assert lines(runs) == ["attempt 1", "attempt 2", "attempt 3"]
    assert result.status == FAILED
    assert result.errors[0].exception_class is RuntimeError


def test_a_task_past_its_timeout_is_killed_and_fails(workers, tmp_path):
    marker = tmp_path / "started"
    result = tasks.sleeps.enqueue(str(marker))  # @task(timeout=1)
    workers.drain()
    result.refresh()
    assert marker.exists()
    assert result.status == FAILED
    [error] = result.errors
    assert error.exception_class is TimeoutError
    assert "timeout of 1 s" in error.traceback
    assert_real_workers(result)


def test_a_task_whose_worker_process_dies_runs_again(workers, tmp_path):
    runs = tmp_path / "runs"
    result = tasks.dies_on_first_attempt.enqueue(str(runs))  # SIGKILLs its own process
    workers.drain()
    result.refresh()
    assert lines(runs) == ["attempt 1", "attempt 2"]
    assert result.status == SUCCESSFUL
    assert result.return_value == 2
    assert result.attempts == 2
    [lost] = result.errors  # the run its process died in
    assert lost.exception_class_path == "jobqueue.exceptions.JobFailed"
    assert lost.traceback.startswith("WorkerLost: its worker process died (signal 9)")
    assert_real_workers(result)


def test_a_canceled_task_is_failed_with_job_canceled(broker):
    from jobqueue.exceptions import JobCanceled

    result = tasks.noop_task.using(run_after=timezone.now() + timedelta(hours=1)).enqueue()
    assert JobResult(result.id).cancel()
    result.refresh()
    assert result.status == FAILED
    assert [e.exception_class for e in result.errors] == [JobCanceled]


# -- defer, priority, queues ----------------------------------------------------------------------
def test_run_after_defers_the_task(workers, tmp_path):
    # Far enough ahead that starting the burst worker (seconds on a loaded machine) is done first.
    run_after = timezone.now() + timedelta(seconds=8)
    result = tasks.record.using(run_after=run_after).enqueue(str(tmp_path / "runs"), "late")
    assert result.task.run_after == run_after
    assert JobResult(result.id).job.status == "scheduled"

    workers.drain()  # a burst worker leaves a job that is not due yet
    if timezone.now() < run_after:  # (on a loaded machine the burst may outlast the deferral)
        result.refresh()
        assert result.status == READY
        assert result.task.run_after == run_after

    worker = workers.start()
    wait_until(lambda: finished(result), message="the deferred task to run")
    worker.signal(15)
    assert worker.wait() == 0, worker.output
    assert result.status == SUCCESSFUL
    assert result.started_at >= run_after
    assert lines(tmp_path / "runs")[0].split()[0] == "late"


def test_run_after_is_reported_as_the_user_set_it_and_only_then(workers, tmp_path):
    retried = tasks.always_fails.enqueue(str(tmp_path / "fails"))  # a retry is scheduled for later
    past = timezone.now() - timedelta(hours=1)
    early = tasks.get_context.using(run_after=past).enqueue(str(tmp_path / "runs"))
    workers.drain()

    again = tasks.always_fails.get_result(retried.id)
    assert again.attempts == 2
    assert again.task.run_after is None
    seen = tasks.get_context.get_result(early.id)
    assert seen.status == SUCCESSFUL
    assert seen.task.run_after == past
    assert seen.return_value["run_after"] == past.isoformat()  # as the task saw it, too


def test_higher_priority_runs_first(workers, tmp_path):
    runs = tmp_path / "runs"
    for priority in (0, -100, 100, 5, -5, 50):
        tasks.record.using(priority=priority).enqueue(str(runs), priority)
    workers.drain("--concurrency", "1")
    assert [int(line.split()[0]) for line in lines(runs)] == [100, 50, 5, 0, -5, -100]
    assert sorted(Job.objects.values_list("priority", flat=True)) == [-100, -5, 0, 5, 50, 100]


def test_queue_names_route_tasks_to_the_workers_serving_them(workers, tmp_path):
    runs = tmp_path / "runs"
    result = tasks.record.using(queue_name="low").enqueue(str(runs), "low")
    assert result.task.queue_name == "low"
    assert JobResult(result.id).job.queue == "low"

    workers.drain("high")
    result.refresh()
    assert result.status == READY
    assert lines(runs) == []

    workers.drain("low")
    result.refresh()
    assert result.status == SUCCESSFUL
    assert result.task.queue_name == "low"
    assert lines(runs)[0].startswith("low ")


# -- transactions and signals ---------------------------------------------------------------------
def test_inside_a_transaction_the_task_is_enqueued_on_commit(workers, tmp_path):
    log = tmp_path / "signals"
    with transaction.atomic():
        kept = tasks.signalled.enqueue(str(log))
        assert lines(log) == []  # task_enqueued waits for the commit too
    assert lines(log) == [f"enqueued {READY} JobQueueBackend {os.getpid()}"]

    dropped_log = tmp_path / "dropped"
    with pytest.raises(RuntimeError), transaction.atomic():
        dropped = tasks.signalled.enqueue(str(dropped_log))
        raise RuntimeError("rolled back")
    assert lines(dropped_log) == []
    with pytest.raises(framework.TaskResultDoesNotExist):
        dropped.refresh()

    workers.drain()
    kept.refresh()
    assert kept.status == SUCCESSFUL


def test_signals_are_sent_by_the_worker_running_the_task(workers, tmp_path):
    log = tmp_path / "signals"
    result = tasks.signalled.enqueue(str(log))
    workers.drain()
    result.refresh()

    enqueued, started, finished_ = [line.split() for line in lines(log)]
    assert enqueued == ["enqueued", str(READY), "JobQueueBackend", str(os.getpid())]
    assert started[:3] == ["started", str(RUNNING), "JobQueueBackend"]
    assert finished_[:3] == ["finished", str(SUCCESSFUL), "JobQueueBackend"]
    assert started[3] == finished_[3] != str(os.getpid())  # the worker's child process
    # Sent once the outcome is stored: get_result in the receiver already shows it.
    assert finished_[4:] == [str(SUCCESSFUL), "done", "0", "1"]
    assert result.status == SUCCESSFUL


def test_task_finished_follows_the_stored_outcome_after_a_retry(workers, tmp_path):
    log = tmp_path / "signals"
    result = tasks.signalled_after_a_retry.enqueue(str(log))
    workers.drain()
    result.refresh()

    # task_started per attempt; task_finished once, after the retry's success is stored.
    kinds = [line.split()[0] for line in lines(log)]
    assert kinds == ["enqueued", "started", "started", "finished"]
    finished_ = lines(log)[-1].split()
    assert finished_[1] == str(SUCCESSFUL)
    assert finished_[4:] == [str(SUCCESSFUL), "retried", "1", "2"]  # 1 error, 2 attempts
    assert result.status == SUCCESSFUL


def test_task_finished_is_sent_for_a_task_whose_worker_process_keeps_dying(workers, tmp_path):
    log = tmp_path / "signals"
    result = tasks.signalled_dying.enqueue(str(log))  # @task(max_retries=1); SIGKILLs itself
    worker = workers.drain()
    result.refresh()

    assert [line for line in lines(log) if line.startswith("attempt")] == [
        "attempt 1",
        "attempt 2",
    ]
    sent = [line.split() for line in lines(log) if line.startswith("finished")]
    assert len(sent) == 1, worker.output
    [finished_] = sent
    assert finished_[:3] == ["finished", str(FAILED), "JobQueueBackend"]
    assert finished_[3] == str(worker.process.pid)  # the supervisor, which saw the child die
    assert finished_[4:] == [str(FAILED), "-", "2", "2"]
    assert result.status == FAILED
    assert [e.traceback.split(" on attempt")[0] for e in result.errors] == [
        "WorkerLost: its worker process died (signal 9)"
    ] * 2
    assert_real_workers(result)


def test_task_finished_is_sent_for_a_timeout_the_supervisor_records(workers, tmp_path):
    log = tmp_path / "signals"
    result = tasks.signalled_past_its_timeout.enqueue(str(log))  # @task(timeout=1)
    worker = workers.drain()
    result.refresh()

    started, finished_ = (line.split() for line in lines(log)[1:])
    assert started[:2] == ["started", str(RUNNING)]
    assert finished_[:3] == ["finished", str(FAILED), "JobQueueBackend"]
    assert finished_[3] == str(worker.process.pid)  # the supervisor, which killed the child
    assert finished_[4:] == [str(FAILED), "-", "1", "1"]
    assert result.status == FAILED
    assert result.errors[0].exception_class is TimeoutError


def test_task_finished_is_sent_for_a_canceled_task(broker):
    """A cancel is a task's end too (FAILED, with a JobCanceled error): sent by the process
    that canceled it, once stored."""
    seen = []

    def receiver(sender, task_result, **kwargs):
        seen.append((task_result.id, task_result.status, task_result.errors[-1].exception_class))

    framework.task_finished.connect(receiver)
    try:
        result = tasks.noop_task.enqueue()
        assert JobResult(result.id).cancel()
    finally:
        framework.task_finished.disconnect(receiver)
    assert seen == [(result.id, FAILED, exceptions.JobCanceled)]


def test_a_signal_receiver_that_raises_never_fails_the_task(workers, tmp_path):
    log = tmp_path / "signals"
    result = tasks.signalled.enqueue(str(log), True)  # every receiver raises
    workers.drain()
    result.refresh()
    assert [line.split()[0] for line in lines(log)] == ["enqueued", "started", "finished"]
    assert result.status == SUCCESSFUL
    assert result.return_value == "done"
