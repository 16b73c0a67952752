"""``@task``: a function that can also be run later by a worker, with its options."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from django.utils import timezone

from jobqueue import names, registry
from jobqueue.conf import MAX_SECONDS, get_settings
from jobqueue.exceptions import ConfigurationError
from jobqueue.message import Message
from jobqueue.schedules import from_declaration
from jobqueue.serialization import arguments_text

if TYPE_CHECKING:
    from jobqueue.result import JobResult

P = ParamSpec("P")
R = TypeVar("R")

PRIORITY_MIN, PRIORITY_MAX = -100, 100
MAX_RETRIES_MAX = 32767  # Job.max_retries is a PositiveSmallIntegerField


def _seconds(value: object, least: float, inclusive: bool) -> bool:
    """A finite number of seconds from ``least`` to MAX_SECONDS (never a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if not (math.isfinite(value) and value <= MAX_SECONDS):
        return False
    return value >= least if inclusive else value > least


def _priority_problem(priority: object) -> str | None:
    if (
        isinstance(priority, bool)
        or not isinstance(priority, int)
        or not PRIORITY_MIN <= priority <= PRIORITY_MAX
    ):
        return f"priority must be an int from {PRIORITY_MIN} to {PRIORITY_MAX}, not {priority!r}"
    return None


def _options_problem(max_retries: object, retry_backoff: object, timeout: object) -> str | None:
    """Why a task's options cannot travel with its jobs (columns, worker), or None."""
    if (
        isinstance(max_retries, bool)
        or not isinstance(max_retries, int)
        or not 0 <= max_retries <= MAX_RETRIES_MAX
    ):
        return f"max_retries must be an int from 0 to {MAX_RETRIES_MAX}, not {max_retries!r}"
    if not _seconds(retry_backoff, 0, inclusive=True):
        return (
            f"retry_backoff must be a number of seconds from 0 to {MAX_SECONDS:_}, "
            f"not {retry_backoff!r}"
        )
    if timeout is not None and not _seconds(timeout, 0, inclusive=False):
        return (
            f"timeout must be a number of seconds > 0 (at most {MAX_SECONDS:_}) or None, "
            f"not {timeout!r}"
        )
    return None


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
        self.name = f"{func.__module__}.{func.__qualname__}" if name is None else name
        problem = (
            names.problem("task name", self.name, names.TASK_NAME_MAX)
            or (queue is not None and names.problem("queue", queue, names.QUEUE_NAME_MAX))
            or _priority_problem(priority)
            or _options_problem(max_retries, retry_backoff, timeout)
        )
        if problem:
            # Raised while the app's tasks module is imported, so it stops django.setup() and
            # every command: the last line of that traceback must say all (what, where, why).
            code = getattr(func, "__code__", None)
            where = f" ({code.co_filename}, line {code.co_firstlineno})" if code else ""
            raise ConfigurationError(
                f"@task {func.__module__}.{func.__qualname__}{where}: {problem}"
            )
        self.func = func
        self.module = func.__module__
        self.queue = queue
        # Plain int and float: an (int, Enum) member would be written as 'Prio.HIGH'.
        self.priority = int(priority)
        self.max_retries = int(max_retries)
        self.retry_backoff = float(retry_backoff)
        self.timeout = None if timeout is None else float(timeout)
        self.schedule = None if schedule is None else from_declaration(schedule)
        self.signature = inspect.signature(func)
        self._shape = _Shape(self.signature)
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

    def _bind(
        self, args: Sequence[Any], kwargs: Mapping[str, Any] | None
    ) -> tuple[Sequence[Any], Mapping[str, Any]]:
        """The call's positional and keyword arguments as ``Signature.bind`` sorts them; a
        TypeError names the task."""
        shape = self._shape
        if shape.signature is not self.signature:  # replaced since: worked out again
            shape = self._shape = _Shape(self.signature)
        if not kwargs and shape.binds(len(args)):
            return args, {}
        try:
            bound = self.signature.bind(*args, **(kwargs or {}))
        except TypeError as exc:
            raise TypeError(f"{self.name}(): {exc}") from None
        return bound.args, bound.kwargs

    def _argument_name(self, key: int | str) -> str:
        """How an error names the argument at position or keyword ``key``."""
        if isinstance(key, str):
            return f"{self.name}() argument {key!r}"
        positional = self._shape.positional
        if key < len(positional):
            return f"{self.name}() argument {positional[key]!r}"
        return f"{self.name}() positional argument {key}"

    def decode(self, message: Message) -> tuple[list[Any], dict[str, Any]]:
        """How a worker reads ``message``'s arguments (``DecodeError`` fails the job, unretried);
        a subclass may read them its own way."""
        from jobqueue.execution import decode_arguments

        return decode_arguments(message.arguments)

    def backoff(self, message: Message) -> float:
        """Seconds before ``message``'s first retry, doubled per retry; a subclass may vary it
        per job."""
        return self.retry_backoff

    def run(self, message: Message, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """How a worker runs ``message``: the function with its decoded arguments (an
        ``async def`` on an event loop of its own)."""
        from jobqueue.execution import call

        return call(self.func, *args, **kwargs)

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
        """Validate everything a worker or the Job table would trip on, and build the message;
        nothing is sent when this raises."""
        conf = get_settings()
        if queue is None:
            queue = self.queue or conf.DEFAULT_QUEUE
        # Every name in QUEUES was checked with the settings: only those can be sent to.
        if queue not in conf.QUEUES:
            raise ValueError(
                f"{self.name}: unknown queue {queue!r}; JOBQUEUE['QUEUES'] has {list(conf.QUEUES)}"
            )
        if priority is None:
            priority = self.priority
        problem = _priority_problem(priority) or _options_problem(
            self.max_retries, self.retry_backoff, self.timeout
        )
        if problem:
            raise ValueError(f"{self.name}: {problem}")
        if not conf.EAGER and not self._workers_import(conf):
            raise ConfigurationError(
                f"{self.name} is defined in {self.module!r}, which workers do not import: move it "
                "to tasks.py (or a tasks package that imports it) in an installed app, or add the "
                "module to JOBQUEUE['TASK_MODULES']"
            )
        now = timezone.now()
        run_at = _run_at(self.name, now, countdown, eta)
        if not isinstance(args, list | tuple):
            raise TypeError(
                f"{self.name}: args must be a list or tuple of positional arguments, "
                f"not a {type(args).__name__}"
            )
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise TypeError(
                f"{self.name}: kwargs must be a dict of keyword arguments, "
                f"not a {type(kwargs).__name__}"
            )
        positional, keywords = self._bind(args, kwargs)
        return Message(
            task=self.name,
            arguments=arguments_text(positional, keywords, self._argument_name),
            queue=queue,
            priority=int(priority),
            run_at=run_at,
            enqueued_at=now,
            max_retries=int(self.max_retries),
            timeout=None if self.timeout is None else float(self.timeout),
        )


def _run_at(
    name: str, now: datetime, countdown: float | None, eta: datetime | None
) -> datetime | None:
    """When the job may run (None: now), from ``countdown`` seconds or an aware ``eta``."""
    if countdown is not None and eta is not None:
        raise ValueError(f"{name}: give countdown or eta, not both")
    if countdown is not None:
        if not _seconds(countdown, -MAX_SECONDS, inclusive=True):
            raise ValueError(
                f"{name}: countdown must be a number of seconds, at most {MAX_SECONDS:_}, "
                f"not {countdown!r}"
            )
        return now + timedelta(seconds=float(countdown))
    if eta is not None and not (isinstance(eta, datetime) and timezone.is_aware(eta)):
        raise ValueError(f"{name}: eta must be an aware datetime, not {eta!r}")
    return eta


class _Shape:
    """How many positional arguments a signature takes, worked out once: a call with only
    those binds to itself, without ``Signature.bind``."""

    def __init__(self, signature: inspect.Signature) -> None:
        self.signature = signature
        params = list(signature.parameters.values())
        self.positional = [p.name for p in params if p.kind in _POSITIONAL]
        self.fewest = sum(1 for p in params if p.kind in _POSITIONAL and p.default is p.empty)
        self.most = (
            None if any(p.kind is p.VAR_POSITIONAL for p in params) else len(self.positional)
        )
        self.keyword_needed = any(p.kind is p.KEYWORD_ONLY and p.default is p.empty for p in params)

    def binds(self, count: int) -> bool:
        """Whether ``count`` positional arguments alone are a valid call."""
        return (
            not self.keyword_needed
            and self.fewest <= count
            and (self.most is None or count <= self.most)
        )


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


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
