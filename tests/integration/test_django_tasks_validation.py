"""What jobqueue's backend refuses, at declaration or at enqueue, with the framework's errors
(the equivalents of Django's tests/tasks/ validation cases), its system checks, and EAGER mode.
Nothing here needs a worker: a refused task never reaches one."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

framework = pytest.importorskip("jobqueue.framework", exc_type=ImproperlyConfigured)

from jobqueue import backend as backend_module  # noqa: E402
from jobqueue.backend import JobQueueBackend  # noqa: E402
from jobqueue.exceptions import ConfigurationError  # noqa: E402
from jobqueue.models import Job, JobAttempt  # noqa: E402
from tests.tasksapp import tasks  # noqa: E402

InvalidTask = framework.InvalidTask
pytestmark = pytest.mark.django_db


@framework.task()
def defined_where_workers_do_not_look():
    """A module-level task of a module no worker imports (a test module)."""


def no_job_written() -> bool:
    return not Job.objects.exists()


# -- declaration ----------------------------------------------------------------------------------
def test_a_function_must_be_defined_at_module_level():
    def local():
        pass

    message = "Task function must be defined at a module level."
    with pytest.raises(InvalidTask, match=re.escape(message)):
        framework.task()(local)


def test_takes_context_needs_a_context_argument():
    with pytest.raises(InvalidTask, match="first argument of 'context'"):
        framework.task(takes_context=True)(tasks.echo.func)


@pytest.mark.parametrize("priority", [101, -101, 1.5])
def test_priority_is_a_whole_number_from_minus_100_to_100(priority):
    with pytest.raises(
        InvalidTask, match=re.escape("priority must be a whole number between -100 and 100.")
    ):
        tasks.noop_task.using(priority=priority)


def test_every_allowed_priority_is_accepted():
    assert tasks.noop_task.using(priority=-100).priority == -100
    assert tasks.noop_task.using(priority=100).priority == 100


def test_a_whole_number_float_priority_is_accepted_as_the_framework_does():
    task = tasks.noop_task.using(priority=5.0)
    assert task.priority == 5.0
    result = task.enqueue()
    assert Job.objects.get(id=result.id).priority == 5


def test_a_queue_jobqueue_does_not_know_is_refused():
    with pytest.raises(InvalidTask, match="Queue 'nope' is not in JOBQUEUE\\['QUEUES'\\]"):
        tasks.noop_task.using(queue_name="nope")


def test_a_queue_the_backend_does_not_list_is_refused():
    # TASKS['retrying'] has QUEUES ['default'] only.
    with pytest.raises(InvalidTask, match=re.escape("Queue 'low' is not valid for backend.")):
        tasks.retried_by_backend_options.using(queue_name="low")


def test_run_after_must_be_aware():
    with pytest.raises(InvalidTask, match=re.escape("run_after must be an aware datetime.")):
        tasks.noop_task.using(run_after=datetime.now() + timedelta(hours=1))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_retries": -1}, "noop_task.*: .*max_retries must be an int"),
        ({"retry_backoff": -1}, "noop_task.*: .*retry_backoff must be"),
        ({"timeout": 0}, "noop_task.*: .*timeout must be"),
    ],
)
def test_jobqueue_options_are_checked_at_declaration(options, message):
    with pytest.raises(InvalidTask, match=message):
        framework.task(**options)(tasks.noop_task.func)


# -- enqueue --------------------------------------------------------------------------------------
def test_a_task_in_a_module_workers_do_not_import_is_refused_at_enqueue():
    with pytest.raises(InvalidTask, match="which workers do not import"):
        defined_where_workers_do_not_look.enqueue()
    assert no_job_written()


def test_a_task_built_at_run_time_is_refused_at_enqueue(tmp_path):
    built = framework.task()(tasks.plain_function)  # its module declares no such task
    with pytest.raises(InvalidTask, match="not a task its module declares"):
        built.enqueue(str(tmp_path / "runs"))
    assert no_job_written()


def test_a_task_declared_on_another_backend_is_refused_at_enqueue(tmp_path):
    moved = tasks.on_another_backend.using(backend="default")
    with pytest.raises(InvalidTask, match="declared on the backend 'immediate'"):
        moved.enqueue(str(tmp_path / "runs"))
    assert no_job_written()
    assert not (tmp_path / "runs").exists()


def test_a_declared_task_may_be_sent_through_another_jobqueue_backend():
    result = tasks.noop_task.using(backend="retrying", priority=3).enqueue()
    assert (result.backend, result.task.priority) == ("retrying", 3)
    assert Job.objects.get(id=result.id).task == "tests.tasksapp.tasks.noop_task"


@pytest.mark.parametrize(
    "value",
    [
        datetime.now(tz=UTC),
        {1, 2},
        object(),
        {1: "int keys come back as str"},
        math.nan,
        math.inf,
    ],
)
def test_arguments_must_survive_a_json_round_trip(value):
    with pytest.raises(TypeError):
        tasks.echo.enqueue(value)
    with pytest.raises(TypeError):
        tasks.echo.enqueue(value=value)
    assert no_job_written()


def test_arguments_must_fit_the_signature():
    with pytest.raises(TypeError, match="echo\\(\\)"):
        tasks.echo.enqueue(1, 2)
    with pytest.raises(TypeError, match="get_context\\(\\): missing a required argument: 'path'"):
        tasks.get_context.enqueue()  # the context is given by the worker, the path is missing
    assert no_job_written()


def test_a_job_queued_through_the_framework_runs_after_its_task_moves_to_jobqueues_task():
    """The README's promise: the task keeps its name, so a job queued before the move (with
    the framework's envelope of what .using() set) is read by the @jobqueue.task after it."""
    from tests.testapp.tasks import add

    sent = tasks.echo.using(run_after=timezone.now() + timedelta(hours=1)).enqueue([1, {"two": 2}])
    queued = Job.objects.get(id=sent.id).to_message()
    assert add.decode(queued) == ([[1, {"two": 2}]], {})


def test_json_values_are_normalized_as_the_framework_does():
    result = tasks.echo.enqueue((1, (2, 3)))
    assert result.args == [[1, [2, 3]]]


# -- system checks --------------------------------------------------------------------------------
def backend(**params) -> JobQueueBackend:
    return JobQueueBackend("test", {"BACKEND": "jobqueue.backend.JobQueueBackend", **params})


def check_ids(b: JobQueueBackend) -> list[str]:
    return [message.id for message in b.check()]


def test_the_configured_backends_pass_their_checks():
    for alias in ("default", "retrying"):
        assert list(framework.task_backends[alias].check()) == []


def test_check_reports_queues_jobqueue_does_not_have():
    assert check_ids(backend(QUEUES=["default", "elsewhere"])) == ["jobqueue.E102"]
    assert check_ids(backend(QUEUES=["high", "low"])) == []


def test_check_reports_unusable_retry_options():
    assert check_ids(backend(OPTIONS={"MAX_RETRIES": -1})) == ["jobqueue.E103"]
    assert check_ids(backend(OPTIONS={"TIMEOUT": 0})) == ["jobqueue.E103"]


def test_unknown_options_are_refused_when_the_backend_is_made():
    with pytest.raises(ConfigurationError, match="unknown keys \\['MAX_RETRIEZ'\\]"):
        backend(OPTIONS={"MAX_RETRIEZ": 3})


def test_check_needs_tracking_on_the_redis_broker():
    redis = {"BACKEND": "jobqueue.brokers.redis.RedisBroker", "OPTIONS": {"url": "redis://x"}}
    with override_settings(JOBQUEUE={"BROKER": redis, "TRACKING": False}):
        assert check_ids(backend()) == ["jobqueue.E104"]
    with override_settings(JOBQUEUE={"BROKER": redis, "TRACKING": True}):
        assert check_ids(backend()) == []


def test_checks_run_with_djangos_system_checks():
    from django.core import checks

    with override_settings(
        TASKS={"default": {"BACKEND": "jobqueue.backend.JobQueueBackend", "QUEUES": ["nowhere"]}}
    ):
        ids = [message.id for message in checks.run_checks()]
    assert "jobqueue.E102" in ids


# -- how the Job row reads as the framework's errors ----------------------------------------------
@pytest.mark.parametrize(
    ("error", "path"),
    [
        ("ValueError: bad", "builtins.ValueError"),
        ("TimeoutError: job exceeded its timeout of 1 s", "builtins.TimeoutError"),
        ("tests.tasksapp.tasks.Custom: no", "tests.tasksapp.tasks.Custom"),
        ("SerializationError: a set", "jobqueue.exceptions.SerializationError"),
        ("WorkerLost: its worker process died (signal 9)", "jobqueue.exceptions.JobFailed"),
    ],
)
def test_a_recorded_error_names_an_exception_class(error, path):
    entry = backend_module.task_error(error, "")
    assert entry.exception_class_path == path
    assert entry.traceback == error  # no traceback recorded: the error line stands for it


def no_failure() -> tuple[str, str]:
    raise AssertionError("a job with no failed run has no failure to read")


@pytest.mark.django_db
def test_a_job_with_no_failed_run_has_no_errors_and_costs_no_query(django_assert_num_queries):
    with django_assert_num_queries(0):
        assert backend_module.history(str(uuid4()), 0, "queued", "", no_failure) == ([], [])
        assert backend_module.history(str(uuid4()), 1, "started", "w/1", no_failure) == (
            [],
            ["w/1"],
        )
        assert backend_module.history(str(uuid4()), 1, "succeeded", "w/1", no_failure) == (
            [],
            ["w/1"],
        )


@pytest.mark.django_db
def test_worker_ids_have_one_entry_per_attempt_from_the_failed_ones():
    job_id = str(uuid4())
    now = timezone.now()
    for number, worker in ((1, "w/1"), (2, "w/3")):
        JobAttempt.objects.create(
            job_id=job_id,
            number=number,
            version=number,
            worker=worker,
            error="E: x",
            ended_at=now,
        )
    errors, workers = backend_module.history(job_id, 3, "succeeded", "w/2", no_failure)
    assert workers == ["w/1", "w/3", "w/2"]
    assert [e.exception_class_path for e in errors] == ["jobqueue.exceptions.JobFailed"] * 2
    # A failure with no attempt recorded (from before attempts were) is the row's.
    errors, workers = backend_module.history(
        job_id, 4, "failed", "w/4", lambda: ("KeyError: 'k'", "tb")
    )
    assert workers == ["w/1", "w/3", "", "w/4"]
    assert [(e.exception_class_path, e.traceback) for e in errors][-1] == (
        "builtins.KeyError",
        "tb",
    )


# -- EAGER mode -----------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_eager_mode_runs_the_task_inline_on_commit(settings, tmp_path):
    settings.JOBQUEUE = {**settings.JOBQUEUE, "EAGER": True}
    with transaction.atomic():
        result = tasks.get_context.enqueue(str(tmp_path / "runs"))
        assert not (tmp_path / "runs").exists()
    result.refresh()
    assert result.status == framework.SUCCESSFUL
    assert result.return_value["attempt"] == 1
    assert result.worker_ids == ["eager"]
    assert result.return_value["worker_ids"] == ["eager"]


@pytest.mark.django_db(transaction=True)
def test_eager_mode_sends_the_signals_in_order(settings, tmp_path):
    settings.JOBQUEUE = {**settings.JOBQUEUE, "EAGER": True}
    log = tmp_path / "signals"
    result = tasks.signalled.enqueue(str(log))
    assert [line.split()[:2] for line in log.read_text().splitlines()] == [
        ["enqueued", "READY"],
        ["started", "RUNNING"],
        ["finished", "SUCCESSFUL"],
    ]
    result.refresh()
    assert result.return_value == "done"
