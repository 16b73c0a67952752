"""``@task``: a function that can also be run later by a worker, with its options."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from django.utils import timezone

from jobqueue import registry
from jobqueue.conf import get_settings
from jobqueue.exceptions import ConfigurationError
from jobqueue.message import Message
from jobqueue.schedules import from_declaration
from jobqueue.serialization import json_text, to_jsonable

if TYPE_CHECKING:
    from jobqueue.result import JobResult

P = ParamSpec("P")
R = TypeVar("R")

PRIORITY_MIN, PRIORITY_MAX = -100, 100


def _check_priority(priority: int) -> int:
    if not isinstance(priority, int) or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ValueError(
            f"priority must be an int from {PRIORITY_MIN} to {PRIORITY_MAX}, not {priority!r}"
        )
    return priority


class Task(Generic[P, R]):
    """A registered function. Calling it runs it here and now; ``delay`` sends it to a worker."""

    def __init__(
        self,
        func: Callable[P, R],
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        max_retries: int = 0,
        retry_backoff: float = 1.0,
        timeout: float | None = None,
        schedule: Any = None,
    ) -> None:
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(f"max_retries must be an int >= 0, not {max_retries!r}")
        if retry_backoff < 0:
            raise ConfigurationError(f"retry_backoff must be >= 0 seconds, not {retry_backoff!r}")
        if timeout is not None and timeout <= 0:
            raise ConfigurationError(f"timeout must be > 0 seconds or None, not {timeout!r}")
        self.func = func
        self.name = name or f"{func.__module__}.{func.__qualname__}"
        self.module = func.__module__
        self.queue = queue
        self.priority = _check_priority(priority)
        self.max_retries = max_retries
        self.retry_backoff = float(retry_backoff)
        self.timeout = timeout
        self.schedule = None if schedule is None else from_declaration(schedule)
        self.signature = inspect.signature(func)
        self._imported_under: Any = None
        self._imported = False
        functools.update_wrapper(self, func)  # type: ignore[arg-type]

    def _workers_import(self, conf: Any) -> bool:
        """``registry.worker_imports(self.module)``, worked out once per settings."""
        if self._imported_under is not conf:
            self._imported = registry.worker_imports(self.module)
            self._imported_under = conf
        return self._imported

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.func(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> JobResult:
        """Send the job with default options; returns at once with a handle on it."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        queue: str | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        priority: int | None = None,
    ) -> JobResult:
        """Send the job; ``countdown`` (seconds) or ``eta`` delay it, ``queue`` and ``priority``
        override the task's own."""
        message = self.message(
            args, kwargs, queue=queue, countdown=countdown, eta=eta, priority=priority
        )
        return _send([message])[0]

    def map(self, args_list: Iterable[Sequence[Any]], **options: Any) -> list[JobResult]:
        """Send one job per argument tuple in one broker round trip."""
        return _send([self.message(args, None, **options) for args in args_list])

    def message(
        self,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        queue: str | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        priority: int | None = None,
    ) -> Message:
        """Validate everything a worker would trip on, and build the message."""
        kwargs = dict(kwargs or {})
        conf = get_settings()
        queue = queue or self.queue or conf.DEFAULT_QUEUE
        if queue not in conf.QUEUES:
            raise ValueError(
                f"{self.name}: unknown queue {queue!r}; JOBQUEUE['QUEUES'] has {list(conf.QUEUES)}"
            )
        if not conf.EAGER and not self._workers_import(conf):
            raise ConfigurationError(
                f"{self.name} is defined in {self.module!r}, which workers do not import: move it "
                "to tasks.py in an installed app, or add the module to JOBQUEUE['TASK_MODULES']"
            )
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}(): {exc}") from None
        payload = {
            "args": [to_jsonable(v, _arg_name(self, bound, i)) for i, v in enumerate(bound.args)],
            "kwargs": {
                k: to_jsonable(v, f"{self.name}() argument {k!r}") for k, v in bound.kwargs.items()
            },
        }
        now = timezone.now()
        if countdown is not None and eta is not None:
            raise ValueError("give countdown or eta, not both")
        run_at = now + timedelta(seconds=countdown) if countdown is not None else eta
        if run_at is not None and timezone.is_naive(run_at):
            raise ValueError("eta must be an aware datetime")
        return Message(
            task=self.name,
            arguments=json_text(payload),
            queue=queue,
            priority=_check_priority(self.priority if priority is None else priority),
            run_at=run_at,
            enqueued_at=now,
            max_retries=self.max_retries,
            timeout=self.timeout,
        )


def _arg_name(task: Task, bound: inspect.BoundArguments, index: int) -> str:
    params = [
        p
        for p in task.signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if index < len(params):
        return f"{task.name}() argument {params[index].name!r}"
    return f"{task.name}() positional argument {index}"


def _send(messages: list[Message]) -> list[JobResult]:
    from jobqueue.brokers import get_broker
    from jobqueue.eager import run_eagerly
    from jobqueue.result import JobResult

    if get_settings().EAGER:
        run_eagerly(messages)
    else:
        get_broker().enqueue(messages)
    return [JobResult(m.id) for m in messages]


@overload
def task(func: Callable[P, R], /) -> Task[P, R]: ...
@overload
def task(
    *,
    name: str | None = ...,
    queue: str | None = ...,
    priority: int = ...,
    max_retries: int = ...,
    retry_backoff: float = ...,
    timeout: float | None = ...,
    schedule: Any = ...,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...
def task(func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Register ``func`` as a task: ``@task`` or ``@task(queue=..., max_retries=..., ...)``;
    ``schedule=`` (a cron string, ``Cron(...)`` or a timedelta) also runs it periodically."""

    def decorate(f: Callable[P, R]) -> Task[P, R]:
        t: Task[P, R] = Task(f, **options)
        registry.register(t)
        return t

    return decorate(func) if func is not None else decorate
