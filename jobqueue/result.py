"""``JobResult``: a handle on a job, from ``.delay()`` or from its id."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.utils import timezone

from jobqueue.brokers import get_broker
from jobqueue.brokers.base import JobState
from jobqueue.conf import get_settings
from jobqueue.exceptions import JobCanceled, JobFailed, JobNotFound, ResultExpired
from jobqueue.message import canonical_job_id
from jobqueue.serialization import loads
from jobqueue.states import JobStatus


class JobResult:
    """Every read asks the broker afresh; nothing here goes stale."""

    def __init__(self, job_id: str | uuid.UUID) -> None:
        try:
            self.id = canonical_job_id(job_id)
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

        get_broker().sync()
        try:
            return Job.objects.get(id=self.id)
        except Job.DoesNotExist:
            raise JobNotFound(f"no job with id {self.id!r}") from None

    @property
    def status(self) -> str:
        return get_broker().state(self.id).status

    @property
    def result(self) -> Any:
        """The return value once succeeded, else None; see ``get`` to wait and raise."""
        state = get_broker().state(self.id)
        return _value(self.id, state) if state.status == JobStatus.SUCCEEDED else None

    def get(self, timeout: float | None = None) -> Any:
        """Wait for the job to finish; return its value, raise ``JobFailed`` (``JobCanceled``) or
        ``TimeoutError``."""
        return _value(self.id, get_broker().wait_finished(self.id, timeout))

    def cancel(self) -> bool:
        """Cancel the job unless it has finished; a running job's worker process is stopped."""
        return get_broker().cancel(self.id)


def _value(job_id: str, state: JobState) -> Any:
    if state.status == JobStatus.CANCELED:
        raise JobCanceled(job_id, state.error or "canceled")
    if state.status == JobStatus.FAILED:
        raise JobFailed(job_id, state.error, state.traceback)
    ttl = get_settings().RESULT_TTL
    ended = state.ended_at
    expired = (
        ttl is not None and ended is not None and ended < timezone.now() - timedelta(seconds=ttl)
    )
    if expired or state.result is None:
        raise ResultExpired(f"job {job_id} succeeded, but its result was kept {ttl} s only")
    return loads(state.result)
