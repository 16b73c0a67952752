"""How jobs ended, as Redis keeps it: ``P:r:<id>`` = "version|outcome JSON" for RESULT_TTL
seconds, and a producer's view of a job's state (Redis first, the Job table once Redis has
forgotten it)."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis

from jobqueue.brokers.base import JobState, Outcome
from jobqueue.conf import get_settings
from jobqueue.exceptions import BrokerError, JobNotFound
from jobqueue.states import FINISHED, JobStatus

if TYPE_CHECKING:
    from jobqueue.brokers.redis.broker import RedisBroker

logger = logging.getLogger(__name__)


def ttl() -> int:
    """Seconds Redis keeps how a job ended. With RESULT_TTL None the Job table keeps results
    for good; Redis, whose memory must stay bounded, a day."""
    value = get_settings().RESULT_TTL
    return max(int(value if value is not None else 86400), 1)


def payload(outcome: Outcome) -> dict[str, Any]:
    return {
        "status": outcome.status.value,
        "result": outcome.result,
        "error": outcome.error,
        "traceback": outcome.traceback,
        "started_at": outcome.started_at.isoformat(),
        "ended_at": outcome.ended_at.isoformat(),
        "run_at": outcome.run_at.isoformat() if outcome.run_at else None,
    }


def moment(data: dict[str, Any], name: str) -> datetime | None:
    """``<name>_at`` (ISO, from Python) or ``<name>_ms`` (from a script) of an outcome."""
    if data.get(f"{name}_at"):
        return datetime.fromisoformat(data[f"{name}_at"])
    if data.get(f"{name}_ms"):
        return datetime.fromtimestamp(int(data[f"{name}_ms"]) / 1000, UTC)
    return None


def split(value: str) -> tuple[int, dict[str, Any]]:
    """A ``P:r:<id>`` value: (version, outcome); one written before versions is bare JSON."""
    if value.startswith("{"):
        return 0, json.loads(value)
    version, _, data = value.partition("|")
    return int(version), json.loads(data)


def read_outcome(job_id: str, value: bytes) -> JobState | None:
    """The state a ``P:r:<id>`` value says; None (logged) if it cannot be read: only something
    written by hand can be malformed, and it is taken for no outcome at all."""
    try:
        _, data = split(value.decode())
        status = JobStatus(data["status"])
        if status not in FINISHED:
            raise ValueError(f"status {status} is not an end")
        for key in ("result", "error", "traceback"):
            if not isinstance(data.get(key), str | None):
                raise ValueError(f"{key} is not text")
        return JobState(
            status=status.value,
            result=data.get("result"),
            error=data.get("error") or "",
            traceback=data.get("traceback") or "",
            ended_at=moment(data, "ended"),
        )
    except Exception as exc:
        logger.warning("job=%s state=unreadable-outcome error=%r (taken for none)", job_id, exc)
        return None


def state(broker: RedisBroker, job_id: str) -> JobState:
    key = broker.key
    try:
        pipe = broker.client.pipeline(transaction=False)
        pipe.get(key("r", job_id))
        pipe.zscore(key("running"), job_id)
        pipe.zscore(key("scheduled"), job_id)
        pipe.hexists(key("msg"), job_id)
        ended, running, scheduled, waiting = pipe.execute()
    except redis.RedisError as exc:
        try:
            return broker.table_state(job_id)  # the Job table, as last recorded
        except JobNotFound:
            # Not yet recorded: it may well be waiting in Redis. Say what is known.
            raise BrokerError(f"job {job_id}: Redis cannot be reached ({exc})") from exc
    if ended is not None:
        finished = read_outcome(job_id, ended)
        if finished is not None:
            return finished
    if running is not None:
        return JobState(status=JobStatus.STARTED)
    if scheduled is not None:
        return JobState(status=JobStatus.SCHEDULED)
    if waiting:
        return JobState(status=JobStatus.QUEUED)
    return broker.table_state(job_id)


def wait_finished(broker: RedisBroker, job_id: str, timeout: float | None) -> JobState:
    """Sleeps on the ``done`` channel; checks the state after subscribing, so a job that
    finishes in between is not missed."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pubsub = broker.client.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(broker.key("done"))
        while True:
            current = state(broker, job_id)
            if current.status in FINISHED:
                return current
            remaining = 1.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"job {job_id} is still {current.status} after {timeout} s")
            # Wake on any finish, and at least every second (jobs finished by the outbox
            # path or by an operator announce nothing).
            pubsub.get_message(timeout=min(remaining, 1.0))
    except redis.RedisError:
        remaining_time = None if deadline is None else max(deadline - time.monotonic(), 0)
        return broker.table_wait_finished(job_id, remaining_time)
    finally:
        pubsub.close()
