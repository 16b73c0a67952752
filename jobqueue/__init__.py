"""jobqueue: background jobs for Django."""

from jobqueue.exceptions import (
    ConfigurationError,
    JobCanceled,
    JobFailed,
    JobNotFound,
    JobQueueError,
    ResultExpired,
    SerializationError,
    UnknownTask,
)
from jobqueue.result import JobResult
from jobqueue.schedules import Cron
from jobqueue.task import Task, task

__all__ = [
    "ConfigurationError",
    "Cron",
    "JobCanceled",
    "JobFailed",
    "JobNotFound",
    "JobQueueError",
    "JobResult",
    "ResultExpired",
    "SerializationError",
    "Task",
    "UnknownTask",
    "task",
]
