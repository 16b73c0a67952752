"""``JobResult``: a handle on a job, from ``.delay()`` or from its id."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

from django.utils import timezone

from jobqueue.conf import get_settings
from jobqueue.exceptions import JobCanceled, JobFailed, JobNotFound, ResultExpired
from jobqueue.serialization import loads
from jobqueue.states import FINISHED, JobStatus


class JobResult:
    """Every attribute read asks the Job table afresh; nothing here goes stale."""

    def __init__(self, job_id: str | uuid.UUID) -> None:
        try:
            self.id = str(uuid.UUID(str(job_id)))
        except ValueError:
            raise ValueError(f"{job_id!r} is not a job id (a UUID)") from None

    def __repr__(self) -> str:
        return f"<JobResult {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def job(self) -> Any:
        """The Job row as it is now."""
        from jobqueue.models import Job

        try:
            return Job.objects.get(id=self.id)
        except Job.DoesNotExist:
            raise JobNotFound(f"no job with id {self.id!r}") from None

    @property
    def status(self) -> str:
        return str(self.job.status)

    @property
    def result(self) -> Any:
        """The return value once succeeded, else None; see ``get`` to wait and raise."""
        job = self.job
        return _value(job) if job.status == JobStatus.SUCCEEDED else None

    def get(self, timeout: float | None = None) -> Any:
        """Wait for the job to finish; return its value, raise ``JobFailed`` (``JobCanceled``) or
        ``TimeoutError``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.002
        while True:
            job = self.job
            if job.status in FINISHED:
                return _value(job)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {self.id} is still {job.status} after {timeout} s")
            remaining = None if deadline is None else deadline - time.monotonic()
            time.sleep(min(pause, remaining) if remaining is not None else pause)
            pause = min(pause * 1.5, 0.2)

    def cancel(self) -> bool:
        """Cancel the job unless it has finished; a running job's worker process is stopped."""
        from jobqueue.brokers import get_broker

        return get_broker().cancel(self.id)


def _value(job: Any) -> Any:
    if job.status == JobStatus.CANCELED:
        raise JobCanceled(str(job.id), job.error or "canceled")
    if job.status == JobStatus.FAILED:
        raise JobFailed(str(job.id), job.error, job.traceback)
    ttl = get_settings().RESULT_TTL
    expired = ttl is not None and job.ended_at < timezone.now() - timedelta(seconds=ttl)
    if expired or job.result is None:
        raise ResultExpired(f"job {job.id} succeeded, but its result was kept {ttl} s only")
    return loads(job.result)
