"""One exception tree: catch ``JobQueueError`` to catch everything jobqueue raises on purpose."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured


class JobQueueError(Exception):
    """Something went wrong in jobqueue."""


class ConfigurationError(JobQueueError, ImproperlyConfigured):
    """The JOBQUEUE settings or a task's options are not usable."""


class UnknownTask(JobQueueError, LookupError):
    """No task is registered under this name."""


class SerializationError(JobQueueError, TypeError):
    """A value cannot travel as JSON; the message names the argument."""


class JobNotFound(JobQueueError, LookupError):
    """No job has this id (it never existed, or it was purged)."""


class BrokerError(JobQueueError):
    """The broker could not be reached or refused an operation."""


class JobFailed(JobQueueError):
    """The job raised (or was lost, timed out or canceled); carries the remote error."""

    def __init__(self, job_id: str, error: str, traceback: str = "") -> None:
        self.job_id = job_id
        self.error = error
        self.traceback = traceback
        exc_type, _, message = error.partition(": ")
        self.exc_type = exc_type
        self.exc_message = message
        super().__init__(f"job {job_id} failed: {error}")

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}\n\nRemote traceback:\n{self.traceback}" if self.traceback else text


class JobCanceled(JobFailed):
    """The job was canceled before it finished."""


class ResultExpired(JobQueueError):
    """The job succeeded, but its result was kept for RESULT_TTL seconds only."""
