"""The loop of one worker child process: claim a batch, run it, record it, repeat.

The supervisor sees what a child is doing through its ``Slot``, a small struct in shared memory
the child writes before and after each job, so timeouts are enforced from outside the child
(even on code stuck in C) and the admin shows each worker's current job.
"""

from __future__ import annotations

import ctypes
import logging
import time
from collections.abc import Sequence
from typing import Any

from django.db import DatabaseError, close_old_connections

from jobqueue.brokers.base import Broker, Outcome
from jobqueue.conf import get_settings
from jobqueue.exceptions import BrokerError
from jobqueue.execution import execute
from jobqueue.message import Message

logger = logging.getLogger(__name__)

ACK_DELAY = 0.05  # seconds a finished job may wait for its batch's ack
BATCH_TIME = 0.05  # a batch that runs faster than this may grow


class SlotData(ctypes.Structure):
    _fields_ = [
        ("job_id", ctypes.c_char * 36),
        ("task", ctypes.c_char * 200),
        ("attempts", ctypes.c_int),
        ("max_retries", ctypes.c_int),
        ("started", ctypes.c_double),  # time.monotonic() at start; 0.0 when idle
        ("deadline", ctypes.c_double),  # time.monotonic() past which it is killed; 0.0: none
        ("jobs_done", ctypes.c_long),
    ]


class Slot:
    """One child's shared state, guarded by a lock so the supervisor never reads half a write."""

    def __init__(self, context: Any) -> None:
        self.data = context.RawValue(SlotData)
        self.lock = context.Lock()

    def start(self, message: Message) -> None:
        now = time.monotonic()
        with self.lock:
            self.data.job_id = message.id.encode()
            self.data.task = message.task.encode()[:200]
            self.data.attempts = message.attempts
            self.data.max_retries = message.max_retries
            self.data.started = now
            self.data.deadline = now + message.timeout if message.timeout else 0.0

    def stop(self) -> None:
        with self.lock:
            self.data.started = 0.0
            self.data.deadline = 0.0
            self.data.jobs_done += 1

    def read(self) -> dict[str, Any]:
        with self.lock:
            return {
                "job_id": self.data.job_id.decode() if self.data.started else None,
                "task": self.data.task.decode() if self.data.started else "",
                "attempts": self.data.attempts,
                "max_retries": self.data.max_retries,
                "started": self.data.started,
                "deadline": self.data.deadline,
                "jobs_done": self.data.jobs_done,
            }

    def clear(self) -> None:
        with self.lock:
            self.data.started = 0.0
            self.data.deadline = 0.0


class Consumer:
    def __init__(
        self,
        broker: Broker,
        queues: Sequence[str],
        name: str,
        slot: Slot,
        stopping: Any,
        burst: bool = False,
    ) -> None:
        self.broker = broker
        self.queues = list(queues)
        self.name = name
        self.slot = slot
        self.stopping = stopping  # a shared flag: the supervisor sets .value to 1
        self.burst = burst
        self.pending: list[Outcome] = []
        self.pending_since = 0.0
        self.batch_size = 1
        self.next_promotion = 0.0

    def run(self) -> None:
        """Loop until told to stop (or, in burst mode, until nothing is runnable). A broker that
        cannot be reached is waited for, with backoff; finished outcomes are kept meanwhile."""
        failures = 0
        while not self.stopping.value:
            try:
                if not self.step():
                    return
                failures = 0
            except (DatabaseError, BrokerError) as exc:
                failures += 1
                delay = min(0.25 * 2**failures, 10.0)
                logger.error(
                    "worker=%s state=broker-unreachable retry_in=%.1fs error=%s",
                    self.name,
                    delay,
                    exc,
                )
                close_old_connections()
                self.broker.close()
                self.pause(delay)
        try:
            self.flush()
        except (DatabaseError, BrokerError):
            logger.exception("worker=%s state=stopping-unacked (leases will expire)", self.name)

    def step(self) -> bool:
        """Claim and run one batch; False when a burst has nothing left to run."""
        messages = self.broker.claim(self.queues, self.name, self.batch_size)
        if not messages:
            self.flush()
            if self.burst:
                return bool(self.broker.promote_due())
            messages = self.broker.wait_and_claim(
                self.queues, self.name, self.batch_size, timeout=1.0
            )
        if messages:
            began = time.monotonic()
            self.run_batch(messages)
            self.flush()
            elapsed = time.monotonic() - began
            self.batch_size = self.next_batch_size(self.batch_size, len(messages), elapsed)
        # Due jobs are moved after the claim, so a worker woken for a job starts it first.
        now = time.monotonic()
        if now >= self.next_promotion:
            self.broker.promote_due()
            self.next_promotion = now + get_settings().POLL_INTERVAL
        return True

    def pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping.value and time.monotonic() < deadline:
            time.sleep(min(0.1, seconds))

    def run_batch(self, messages: list[Message]) -> None:
        for index, message in enumerate(messages):
            if self.stopping.value:
                self.broker.release(self.name, [m.id for m in messages[index:]])
                return
            if self.pending and time.monotonic() - self.pending_since >= ACK_DELAY:
                self.flush()
            self.slot.start(message)
            outcome = execute(message)
            self.slot.stop()
            if not self.pending:
                self.pending_since = time.monotonic()
            self.pending.append(outcome)

    def flush(self) -> None:
        if self.pending:
            self.broker.finish(self.name, self.pending)
            self.pending = []

    @staticmethod
    def next_batch_size(size: int, claimed: int, elapsed: float) -> int:
        """Grow while the queue is deep and jobs are quick; shrink as soon as they are not, so a
        slow job never holds many others hostage."""
        if claimed == size and elapsed < BATCH_TIME:
            return min(size * 2, get_settings().MAX_BATCH)
        if elapsed > BATCH_TIME * 4:
            return max(1, size // 2)
        return size
