"""jobqueue as a backend of Django's tasks framework (``django.tasks``, or the ``django-tasks``
backport on Django 5.2): ``@django.tasks.task`` functions run on jobqueue's brokers and workers,
with its retries, timeouts and leases, and show in the same admin.

A framework task is registered with jobqueue under its module path when it is declared, so a
worker runs it by that name exactly as it runs an ``@jobqueue.task`` function: nothing but
registered names runs. Each job is a row of the Job table; ``get_result`` reads it.
"""

from __future__ import annotations

import builtins
import dataclasses
import inspect
import json
import logging
import multiprocessing
import os
import socket
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core import checks
from django.db import router, transaction
from django.dispatch import Signal
from django.utils import timezone
from django.utils.module_loading import import_string

from jobqueue import exceptions, registry
from jobqueue.brokers.base import job_finished
from jobqueue.conf import get_settings
from jobqueue.exceptions import ConfigurationError, JobNotFound, UnknownTask
from jobqueue.execution import FRAMEWORK_ENVELOPE, call
from jobqueue.framework import (
    SUCCESSFUL,
    BaseTaskBackend,
    InvalidTask,
    Task,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    normalize_json,
    task_backends,
    task_enqueued,
    task_finished,
    task_started,
)
from jobqueue.message import Message, canonical_job_id
from jobqueue.serialization import TAG, DecodeError, json_text, loads, to_jsonable
from jobqueue.states import FINISHED, JobStatus
from jobqueue.task import Task as JobQueueJob

logger = logging.getLogger(__name__)

#: ``OPTIONS`` of a ``TASKS`` entry, and their defaults (a task may override each).
OPTION_DEFAULTS: dict[str, Any] = {"MAX_RETRIES": 0, "RETRY_BACKOFF": 1.0, "TIMEOUT": None}

STATUS = {
    JobStatus.QUEUED: TaskResultStatus.READY,
    JobStatus.SCHEDULED: TaskResultStatus.READY,
    JobStatus.STARTED: TaskResultStatus.RUNNING,
    JobStatus.SUCCEEDED: SUCCESSFUL,
    JobStatus.FAILED: TaskResultStatus.FAILED,
    JobStatus.CANCELED: TaskResultStatus.FAILED,
}

ROW_WAIT = 2.0  # seconds get_result waits for the Redis broker's Job row of a job just sent
KEPT = 1000  # results of runs a worker process keeps until their outcome is stored


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class JobQueueTask(Task):  # type: ignore[misc]
    """The framework's ``Task`` with jobqueue's retry options: ``@task(max_retries=3)``.

    ``None`` takes the backend's ``OPTIONS`` (``MAX_RETRIES``, ``RETRY_BACKOFF``, ``TIMEOUT``).
    """

    max_retries: int | None = None
    retry_backoff: float | None = None
    timeout: float | None = None


class FrameworkJob(JobQueueJob):
    """A framework task as jobqueue's registry holds it: how a worker runs it."""

    def __init__(self, task: Task, options: dict[str, Any]) -> None:
        super().__init__(
            task.func,
            name=task.module_path,
            queue=task.queue_name,
            priority=int(task.priority),  # the framework allows a whole-number float
            max_retries=options["MAX_RETRIES"],
            retry_backoff=options["RETRY_BACKOFF"],
            timeout=options["TIMEOUT"],
        )
        self.task = task
        # The result of each run of this process, until its outcome is stored (``finished``).
        self.runs: dict[str, TaskResult] = {}

    def decode(self, message: Message) -> tuple[list[Any], dict[str, Any]]:
        """Plain JSON only: jobqueue's tagged types (datetimes, model references...) are for
        ``@jobqueue.task``, so a message that carries one fails unread (no database lookup)."""
        args, kwargs, _ = read_arguments(message.arguments)
        self.sent_as(message)  # what it was sent with must make a task the framework accepts
        return args, kwargs

    def sent_as(self, message: Message) -> Task:
        """The task as it was enqueued: its queue and priority, the backend it was sent through
        and the ``run_after`` it was given (``.using(...)``)."""
        try:
            sent = read_arguments(message.arguments)[2]
        except DecodeError:  # e.g. a timeout the supervisor records, without the arguments
            sent = {}
        changes: dict[str, Any] = {
            "queue_name": message.queue or self.task.queue_name,
            "priority": message.priority if message.queue else self.task.priority,
            "backend": sent.get("backend", self.task.backend),
            "run_after": sent.get("run_after"),
        }
        if all(getattr(self.task, key) == value for key, value in changes.items()):
            return self.task
        try:  # the framework validates the task again: a forged message may not pass
            return dataclasses.replace(self.task, **changes)
        except InvalidTask as exc:
            raise DecodeError(f"the job was sent as a task the framework refuses: {exc}") from None

    def backoff(self, message: Message) -> float:
        """The retry backoff of the backend the job was sent through, unless the task sets
        its own."""
        task = self.sent_as(message)
        backend = task.get_backend()
        if isinstance(backend, JobQueueBackend):
            return float(backend.task_options(task)["RETRY_BACKOFF"])
        return self.retry_backoff

    def run(self, message: Message, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Run one attempt: the framework's ``task_started``, then the function (given a
        ``TaskContext`` if it takes one; ``async def`` on an event loop). ``task_finished`` waits
        for the outcome to be stored (``finished``)."""
        task = self.sent_as(message)
        now = timezone.now()
        errors, workers = past_attempts(message)
        result: Any = TaskResult(
            task=task,
            id=message.id,
            status=TaskResultStatus.RUNNING,
            enqueued_at=message.enqueued_at,
            started_at=now,
            finished_at=None,
            last_attempted_at=now,
            args=args,
            kwargs=kwargs,
            backend=task.backend,
            errors=errors,
            worker_ids=[*workers, worker_id()],
        )
        self.runs.pop(message.id, None)
        if len(self.runs) >= KEPT:  # outcomes refused, or retried: never finished here
            del self.runs[next(iter(self.runs))]
        self.runs[message.id] = result
        send_robust(task_started, type(task.get_backend()), result)
        leading: tuple[Any, ...] = (TaskContext(task_result=result),) if task.takes_context else ()
        value = plain_json(call(task.func, *leading, *args, **kwargs), "return value")
        object.__setattr__(result, "_return_value", value)
        return value

    def finished(self, job_id: str, status: str) -> None:
        """The job's final outcome is stored (``jobqueue.brokers.base.job_finished``): send
        ``task_finished``. A first run that succeeded here is its own result; any other (a job
        with failed attempts, a timeout, a child that died, a lost run) is read as stored, with
        its errors and workers."""
        ran = self.runs.pop(job_id, None)
        try:
            if ran is not None and ran.attempts == 1 and status == JobStatus.SUCCEEDED:
                result = ran
                _finish(result, SUCCESSFUL)
            else:
                result = self.task.get_backend().get_result(job_id)
        except Exception:  # e.g. the database away: the job is stored, only the signal is lost
            logger.exception("job=%s task=%s state=task-finished-unsent", job_id, self.name)
            return
        send_robust(task_finished, type(result.task.get_backend()), result)


class JobQueueBackend(BaseTaskBackend):
    """``TASKS = {"default": {"BACKEND": "jobqueue.backend.JobQueueBackend"}}``.

    ``QUEUES`` defaults to ``JOBQUEUE['QUEUES']`` and may only name queues from it. ``OPTIONS``:
    ``MAX_RETRIES`` (0), ``RETRY_BACKOFF`` (1.0 s, doubled per retry) and ``TIMEOUT`` (None, in
    seconds), which a task overrides with ``@task(max_retries=..., retry_backoff=...,
    timeout=...)``. Inside ``transaction.atomic()`` a task is enqueued when the transaction
    commits, and never if it rolls back.
    """

    task_class = JobQueueTask
    supports_defer = True  # run_after
    supports_priority = True  # -100..100, higher first, as jobqueue's own priority
    supports_get_result = True  # from any process: the Job table
    supports_async_task = True  # async def: run by the worker on an event loop of its own

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        # Without QUEUES: every queue of JOBQUEUE['QUEUES'], read when a task is checked.
        self.explicit_queues = "QUEUES" in params
        if not self.explicit_queues:
            self.queues = set()
        unknown = sorted(set(self.options) - set(OPTION_DEFAULTS))
        if unknown:
            raise ConfigurationError(
                f"TASKS[{alias!r}]['OPTIONS'] has unknown keys {unknown}; jobqueue's backend "
                f"knows {sorted(OPTION_DEFAULTS)}"
            )
        self.defaults = {**OPTION_DEFAULTS, **self.options}

    # -- declaring ------------------------------------------------------------------------------
    def validate_task(self, task: Task) -> None:
        """The framework's rules, then jobqueue's: a queue of ``JOBQUEUE['QUEUES']`` and usable
        retry options. A valid task is registered, so workers can run it by name."""
        super().validate_task(task)
        queues = get_settings().QUEUES
        if task.queue_name not in queues:
            raise InvalidTask(
                f"Queue '{task.queue_name}' is not in JOBQUEUE['QUEUES'] {list(queues)}."
            )
        try:
            job = FrameworkJob(task, self.task_options(task))
        except (ConfigurationError, TypeError, ValueError) as exc:
            text = str(exc)
            if task.module_path not in text:
                text = f"{task.module_path}: {text}"
            raise InvalidTask(text) from None
        try:
            registry.get_task(job.name)
        except UnknownTask:
            registry.register(job)

    def task_options(self, task: Task) -> dict[str, Any]:
        """The task's retry options: its own where it sets them, else the backend's."""
        own = {
            "MAX_RETRIES": getattr(task, "max_retries", None),
            "RETRY_BACKOFF": getattr(task, "retry_backoff", None),
            "TIMEOUT": getattr(task, "timeout", None),
        }
        return {key: self.defaults[key] if value is None else value for key, value in own.items()}

    # -- enqueueing -----------------------------------------------------------------------------
    def enqueue(self, task: Task, args: Any, kwargs: Any) -> Any:
        """Write the job through jobqueue's broker; arguments must survive a JSON round trip
        unchanged (jobqueue's richer types are for ``@jobqueue.task`` only)."""
        self.validate_task(task)
        conf = get_settings()
        module = task.func.__module__
        if not conf.EAGER and not registry.worker_imports(module):
            raise InvalidTask(
                f"{task.module_path} is defined in {module!r}, which workers do not import: move "
                "it to tasks.py in an installed app, or add the module to JOBQUEUE['TASK_MODULES']"
            )
        declared_by_module(task)
        args, kwargs = list(args), dict(kwargs)
        leading = [None] if task.takes_context else []
        try:
            inspect.signature(task.func).bind(*leading, *args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{task.module_path}(): {exc}") from None
        path = task.module_path
        arguments: dict[str, Any] = {
            "args": [plain_json(v, f"{path}() argument {i}") for i, v in enumerate(args)],
            "kwargs": {k: plain_json(v, f"{path}() argument {k!r}") for k, v in kwargs.items()},
        }
        # What .using() set that the message has no field for: read back by sent_as().
        sent = {
            "backend": self.alias,
            "run_after": None if task.run_after is None else task.run_after.isoformat(),
        }
        options = self.task_options(task)
        now = timezone.now()
        message = Message(
            task=path,
            arguments=json_text(to_jsonable({**arguments, SENT: sent}, f"{path}() arguments")),
            queue=task.queue_name,
            priority=int(task.priority),
            run_at=task.run_after,
            enqueued_at=now,
            max_retries=options["MAX_RETRIES"],
            timeout=options["TIMEOUT"],
        )
        result: Any = TaskResult(
            task=task,
            id=message.id,
            status=TaskResultStatus.READY,
            enqueued_at=now,
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=arguments["args"],
            kwargs=arguments["kwargs"],
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        from jobqueue.brokers import get_broker
        from jobqueue.eager import run_eagerly
        from jobqueue.models import Job

        def enqueued() -> None:
            transaction.on_commit(
                lambda: send_robust(task_enqueued, type(self), result),
                using=router.db_for_write(Job),
            )

        if conf.EAGER:  # task_enqueued before the run's task_started, as from a worker
            enqueued()
            run_eagerly([message])
        else:
            get_broker().enqueue([message])
            enqueued()
        return result

    # -- results --------------------------------------------------------------------------------
    def get_result(self, result_id: str) -> Any:
        """The job as it is now; ``TaskResultDoesNotExist`` for an id no framework task has."""
        from jobqueue.brokers import get_broker

        try:
            job_id = canonical_job_id(result_id)
        except ValueError:
            raise TaskResultDoesNotExist(result_id) from None
        broker = get_broker()
        try:
            state = broker.state(job_id)
        except JobNotFound:
            raise TaskResultDoesNotExist(result_id) from None
        row = _job_row(broker, job_id, state.status)
        try:
            job = registry.get_task(row.task)
        except UnknownTask:
            job = None
        if not isinstance(job, FrameworkJob):
            raise TaskResultDoesNotExist(
                f"{result_id}: a job of {row.task}, which is not a task of Django's tasks "
                "framework known to this process"
            )
        try:
            args, kwargs, _ = read_arguments(row.arguments)
            task = job.sent_as(row.to_message())
        except DecodeError as exc:
            raise TaskResultDoesNotExist(f"{result_id}: unreadable arguments ({exc})") from exc
        status = STATUS[JobStatus(state.status)]
        finished = state.status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)
        result: Any = TaskResult(
            task=task,
            id=job_id,
            status=status,
            enqueued_at=row.enqueued_at,
            started_at=row.started_at,
            finished_at=(state.ended_at or row.ended_at) if finished else None,
            last_attempted_at=row.started_at,
            args=args,
            kwargs=kwargs,
            backend=task.backend,
            errors=[],
            worker_ids=[],
        )
        result.errors[:], result.worker_ids[:] = history(
            job_id,
            row.attempts,
            state.status,
            row.worker,
            lambda: (state.error or row.error, state.traceback or row.traceback),
        )
        if state.status == JobStatus.SUCCEEDED and state.result is not None:
            object.__setattr__(result, "_return_value", loads(state.result))
        return result

    # -- system checks --------------------------------------------------------------------------
    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        """The framework's checks, then jobqueue's: jobqueue installed, QUEUES it knows, usable
        OPTIONS, and a Job table to read results from."""
        return [*super().check(**kwargs), *self._check_jobqueue()]

    def _check_jobqueue(self) -> Iterator[checks.CheckMessage]:
        where = f"TASKS[{self.alias!r}]"
        if not apps.is_installed("jobqueue"):
            yield checks.Error(
                f"{where} uses jobqueue's backend, but 'jobqueue' is not in INSTALLED_APPS.",
                hint="Add 'jobqueue' to INSTALLED_APPS.",
                id="jobqueue.E101",
            )
        conf = get_settings()
        unknown = sorted(q for q in self.queues if q not in conf.QUEUES)
        if self.explicit_queues and unknown:
            yield checks.Error(
                f"{where}['QUEUES'] names {unknown}, which JOBQUEUE['QUEUES'] "
                f"{list(conf.QUEUES)} does not have.",
                hint="Leave QUEUES out (every queue of JOBQUEUE['QUEUES']) or name those queues.",
                id="jobqueue.E102",
            )
        try:
            JobQueueJob(
                _noop,
                max_retries=self.defaults["MAX_RETRIES"],
                retry_backoff=self.defaults["RETRY_BACKOFF"],
                timeout=self.defaults["TIMEOUT"],
            )
        except (ConfigurationError, TypeError) as exc:
            yield checks.Error(f"{where}['OPTIONS']: {exc}", id="jobqueue.E103")
        if conf.BROKER.get("BACKEND", "").endswith("RedisBroker") and not conf.TRACKING:
            yield checks.Error(
                f"{where}: results are read from the Job table, which the Redis broker keeps "
                "only with JOBQUEUE['TRACKING'] = True.",
                hint="Set JOBQUEUE['TRACKING'] = True.",
                id="jobqueue.E104",
            )


# -- helpers ------------------------------------------------------------------------------------
SENT = FRAMEWORK_ENVELOPE  # the key of the arguments envelope holding what .using() set


def read_arguments(text: str) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """``args``, ``kwargs`` and what ``.using()`` set (``backend``, ``run_after``) from a
    framework job's arguments, as plain JSON: any tagged value but jobqueue's escape of a dict
    that looks tagged is refused, and ``backend`` must name a jobqueue backend."""
    try:
        payload = json.loads(text, object_hook=_plain_object)
    except json.JSONDecodeError as exc:
        raise DecodeError(f"not valid JSON: {exc}") from exc
    if (
        not isinstance(payload, dict)
        or not {"args", "kwargs"} <= set(payload) <= {"args", "kwargs", SENT}
        or not isinstance(payload["args"], list)
        or not isinstance(payload["kwargs"], dict)
        or not isinstance(payload.get(SENT, {}), dict)
    ):
        raise DecodeError(
            f'arguments must be {{"args": [...], "kwargs": {{...}}, "{SENT}": {{...}}}}'
        )
    sent: dict[str, Any] = {}
    given = payload.get(SENT, {})
    if given.get("backend") is not None:
        alias = given["backend"]
        if not isinstance(alias, str) or alias not in getattr(settings, "TASKS", {}):
            raise DecodeError(f"the job was sent through {alias!r}, which TASKS does not have")
        if not isinstance(task_backends[alias], JobQueueBackend):
            raise DecodeError(f"the job was sent through {alias!r}, which is not jobqueue's")
        sent["backend"] = alias
    if given.get("run_after") is not None:
        try:
            sent["run_after"] = datetime.fromisoformat(given["run_after"])
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"malformed run_after {given['run_after']!r}") from exc
    return payload["args"], payload["kwargs"], sent


def _plain_object(obj: dict[str, Any]) -> Any:
    if TAG not in obj:
        return obj
    if obj[TAG] == "dict" and set(obj) == {TAG, "v"}:  # a plain dict that has a TAG key
        pairs = obj["v"]
        if isinstance(pairs, list) and all(
            isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) for pair in pairs
        ):
            return dict(pairs)
        raise DecodeError(f"malformed dict value {str(pairs)[:80]!r}")
    raise DecodeError(
        f"a tagged value ({str(obj[TAG])[:40]!r}) in the arguments of a task of Django's tasks "
        "framework, which takes plain JSON only (jobqueue's richer types are for @jobqueue.task)"
    )


def declared_by_module(task: Task) -> Task:
    """The task its module declares under ``task.module_path``, as the framework itself finds a
    task again (``Task._reconstruct``); it must be a task of this function declared on a jobqueue
    backend, since that declaration is what registers it in a worker. Else ``InvalidTask``: a
    task built at run time, or declared on another backend, is one no worker can run."""
    path = task.module_path
    try:
        declared = import_string(path)
    except ImportError:
        declared = None
    if not isinstance(declared, Task) or declared.func is not task.func:
        raise InvalidTask(
            f"{path} is not a task its module declares: workers find a task by its module path, "
            f"so declare it there with @task (not at run time)."
        )
    if not isinstance(declared.get_backend(), JobQueueBackend):
        raise InvalidTask(
            f"{path} is declared on the backend {declared.backend!r}, which is not jobqueue's: "
            "workers run only tasks declared on a jobqueue backend; declare it on one (it may "
            "then be sent through another jobqueue backend with .using(backend=...))."
        )
    return declared


def _noop() -> None:
    """Stands in for a task when checking the backend's OPTIONS."""


def plain_json(value: Any, what: str) -> Any:
    """``value`` if JSON carries it there and back unchanged; else the framework's TypeError."""
    try:
        normalized = normalize_json(value)
        back = json.loads(json.dumps(normalized, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what}: {exc} (arguments must survive a JSON round trip)") from None
    if back != normalized:
        raise TypeError(
            f"{what}: {value!r} comes back from JSON as {back!r} (arguments must survive a JSON "
            "round trip; dict keys must be str)"
        )
    return normalized


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def task_error(error: str, tb: str) -> TaskError:
    """A failure as recorded (``module.Class: message``, builtins unprefixed), as the
    framework's ``TaskError``."""
    name = error.partition(":")[0].strip()
    if "." not in name:
        if isinstance(getattr(builtins, name, None), type):
            name = f"builtins.{name}"
        elif isinstance(getattr(exceptions, name, None), type):
            name = f"jobqueue.exceptions.{name}"
        else:  # e.g. WorkerLost: a failure jobqueue recorded, with no class of its own
            name = class_path(exceptions.JobFailed)
    return TaskError(exception_class_path=name, traceback=tb or error)


def history(
    job_id: str,
    attempts: int,
    status: str,
    last_worker: str,
    last_failure: Callable[[], tuple[str, str]],
) -> tuple[list[TaskError], list[str]]:
    """``errors`` (one per failed attempt) and ``worker_ids`` (one per attempt) of a job that
    has had ``attempts`` runs, the last by ``last_worker``: from its failed attempts, read only
    if it has had one (a job that succeeded at its first run costs no query). A failure with no
    attempt of its own (recorded before attempts were, or refused before it ran) is
    ``last_failure()`` (error, traceback); a job canceled gets a ``JobCanceled`` entry."""
    from jobqueue.models import JobAttempt

    past: dict[int, Any] = {}
    if attempts > 1 or (attempts == 1 and status not in (JobStatus.STARTED, JobStatus.SUCCEEDED)):
        rows = JobAttempt.objects.filter(job_id=job_id, number__lte=attempts)
        past = {a.number: a for a in rows.only("number", "worker", "error", "traceback")}
    errors = [task_error(past[n].error, past[n].traceback) for n in sorted(past)]
    if status == JobStatus.FAILED and attempts not in past:
        error, tb = last_failure()
        if error:
            errors.append(task_error(error, tb))
    if status == JobStatus.CANCELED:
        error, tb = last_failure()
        errors.append(
            TaskError(
                exception_class_path=class_path(exceptions.JobCanceled),
                traceback=tb or f"JobCanceled: {error or 'the job was canceled'}",
            )
        )
    workers = [
        past[n].worker if n in past else (last_worker if n == attempts else "")
        for n in range(1, attempts + 1)
    ]
    return errors, workers


def past_attempts(message: Message) -> tuple[list[TaskError], list[str]]:
    """``errors`` and ``worker_ids`` of the attempts before ``message``'s, as ``get_result``
    reads them, for the result a retry's ``task_started`` and context see: nothing to read for
    a first attempt."""
    if message.attempts <= 1:
        return [], []
    from jobqueue.brokers import get_broker

    get_broker().sync()  # the Redis broker's table may not hold the last failure yet
    return history(message.id, message.attempts - 1, JobStatus.QUEUED, "", lambda: ("", ""))


def _on_job_finished(sender: type, job_id: str, task: str, status: str, **kwargs: Any) -> None:
    """jobqueue's ``job_finished``: a job of a framework task sends ``task_finished``."""
    if not task:  # the broker knew only its id
        from jobqueue.models import Job

        task = Job.objects.filter(id=job_id).values_list("task", flat=True).first() or ""
    try:
        job = registry.get_task(task)
    except UnknownTask:
        return
    if isinstance(job, FrameworkJob):
        job.finished(job_id, status)


job_finished.connect(_on_job_finished, dispatch_uid="jobqueue.backend")


def worker_id() -> str:
    """The name this worker process claims jobs under (its supervisor names the child process
    so), ``eager`` in EAGER mode."""
    if get_settings().EAGER:
        return "eager"
    if multiprocessing.parent_process() is not None:
        return multiprocessing.current_process().name
    return f"{socket.gethostname()}.{os.getpid()}"


def _finish(result: TaskResult, status: Any) -> None:
    object.__setattr__(result, "status", status)
    object.__setattr__(result, "finished_at", timezone.now())


def send_robust(signal: Signal, sender: type, result: TaskResult) -> None:
    """Send a framework signal; a receiver that raises is logged, never fails the job."""
    for receiver, response in signal.send_robust(sender, task_result=result):
        if isinstance(response, Exception):
            logger.error(
                "job=%s task=%s receiver=%r state=signal-receiver-failed error=%r",
                result.id,
                result.task.module_path,
                receiver,
                response,
                exc_info=response,
            )


def _job_row(broker: Any, job_id: str, status: str) -> Any:
    """The Job row; on the Redis broker the table follows the broker a moment later, so a job
    just sent may not be in it yet, and a finished one may not show its end yet: wait (at most
    ``ROW_WAIT``) for the row of a finished job to show that end, then take what it holds."""
    from jobqueue.models import Job

    deadline = time.monotonic() + ROW_WAIT
    final = status in FINISHED
    while True:
        broker.sync()
        row = Job.objects.filter(id=job_id).first()
        if row is not None and (not final or row.status == status or time.monotonic() > deadline):
            return row
        if time.monotonic() > deadline:
            raise TaskResultDoesNotExist(f"{job_id}: the broker has it, the Job table not yet")
        time.sleep(0.05)


__all__ = ["FrameworkJob", "JobQueueBackend", "JobQueueTask", "task_backends"]
