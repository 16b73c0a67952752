"""What travels from ``.delay()`` to a worker: a job's id, task name, JSON arguments and options."""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

CANONICAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_lock = threading.Lock()
_last = 0
_random = b""  # random bytes drawn ahead, 8 per id (a system call per 64 ids, not per id)
_random_pid = 0


def _forget_random() -> None:
    """A forked child draws its own: a copy of its parent's would repeat its parent's ids."""
    global _random
    _random = b""


os.register_at_fork(after_in_child=_forget_random)


def new_job_id() -> str:
    """A UUIDv7 (RFC 9562): random enough to be unguessable, ordered by time so that the
    database broker gets first-in first-out from the primary key alone."""
    global _last, _random, _random_pid
    with _lock:
        # Milliseconds in the top 48 bits, then a counter that keeps ids from one process monotonic.
        stamp = max(time.time_ns() // 1_000_000 << 12, _last + 1)
        _last = stamp
        if len(_random) < 8 or _random_pid != os.getpid():
            _random, _random_pid = os.urandom(512), os.getpid()
        drawn, _random = _random[:8], _random[8:]
    high = (stamp >> 12) << 16 | 0x7000 | (stamp & 0xFFF)
    low = int.from_bytes(drawn) & ((1 << 62) - 1) | (1 << 63)
    h = f"{high << 64 | low:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def canonical_job_id(value: object) -> str:
    """``value`` as a job id in its one spelling (a lowercase hyphenated UUID); ValueError if
    it is none."""
    text = str(value)
    return text if CANONICAL_ID.fullmatch(text) else str(uuid.UUID(text))


@dataclass(frozen=True)
class Lease:
    """One claim of one job. ``token`` is the job's fencing token: every claim (and every other
    change a broker makes to the job: cancel, requeue, recovery) raises it, so a finish, release
    or renewal that carries an older token comes from a run that no longer owns the job, and the
    broker refuses it."""

    job_id: str
    token: int


@dataclass
class Message:
    """One job as a broker stores it; ``arguments`` is ``{"args": [...], "kwargs": {...}}``."""

    task: str
    arguments: str
    queue: str
    id: str = field(default_factory=new_job_id)
    priority: int = 0
    run_at: datetime | None = None
    enqueued_at: datetime = field(default_factory=timezone.now)
    max_retries: int = 0
    timeout: float | None = None
    attempts: int = 0
    rejected: str = ""  # why a broker refused to decode it: such a message is failed, never run
    token: int = 0  # the fencing token of the claim that handed it out (see brokers.base.Lease)

    @property
    def lease(self) -> Lease:
        return Lease(self.id, self.token)

    @property
    def is_scheduled(self) -> bool:
        return self.run_at is not None and self.run_at > self.enqueued_at
