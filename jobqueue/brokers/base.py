"""The broker interface: what producers, workers and operators may ask of any broker.

A broker stores messages, hands each to one worker at a time under a lease, and takes it back when
the worker finishes (``finish``), gives it up (``release``) or dies (``recover``, once the lease
has expired). The Job table is every broker's record of jobs; operations that only touch that
record are implemented here, and brokers with state elsewhere extend them.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import router, transaction
from django.db.models import Count, F
from django.db.models.functions import Now
from django.dispatch import Signal
from django.utils import timezone

from jobqueue.conf import get_settings
from jobqueue.exceptions import JobNotFound
from jobqueue.message import Lease, Message
from jobqueue.states import FINISHED, WAITING, JobStatus

logger = logging.getLogger(__name__)

#: Sent once a job's final outcome (succeeded, failed for good, or canceled) is stored, by the
#: process that stored it: a worker child for what its tasks did, its supervisor for a timeout or
#: a child that died, whoever recovers a lost run, whoever cancels the job; never before the
#: outcome is readable, and never for an outcome the broker refused. Arguments: ``job_id``,
#: ``task`` (its name; "" where the broker does not know it) and ``status``; the sender is the
#: broker's class (the Job model in EAGER mode). A receiver that raises is logged.
job_finished = Signal()


@dataclass
class Outcome:
    """How a run ended: succeeded, failed, or scheduled for a retry at ``run_at``. ``token`` is
    the fencing token of the claim that ran it. ``delay``, when set, is the retry's wait in
    seconds: a broker that can count it from its own clock does (a worker host's clock may be
    off), and ``run_at`` is the same time by the worker's clock."""

    job_id: str
    status: JobStatus
    started_at: datetime
    ended_at: datetime
    result: str | None = None
    error: str = ""
    traceback: str = ""
    run_at: datetime | None = None
    token: int = 0
    delay: float | None = None
    task: str = ""  # the task's name, for job_finished

    @property
    def lease(self) -> Lease:
        return Lease(self.job_id, self.token)

    @property
    def final(self) -> bool:
        return self.status in FINISHED


def announcing(sender: type) -> bool:
    """Whether ``job_finished`` has receivers: without any, a broker need not say what it
    finished (so a project that does not use it pays nothing for it)."""
    return job_finished.has_listeners(sender)


def announce(sender: type, finals: Iterable[tuple[str, str, str]], using: str) -> None:
    """Send ``job_finished`` for each (job id, task, status) once the transaction on ``using``
    that stores them commits (at once outside one)."""
    if not announcing(sender):
        return
    finals = list(finals)
    if finals:
        transaction.on_commit(lambda: _send_finished(sender, finals), using=using)


def _send_finished(sender: type, finals: list[tuple[str, str, str]]) -> None:
    for job_id, task, status in finals:
        for receiver, response in job_finished.send_robust(
            sender, job_id=job_id, task=task, status=status
        ):
            if isinstance(response, Exception):
                logger.error(
                    "job=%s task=%s receiver=%r state=job-finished-receiver-failed error=%r",
                    job_id,
                    task,
                    receiver,
                    response,
                    exc_info=response,
                )


@dataclass
class JobState:
    """What a producer may ask of a job: its status and, once finished, how it ended."""

    status: str
    result: str | None = None
    error: str = ""
    traceback: str = ""
    ended_at: datetime | None = None


def worker_lost_error(lost: str) -> tuple[str, str]:
    """The error of a job failed by the poison-pill rule, the same words on every broker: the
    text before and after its number of attempts (brokers format it where the job is stored)."""
    return (
        f"WorkerLost: its worker process died ({lost}) on attempt ",
        ", its last: a job whose process dies is retried max_retries times, and at least once",
    )


def _job_model() -> Any:
    from jobqueue.models import Job

    return Job


def _attempt_model() -> Any:
    from jobqueue.models import JobAttempt

    return JobAttempt


class Broker(ABC):
    """Subclasses implement the abstract methods; the rest work on the Job table. A broker's
    ``__init__`` takes its ``OPTIONS`` as keyword arguments."""

    #: True when ``wait`` returns at once for anything sent after a claim found the queues
    #: empty, however long ago: a worker whose last claim was not full then waits without
    #: claiming first.
    wakes_for_every_send = False

    # -- producers -------------------------------------------------------------------------------
    @abstractmethod
    def enqueue(self, messages: Sequence[Message]) -> None:
        """Store the messages durably; inside a transaction they become visible when it commits."""

    # -- workers ---------------------------------------------------------------------------------
    @abstractmethod
    def claim(self, queues: Sequence[str], worker: str, limit: int) -> list[Message]:
        """Lease up to ``limit`` runnable messages to ``worker``: queues in order, priority, age.
        Each claim raises the job's ``attempts`` and gives it a new fencing token
        (``message.token``; ``message.lease``)."""

    @abstractmethod
    def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Block until a message may be runnable, or ``timeout`` seconds; never spin."""

    def wait_and_claim(
        self, queues: Sequence[str], worker: str, limit: int, timeout: float
    ) -> list[Message]:
        """``wait``, then ``claim``; a broker that can claim the moment the wait ends, without
        a second round trip, does so."""
        self.wait(queues, timeout)
        return self.claim(queues, worker, limit)

    @abstractmethod
    def finish(self, worker: str, outcomes: Sequence[Outcome]) -> int:
        """Record how runs ended and end their leases (the ack); return how many were taken.
        An outcome whose token is stale (the job was canceled, re-leased or requeued since) is
        refused and changes nothing; finishing the same outcome twice changes nothing more."""

    @abstractmethod
    def release(self, worker: str, leases: Sequence[Lease], *, lost: str = "") -> int:
        """Give these jobs back; return how many leases were current (stale ones are refused).

        ``lost == ""``: the job never started; its attempt is given back and it returns to the
        front of its queue (it was taken first). ``lost`` = why a run that may have happened
        ended without an outcome (``"exit code 3"``, ``"signal 9"``): the attempt counts; once
        ``attempts > max_retries`` (and at least two runs were made: the first loss always gets
        another try) the job fails with ``WorkerLost: its worker process died (<lost>) ...``,
        else it goes to the back of its queue, like a retry."""

    @abstractmethod
    def renew(self, worker: str, leases: Sequence[Lease]) -> set[str]:
        """Extend exactly these leases (the jobs ``worker``'s processes are really running);
        return the ids of those no longer held with that token (canceled, recovered, requeued):
        their runs should be stopped, their outcomes would be refused."""

    @abstractmethod
    def promote_due(self) -> int:
        """Move scheduled jobs whose time has come to their queues; return how many."""

    @abstractmethod
    def recover(self) -> int:
        """Jobs whose lease expired (their worker is presumed dead) are handled as by
        ``release(lost="its worker stopped renewing its lease")``; return how many."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Drop connections this process opened (called before a fork and at exit)."""

    def ready_to_fork(self) -> bool:
        """False while a thread of the broker's may still run after ``close()`` (it could not be
        stopped in time): a supervisor then postpones its fork."""
        return True

    # -- producers asking about their jobs (the Job table) ---------------------------------------
    def state(self, job_id: str) -> JobState:
        """The job's state now; raises ``JobNotFound``."""
        job = _job_model()
        row = (
            job.objects.filter(id=job_id)
            .values("status", "result", "error", "traceback", "ended_at")
            .first()
        )
        if row is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        return JobState(**row)

    def wait_finished(self, job_id: str, timeout: float | None) -> JobState:
        """Block until the job has finished (or ``timeout`` seconds); polls with backoff."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.002
        while True:
            state = self.state(job_id)
            if state.status in FINISHED:
                return state
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise TimeoutError(f"job {job_id} is still {state.status} after {timeout} s")
            time.sleep(pause if deadline is None else min(pause, deadline - now))
            pause = min(pause * 1.5, 0.2)

    def canceled(self, job_ids: Sequence[str]) -> set[str]:
        """Which of these running jobs were canceled (their processes are to be stopped)."""
        job = _job_model()
        rows = job.objects.filter(id__in=list(job_ids), status=JobStatus.CANCELED)
        return {str(job_id) for job_id in rows.values_list("id", flat=True)}

    def durability_warnings(self) -> list[str]:
        """What in the broker's own configuration could lose acknowledged jobs."""
        return []

    def tick(self) -> None:  # noqa: B027 (optional hook)
        """Upkeep a worker supervisor runs about twice a second (tracking, relays)."""

    def sync(self) -> None:  # noqa: B027 (optional hook)
        """Bring the Job table up to date, for brokers that record it in the background."""

    # -- operators (the Job table) ---------------------------------------------------------------
    def cancel(self, job_id: str) -> bool:
        """Cancel a job that has not finished; a running one is stopped by its supervisor."""
        job = _job_model()
        canceled = bool(
            job.objects.filter(id=job_id, status__in=(*WAITING, JobStatus.STARTED)).update(
                status=JobStatus.CANCELED,
                ended_at=Now(),
                lease_expires_at=None,
                version=F("version") + 1,
            )
        )
        if canceled and announcing(type(self)):
            task = job.objects.filter(id=job_id).values_list("task", flat=True).first() or ""
            announce(type(self), [(job_id, task, JobStatus.CANCELED)], self.db_alias())
        return canceled

    def requeue(self, job_ids: Sequence[str] | None = None) -> int:
        """Put failed or canceled jobs (all of them, or ``job_ids``) back in their queues."""
        job = _job_model()
        rows = job.objects.filter(status__in=(JobStatus.FAILED, JobStatus.CANCELED))
        if job_ids is not None:
            rows = rows.filter(id__in=list(job_ids))
        with transaction.atomic(using=self.db_alias()):
            # It starts afresh: attempts are counted from 1 again, without the earlier ones.
            _attempt_model().objects.filter(job_id__in=rows.values("pk")).delete()
            return int(
                rows.update(
                    status=JobStatus.QUEUED,
                    run_at=Now(),  # the back of its queue
                    version=F("version") + 1,
                    attempts=0,
                    worker="",
                    error="",
                    traceback="",
                    result=None,
                    started_at=None,
                    ended_at=None,
                )
            )

    def purge_queue(self, queue: str) -> int:
        """Delete every job waiting in ``queue``."""
        job = _job_model()
        deleted, _ = job.objects.filter(queue=queue, status__in=WAITING).delete()
        return deleted

    def purge_finished(self, older_than: timedelta) -> int:
        """Delete finished jobs that ended more than ``older_than`` ago."""
        job = _job_model()
        cutoff = timezone.now() - older_than
        deleted, _ = job.objects.filter(status__in=FINISHED, ended_at__lt=cutoff).delete()
        return deleted

    def counts(self) -> dict[str, dict[str, int]]:
        """``{queue: {status: n}}`` for the jobs not yet finished, and failed ones."""
        job = _job_model()
        rows = (
            job.objects.filter(status__in=(*WAITING, JobStatus.STARTED, JobStatus.FAILED))
            .values_list("queue", "status")
            .annotate(n=Count("id"))
            .order_by()
        )
        result: dict[str, dict[str, int]] = {}
        for queue, status, n in rows:
            result.setdefault(queue, {})[status] = n
        return result

    def expire_results(self) -> int:
        """Drop result values older than RESULT_TTL (the rows stay for the admin)."""
        ttl = get_settings().RESULT_TTL
        if ttl is None:
            return 0
        job = _job_model()
        cutoff = timezone.now() - timedelta(seconds=ttl)
        return job.objects.filter(
            status=JobStatus.SUCCEEDED, ended_at__lt=cutoff, result__isnull=False
        ).update(result=None)

    @staticmethod
    def db_alias() -> str:
        return router.db_for_write(_job_model())
