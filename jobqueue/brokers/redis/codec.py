"""Message bodies as Redis keeps them: one signed line per job.

``1|signature|task|queue|priority|max_retries|timeout|enqueued ms|arguments``. The signature
(``jobqueue.signing``) covers the job id and everything after it, so a body cannot be moved to
another id or altered. A body is signed once, by the producer; the tracker stores it as it came
and requeues, relays and re-sends send that stored body again: nothing is ever signed from what
the Job table holds.
"""

from __future__ import annotations

from datetime import UTC, datetime

from jobqueue import signing
from jobqueue.message import Message

VERSION = "1"


def to_ms(moment: datetime | None) -> int:
    return int(moment.timestamp() * 1000) if moment else 0


def encode(message: Message) -> str:
    for name, value in (("task", message.task), ("queue", message.queue)):
        if "|" in value:  # the scripts split bodies on it
            raise ValueError(f"a {name} name may not contain '|': {value!r}")
    timeout = "" if message.timeout is None else repr(message.timeout)
    rest = "|".join(
        (
            message.task,
            message.queue,
            str(message.priority),
            str(message.max_retries),
            timeout,
            str(to_ms(message.enqueued_at)),
            message.arguments,
        )
    )
    return f"{VERSION}|{signing.sign(message.id + '|' + rest)}|{rest}"


def verified(job_id: str, body: str) -> bool:
    """Whether ``body`` is a jobqueue body signed for ``job_id`` with one of this site's keys."""
    parts = body.split("|", 2)
    return (
        len(parts) == 3 and parts[0] == VERSION and signing.verify(f"{job_id}|{parts[2]}", parts[1])
    )


def decode(job_id: str, body: str, *, trusted: bool = False) -> Message:
    """A Message; one that is malformed or fails verification comes back ``rejected`` (failed,
    never run). ``trusted``: this very body was verified for this job before (tracking records a
    job's body once per event that carries it)."""
    parts = body.split("|", 8)
    if len(parts) != 9 or parts[0] != VERSION:
        return Message(
            id=job_id,
            task="",
            arguments=body,
            queue="",
            rejected=f"malformed message (not jobqueue v{VERSION}): {body[:80]!r}",
        )
    _, _, task, queue, priority, max_retries, timeout, enqueued, arguments = parts
    if not trusted and not verified(job_id, body):
        return Message(
            id=job_id,
            task=task,
            arguments=arguments,
            queue=queue,
            rejected="message failed signature verification; it was not run",
        )
    try:
        return Message(
            id=job_id,
            task=task,
            arguments=arguments,
            queue=queue,
            priority=int(priority),
            max_retries=int(max_retries),
            timeout=float(timeout) if timeout else None,
            enqueued_at=datetime.fromtimestamp(int(enqueued) / 1000, UTC),
        )
    except ValueError as exc:
        return Message(
            id=job_id, task=task, arguments=arguments, queue=queue, rejected=f"malformed: {exc}"
        )
