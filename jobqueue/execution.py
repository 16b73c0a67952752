"""Running one job: decode, call, encode the result, and decide between success, retry and
failure. Knows nothing of processes or brokers."""

from __future__ import annotations

import logging
import random
import traceback
from datetime import datetime, timedelta
from typing import Any

from django.db import close_old_connections
from django.utils import timezone

from jobqueue import registry
from jobqueue.brokers.base import Outcome
from jobqueue.conf import get_settings
from jobqueue.exceptions import UnknownTask
from jobqueue.message import Message
from jobqueue.serialization import DecodeError, dumps, loads
from jobqueue.states import JobStatus

logger = logging.getLogger(__name__)


def decode_arguments(text: str) -> tuple[list[Any], dict[str, Any]]:
    payload = loads(text)
    if (
        not isinstance(payload, dict)
        or set(payload) != {"args", "kwargs"}
        or not isinstance(payload["args"], list)
        or not isinstance(payload["kwargs"], dict)
    ):
        raise DecodeError('arguments must be {"args": [...], "kwargs": {...}}')
    return payload["args"], payload["kwargs"]


def describe(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}".removeprefix("builtins.")


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
            backoff = registry.get_task(task_name).retry_backoff
        except UnknownTask:
            backoff = 1.0
        run_at = now + timedelta(seconds=retry_delay(backoff, attempts))
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
        )
    logger.warning(
        "job=%s task=%s state=failed attempts=%s error=%s", job_id, task_name, attempts, error
    )
    return Outcome(
        job_id, JobStatus.FAILED, started_at, now, error=error, traceback=tb, token=token
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
        args, kwargs = decode_arguments(message.arguments)
    except (UnknownTask, DecodeError) as exc:
        # Bad input stays bad: retrying would change nothing.
        return failure(message, started_at, describe(exc), retryable=False)
    close_old_connections()
    try:
        value = task.func(*args, **kwargs)
        result = dumps(value, f"{message.task}() return value")
    except BaseException as exc:
        return failure(message, started_at, describe(exc), traceback.format_exc())
    finally:
        close_old_connections()
    logger.debug("job=%s task=%s state=succeeded", message.id, message.task)
    return Outcome(
        message.id,
        JobStatus.SUCCEEDED,
        started_at,
        timezone.now(),
        result=result,
        token=message.token,
    )
