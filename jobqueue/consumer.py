"""The loop of one worker child process: claim a batch, run it, record it, repeat.

The child tells its supervisor what it holds and does through its ``Slot`` (jobqueue.slot):
the batch's leases, the running job, and each finished outcome until it is acknowledged, so
that whatever happens to the child, the supervisor can acknowledge what finished and give back
the rest.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Sequence
from typing import Any

from django.db import DatabaseError, DataError, IntegrityError, connections

from jobqueue.brokers.base import Broker, Outcome
from jobqueue.conf import get_settings
from jobqueue.exceptions import BrokerError
from jobqueue.execution import execute
from jobqueue.message import Message
from jobqueue.slot import Slot, encode_outcome
from jobqueue.states import JobStatus

logger = logging.getLogger(__name__)

ACK_DELAY = 0.05  # seconds a finished job may wait for its batch's ack
BATCH_TIME = 0.05  # a batch that runs faster than this may grow
UNREACHABLE = (DatabaseError, BrokerError)
# What a database or broker refuses for the data it was given, not for being away: retrying
# would be refused again for ever.
REFUSED = (DataError, IntegrityError, ValueError)


def unreachable(exc: BaseException) -> bool:
    return isinstance(exc, UNREACHABLE) and not isinstance(exc, REFUSED)


def refused_outcome(outcome: Outcome, exc: BaseException) -> Outcome:
    """A plain failure in place of an outcome the broker refused to store."""
    return Outcome(
        outcome.job_id,
        JobStatus.FAILED,
        outcome.started_at,
        outcome.ended_at,
        error=f"OutcomeRefused: the broker refused to store this job's outcome "
        f"({type(exc).__name__})",
        token=outcome.token,
        task=outcome.task,
    )


def finish_each(broker: Broker, worker: str, outcomes: Sequence[Outcome]) -> int:
    """Finish outcomes one by one after their batch was refused for its data: the one refused
    fails with a plain error instead, so the others are stored and no job waits for ever."""
    taken = 0
    for outcome in outcomes:
        try:
            taken += broker.finish(worker, [outcome])
        except REFUSED as exc:
            logger.error(
                "worker=%s job=%s state=outcome-refused error=%r", worker, outcome.job_id, exc
            )
            try:
                taken += broker.finish(worker, [refused_outcome(outcome, exc)])
            except REFUSED:
                # Its lease is no longer renewed: recovery counts the run as lost.
                logger.exception("worker=%s job=%s state=outcome-dropped", worker, outcome.job_id)
    return taken


def rss_megabytes() -> float:
    """This process's resident memory now (peak memory where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Consumer:
    def __init__(
        self,
        broker: Broker,
        queues: Sequence[str],
        name: str,
        slot: Slot,
        stopping: Any,
        burst: bool = False,
        max_jobs: int | None = None,
        max_memory: float | None = None,
    ) -> None:
        self.broker = broker
        self.queues = list(queues)
        self.name = name
        self.slot = slot
        self.stopping = stopping  # a shared flag: the supervisor sets .value to 1
        self.burst = burst
        self.max_jobs = max_jobs
        self.max_memory = max_memory  # MB of RSS
        self.pending: list[Outcome] = []
        self.pending_since = 0.0
        self.batch_size = 1
        self.queue_left = True  # jobs may be queued that no wait would be woken for
        self.next_promotion = 0.0
        self.retiring = ""
        self.pid = os.getpid()

    def run(self) -> None:
        """Loop until told to stop, until retired (max-jobs, max-memory) or, in burst mode,
        until nothing is runnable. A broker that cannot be reached is waited for, with backoff;
        finished outcomes are kept meanwhile (in the slot too) and acknowledged first."""
        failures = 0
        while not self.stopping.value and not self.retiring:
            try:
                if not self.step():
                    self.slot.mark_finished()
                    break
                failures = 0
            except UNREACHABLE as exc:
                if not unreachable(exc):
                    raise  # a bug: this child ends, and its supervisor replaces it
                failures += 1
                delay = min(0.25 * 2**failures, 10.0)
                logger.error(
                    "worker=%s state=broker-unreachable retry_in=%.1fs error=%s",
                    self.name,
                    delay,
                    exc,
                )
                self.reconnect()
                self.pause(delay)
        if self.retiring:
            self.slot.retire(self.retiring)
            logger.info("worker=%s state=recycled reason=%r", self.name, self.retiring)
        try:
            self.flush()
        except UNREACHABLE:
            # The supervisor acknowledges them from the slot once this process has exited.
            logger.exception("worker=%s state=stopping-unacked", self.name)

    def reconnect(self) -> None:
        # Every connection, not only those Django finds unusable: on SQLite is_usable() is
        # always True, even for a connection a task closed under Django's feet.
        connections.close_all()
        self.broker.close()

    def step(self) -> bool:
        """Claim and run one batch; False when a burst has nothing left to run."""
        self.flush()  # outcomes kept from a failed ack go first: nothing more is claimed before
        messages: list[Message] = []
        claim_first = self.burst or self.queue_left or not self.broker.wakes_for_every_send
        self.queue_left = True  # until a claim tells otherwise (a failure on the way keeps it)
        if claim_first:
            messages = self.broker.claim(self.queues, self.name, self.batch_size)
        if not messages:
            if self.burst:
                return bool(self.broker.promote_due())
            messages = self.broker.wait_and_claim(
                self.queues, self.name, self.batch_size, timeout=1.0
            )
        # A claim that took some jobs but not a full batch found the queues empty: the broker
        # wakes the next wait for whatever is sent from then on (``wakes_for_every_send``), so
        # that wait needs no claim before it. A full batch may have left jobs without a wake
        # of their own, and an empty one may have used up a wake meant for a job still queued.
        self.queue_left = not 0 < len(messages) < self.batch_size
        if messages:
            self.slot.claimed(messages)
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
            if self.stopping.value or self.retiring:
                self.give_back(messages[index:])
                return
            if self.pending and time.monotonic() - self.pending_since >= ACK_DELAY:
                self.try_flush()
            if not self.slot.begin(message):
                continue  # dropped by the supervisor: canceled, or no longer this child's
            outcome = execute(message)
            if os.getpid() != self.pid:
                # A copy of this process that the task forked and that returned from it: it
                # must not go on as a second consumer of this child's slot and leases.
                os._exit(0)
            self.record(message, outcome)
            self.check_limits()

    def record(self, message: Message, outcome: Outcome) -> None:
        """Keep the outcome, in the slot as well, so it outlives this process."""
        data = encode_outcome(outcome)
        if not self.slot.fits(data):
            self.try_flush()
        fits = self.slot.fits(data)
        self.slot.finished(message, data if fits else None)
        if not self.pending:
            self.pending_since = time.monotonic()
        self.pending.append(outcome)
        if not fits:  # too big for the buffer even alone: acknowledged at once
            self.try_flush()

    def check_limits(self) -> None:
        done = self.slot.jobs_done
        if self.max_jobs and done >= self.max_jobs:
            self.retiring = f"recycled: max-jobs {self.max_jobs}"
        elif self.max_memory and (rss := rss_megabytes()) > self.max_memory:
            self.retiring = f"recycled: max-memory {rss:.0f} MB > {self.max_memory:g} MB"

    def give_back(self, messages: list[Message]) -> None:
        """Jobs of the batch that will not run here return to the front of their queues."""
        try:
            self.broker.release(self.name, [m.lease for m in messages])
        except UNREACHABLE as exc:
            logger.error("worker=%s state=release-failed error=%s", self.name, exc)
            self.reconnect()
            return  # still in the slot: the supervisor gives them back once this child exits
        self.slot.released([m.id for m in messages])

    def try_flush(self) -> None:
        """Acknowledge now if the broker answers; if not, the outcomes wait for the next try."""
        try:
            self.flush()
        except UNREACHABLE as exc:
            logger.error("worker=%s state=ack-failed error=%s", self.name, exc)
            self.reconnect()

    def flush(self) -> None:
        if self.pending:
            try:
                taken = self.broker.finish(self.name, self.pending)
            except REFUSED as exc:
                logger.error("worker=%s state=batch-refused error=%r", self.name, exc)
                taken = finish_each(self.broker, self.name, self.pending)
            if taken < len(self.pending):
                # Their jobs were canceled, or handed to another worker after this one stopped
                # renewing their leases (a pause past LEASE_TIMEOUT): the other run counts.
                logger.warning(
                    "worker=%s state=ack-refused refused=%d (no longer this worker's)",
                    self.name,
                    len(self.pending) - taken,
                )
            self.pending = []
            self.slot.acked()

    @staticmethod
    def next_batch_size(size: int, claimed: int, elapsed: float) -> int:
        """Grow while the queue is deep and jobs are quick; shrink as soon as they are not, so a
        slow job never holds many others hostage."""
        if claimed == size and elapsed < BATCH_TIME:
            return min(size * 2, get_settings().MAX_BATCH)
        if elapsed > BATCH_TIME * 4:
            return max(1, size // 2)
        return size
