"""What a worker child shares with its supervisor: the leases it holds, the job it runs, and the
outcomes it has not yet had acknowledged.

A slot lives in shared memory, one per child process (a new one for each child, so a child killed
while holding the lock cannot stall the next). The child writes; the supervisor reads it to renew
exactly the leases the child holds, to enforce timeouts from outside (even on code stuck in C),
and, once the child has died for whatever reason, to acknowledge its finished outcomes and give
its other jobs back. Writes are ordered so that a child killed mid-write leaves a slot that tells
no lie: an outcome is in the buffer before its lease is marked done, and the buffer's length is
raised only once the outcome's bytes are in place.

The slot is one shared anonymous mapping: the kernel gives it zeroed pages as they are first
touched, so the outcome buffer costs only the pages its outcomes have used, not its whole size.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import mmap
import os
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jobqueue.brokers.base import Outcome
from jobqueue.message import Lease, Message
from jobqueue.states import JobStatus

BUFFER_BYTES = 1 << 20  # finished outcomes awaiting their ack
LOCK_TIMEOUT = 1.0  # seconds the supervisor waits for a child's lock before trying later

EMPTY, CLAIMED, RUNNING, DONE, DROPPED = range(5)


class LeaseEntry(ctypes.Structure):
    _fields_ = [
        ("job_id", ctypes.c_char * 36),
        ("token", ctypes.c_ulonglong),
        ("state", ctypes.c_byte),
    ]


class SlotHeader(ctypes.Structure):
    _fields_ = [
        ("running", ctypes.c_int),  # index of the running job's lease; -1 when idle
        ("task", ctypes.c_char * 200),
        ("attempts", ctypes.c_int),
        ("max_retries", ctypes.c_int),
        ("started", ctypes.c_double),  # time.monotonic() at start
        ("started_wall", ctypes.c_double),  # time.time() at start, for the records
        ("deadline", ctypes.c_double),  # time.monotonic() past which it is killed; 0.0: none
        ("jobs_done", ctypes.c_long),
        ("buffered", ctypes.c_long),  # bytes of outcomes in the buffer
        ("finished", ctypes.c_byte),  # a burst child found nothing left to run
        ("recycled", ctypes.c_char * 100),  # why the child retired itself (max-jobs, ...)
    ]


def clip(text: str, size: int) -> bytes:
    """At most ``size`` bytes of ``text`` in UTF-8, cut on a character's boundary (a character
    cut in two would not decode in the supervisor)."""
    return text.encode()[:size].decode(errors="ignore").encode()


def encode_outcome(outcome: Outcome) -> bytes:
    """One outcome as a line of JSON (never pickle: the supervisor only reads data)."""
    return (
        json.dumps(
            {
                "job_id": outcome.job_id,
                "status": outcome.status.value,
                "started_at": outcome.started_at.isoformat(),
                "ended_at": outcome.ended_at.isoformat(),
                "result": outcome.result,
                "error": outcome.error,
                "traceback": outcome.traceback,
                "run_at": outcome.run_at.isoformat() if outcome.run_at else None,
                "token": outcome.token,
                "delay": outcome.delay,
                "task": outcome.task,
            },
            separators=(",", ":"),
        ).encode()
        + b"\n"
    )


def decode_outcomes(data: bytes) -> list[Outcome]:
    outcomes = []
    for line in data.splitlines():
        d: dict[str, Any] = json.loads(line)
        outcomes.append(
            Outcome(
                job_id=d["job_id"],
                status=JobStatus(d["status"]),
                started_at=datetime.fromisoformat(d["started_at"]),
                ended_at=datetime.fromisoformat(d["ended_at"]),
                result=d["result"],
                error=d["error"],
                traceback=d["traceback"],
                run_at=datetime.fromisoformat(d["run_at"]) if d["run_at"] else None,
                token=d["token"],
                delay=d.get("delay"),
                task=d.get("task", ""),
            )
        )
    return outcomes


@dataclass
class Remains:
    """What a dead child left: outcomes to acknowledge, jobs it never started (their attempt is
    given back), and jobs whose run may have happened without an outcome."""

    outcomes: list[Outcome] = field(default_factory=list)
    unstarted: list[Lease] = field(default_factory=list)
    ran: list[Lease] = field(default_factory=list)
    recycled: str = ""
    finished: bool = False

    @property
    def leases(self) -> list[Lease]:
        return [*(o.lease for o in self.outcomes), *self.unstarted, *self.ran]


class Slot:
    """One child's shared state. The child calls ``claimed``, ``begin``, ``finished``,
    ``acked``; the supervisor calls ``leases``, ``current``, ``drop`` and, once the child is
    dead, ``remains``."""

    def __init__(self, context: Any, size: int, buffer_bytes: int = BUFFER_BYTES) -> None:
        entries = LeaseEntry * size
        start = ctypes.sizeof(SlotHeader)
        self._memory = mmap.mmap(-1, start + ctypes.sizeof(entries) + buffer_bytes)
        self.header = SlotHeader.from_buffer(self._memory)
        self.header.running = -1
        self.entries = entries.from_buffer(self._memory, start)
        self.buffer = memoryview(self._memory)[start + ctypes.sizeof(entries) :]
        self.lock = context.Lock()
        # The child's own index of its entries (a forked copy each): no scan per job.
        self._free = list(range(size - 1, -1, -1))
        self._where: dict[str, int] = {}
        self._done: list[int] = []

    @contextmanager
    def _locked(self, timeout: float | None = None) -> Iterator[bool]:
        taken = self.lock.acquire(timeout=timeout) if timeout is not None else self.lock.acquire()
        try:
            yield taken
        finally:
            if taken:
                self.lock.release()

    # -- the child -------------------------------------------------------------------------------
    def claimed(self, messages: Sequence[Message]) -> None:
        """Record a batch's leases before any of it runs (the supervisor renews them)."""
        with self.lock:
            for message in messages:
                index = self._free.pop()
                self._where[message.id] = index
                entry = self.entries[index]
                entry.job_id = message.id.encode()
                entry.token = message.token
                entry.state = CLAIMED

    def begin(self, message: Message) -> bool:
        """Mark ``message`` running; False if the supervisor dropped it (canceled, or no longer
        this child's): it is not to run."""
        now = time.monotonic()
        with self.lock:
            index = self._where[message.id]
            entry = self.entries[index]
            if entry.state == DROPPED:
                entry.state = EMPTY
                self._forget(message.id)
                return False
            entry.state = RUNNING
            h = self.header
            h.task = clip(message.task, 200)
            h.attempts = message.attempts
            h.max_retries = message.max_retries
            h.started = now
            h.started_wall = time.time()
            h.deadline = now + message.timeout if message.timeout else 0.0
            h.running = index
            return True

    def fits(self, record: bytes) -> bool:
        return self.header.buffered + len(record) <= len(self.buffer)

    def finished(self, message: Message, record: bytes | None) -> None:
        """The job ended; ``record`` (its encoded outcome) joins the buffer unless None (too big
        for it: the caller acknowledges it at once)."""
        with self.lock:
            h = self.header
            if record is not None:
                start = h.buffered
                self.buffer[start : start + len(record)] = record
                h.buffered = start + len(record)
            index = self._where[message.id]
            self.entries[index].state = DONE
            self._done.append(index)
            h.running = -1
            h.deadline = 0.0
            h.jobs_done += 1

    def acked(self) -> None:
        """Every buffered outcome was acknowledged: forget them and their leases."""
        with self.lock:
            self.header.buffered = 0
            for index in self._done:
                entry = self.entries[index]
                entry.state = EMPTY
                self._forget(entry.job_id.decode())
            self._done.clear()

    def released(self, job_ids: Sequence[str]) -> None:
        with self.lock:
            for job_id in job_ids:
                if job_id in self._where:
                    self.entries[self._where[job_id]].state = EMPTY
                    self._forget(job_id)

    def retire(self, reason: str) -> None:
        self.header.recycled = clip(reason, 100)

    def mark_finished(self) -> None:
        self.header.finished = 1

    def _forget(self, job_id: str) -> None:
        self._free.append(self._where.pop(job_id))

    # -- the supervisor --------------------------------------------------------------------------
    def leases(self) -> dict[str, tuple[Lease, int]] | None:
        """``{job_id: (lease, state)}`` of every job the child holds; None if the child holds
        its lock too long (try again later)."""
        with self._locked(LOCK_TIMEOUT) as taken:
            if not taken:
                return None
            return {
                e.job_id.decode(): (Lease(e.job_id.decode(), e.token), e.state)
                for e in self.entries
                if e.state != EMPTY
            }

    def current(self) -> dict[str, Any] | None:
        """The running job (id, token, task, attempts, times), or None when idle."""
        with self._locked(LOCK_TIMEOUT) as taken:
            if not taken:
                return None
            return self._current()

    def _current(self) -> dict[str, Any] | None:
        h = self.header
        if h.running < 0:
            return None
        entry = self.entries[h.running]
        return {
            "job_id": entry.job_id.decode(),
            "token": entry.token,
            "task": h.task.decode(errors="replace"),
            "attempts": h.attempts,
            "max_retries": h.max_retries,
            "started": h.started,
            "started_wall": h.started_wall,
            "deadline": h.deadline,
        }

    def kill_if_running(self, pid: int, job_id: str, token: int) -> bool:
        """SIGKILL the child ``pid`` if it still runs ``job_id`` under ``token``, the job the
        caller decided on; False if it has moved on (or holds its lock too long: try later).
        The kill is sent holding the lock that the child's ``finished`` takes, so the child
        cannot finish that job and start another in between."""
        with self._locked(LOCK_TIMEOUT) as taken:
            if not taken:
                return False
            current = self._current()
            if current is None or (current["job_id"], current["token"]) != (job_id, token):
                return False
            with contextlib.suppress(ProcessLookupError):  # dead already: reaped all the same
                os.kill(pid, signal.SIGKILL)
            return True

    @property
    def jobs_done(self) -> int:
        return int(self.header.jobs_done)

    def drop(self, job_ids: set[str]) -> None:
        """Jobs this child claimed but must not start (canceled, or no longer its own)."""
        with self._locked(LOCK_TIMEOUT) as taken:
            if taken:
                for entry in self.entries:
                    if entry.state == CLAIMED and entry.job_id.decode() in job_ids:
                        entry.state = DROPPED

    def remains(self) -> Remains:
        """Read once the child is dead (no lock: it may have died holding it)."""
        h = self.header
        outcomes = decode_outcomes(bytes(self.buffer[: h.buffered]))
        acked = {o.job_id for o in outcomes}
        remains = Remains(
            outcomes=outcomes,
            recycled=h.recycled.decode(errors="replace"),
            finished=bool(h.finished),
        )
        for entry in self.entries:
            lease = Lease(entry.job_id.decode(), entry.token)
            if entry.state in (CLAIMED, DROPPED):
                remains.unstarted.append(lease)
            elif entry.state == RUNNING or (entry.state == DONE and lease.job_id not in acked):
                remains.ran.append(lease)
        return remains
