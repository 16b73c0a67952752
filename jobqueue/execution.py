"""Running one job: decode, call, encode the result, and decide between success, retry and
failure. Knows nothing of processes or brokers."""

from __future__ import annotations

import inspect
import logging
import os
import random
import traceback
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import async_to_sync
from django.db import close_old_connections, connections
from django.utils import timezone

from jobqueue import registry
from jobqueue.brokers.base import Outcome
from jobqueue.conf import get_settings
from jobqueue.exceptions import SerializationError, UnknownTask
from jobqueue.message import Message
from jobqueue.serialization import DecodeError, dumps, loads
from jobqueue.states import JobStatus

logger = logging.getLogger(__name__)


#: The key of what a job sent through Django's tasks framework adds to its arguments (what
#: ``.using()`` set): ignored here, so a task moved from ``@django.tasks.task`` to
#: ``@jobqueue.task`` still runs the jobs queued before the move.
FRAMEWORK_ENVELOPE = "sent"


def decode_arguments(text: str) -> tuple[list[Any], dict[str, Any]]:
    payload = loads(text)
    if (
        not isinstance(payload, dict)
        or not {"args", "kwargs"} <= set(payload) <= {"args", "kwargs", FRAMEWORK_ENVELOPE}
        or not isinstance(payload["args"], list)
        or not isinstance(payload["kwargs"], dict)
    ):
        raise DecodeError('arguments must be {"args": [...], "kwargs": {...}}')
    return payload["args"], payload["kwargs"]


def storable(text: str) -> str:
    """``text`` as every database and broker stores it: NUL (refused by PostgreSQL) written as
    ``\\x00``, and lone surrogates (from ``surrogateescape``, refused by any UTF-8 encoder) as
    ``\\udce9``, so an outcome is never refused for its text."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def describe(exc: BaseException) -> str:
    try:
        text = f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"
    except Exception:  # a __str__ that raises: the failure is still described
        text = f"{type(exc).__module__}.{type(exc).__qualname__}: <unprintable>"
    return storable(text.removeprefix("builtins."))


def call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``func``; an ``async def`` runs to completion through asgiref's ``async_to_sync``, as
    Django's own ``Task.call`` does: on an event loop of its own, with ``sync_to_async`` calls
    (the ORM) run back on this thread, with the connections the worker checks between jobs."""
    if inspect.iscoroutinefunction(func):
        return async_to_sync(func)(*args, **kwargs)
    return func(*args, **kwargs)


def in_transaction(raw: Any) -> bool:
    """Whether a driver connection has a transaction open (sqlite3, psycopg 3, psycopg2)."""
    if isinstance(getattr(raw, "in_transaction", None), bool):
        return bool(raw.in_transaction)  # sqlite3
    status = getattr(getattr(raw, "info", None), "transaction_status", None)
    if status is None and callable(getattr(raw, "get_transaction_status", None)):
        status = raw.get_transaction_status()  # psycopg2
    return status is not None and int(status) != 0  # 0: idle, in both psycopgs


def end_open_transactions(message: Message) -> None:
    """A task that began a transaction by hand and never ended it would hold its locks and
    swallow every later write of this process (the next jobs', the broker's): such a
    connection is closed, which rolls the transaction back. So is one the task broke (closed
    under Django's feet), which Django may take for usable."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is None or conn.in_atomic_block:
            continue
        try:
            state = "transaction-left-open" if in_transaction(conn.connection) else ""
        except Exception:  # the driver refuses to answer: the task broke the connection
            state = "connection-broken"
        if state:
            logger.warning(
                "job=%s task=%s state=%s database=%s (closed)",
                message.id,
                message.task,
                state,
                conn.alias,
            )
            conn.close()


def retry_delay(backoff: float, attempt: int) -> float:
    """Exponential backoff with jitter: between half and all of ``backoff * 2**(attempt-1)``."""
    ceiling = min(backoff * 2 ** (attempt - 1), get_settings().RETRY_BACKOFF_MAX)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def failure(
    message: Message, started_at: datetime, error: str, tb: str = "", *, retryable: bool = True
) -> Outcome:
    """A failed run: scheduled again while retries remain, else failed for good."""
    now = timezone.now()
    job_id, task_name, attempts = message.id, message.task, message.attempts
    token = message.token
    if retryable and attempts <= message.max_retries:
        try:
            backoff = registry.get_task(task_name).backoff(message)
        except UnknownTask:
            backoff = 1.0
        delay = retry_delay(backoff, attempts)
        run_at = now + timedelta(seconds=delay)
        logger.info(
            "job=%s task=%s state=retry attempt=%s error=%s", job_id, task_name, attempts, error
        )
        return Outcome(
            job_id,
            JobStatus.SCHEDULED,
            started_at,
            now,
            error=error,
            traceback=tb,
            run_at=run_at,
            token=token,
            delay=delay,
            task=task_name,
        )
    logger.warning(
        "job=%s task=%s state=failed attempts=%s error=%s", job_id, task_name, attempts, error
    )
    return Outcome(
        job_id,
        JobStatus.FAILED,
        started_at,
        now,
        error=error,
        traceback=tb,
        token=token,
        task=task_name,
    )


def execute(message: Message) -> Outcome:
    """Run ``message``'s task; whatever it raises becomes part of the outcome, BaseException
    included (``sys.exit()``, KeyboardInterrupt, GeneratorExit from a library): a job never
    takes its worker process down by raising."""
    started_at = timezone.now()
    if message.rejected:
        return failure(message, started_at, message.rejected, retryable=False)
    try:
        task = registry.get_task(message.task)
        args, kwargs = task.decode(message)
    except (UnknownTask, DecodeError) as exc:
        # Bad input stays bad: retrying would change nothing.
        return failure(message, started_at, describe(exc), retryable=False)
    close_old_connections()
    pid = os.getpid()
    try:
        value = task.run(message, args, kwargs)
        try:
            result = dumps(value, f"{message.task}() return value")
        except SerializationError as exc:
            # It ran and returned what cannot be stored: a retry would only run it again.
            return failure(message, started_at, describe(exc), retryable=False)
    except BaseException as exc:
        return failure(message, started_at, describe(exc), storable(traceback.format_exc()))
    finally:
        if os.getpid() == pid:  # a copy the task forked must not touch the shared connections
            end_open_transactions(message)
            close_old_connections()
    logger.debug("job=%s task=%s state=succeeded", message.id, message.task)
    return Outcome(
        message.id,
        JobStatus.SUCCEEDED,
        started_at,
        timezone.now(),
        result=storable(result),
        token=message.token,
        task=message.task,
    )
