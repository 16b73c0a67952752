"""A job's states; the same words in the database, the admin and ``JobResult.status``."""

from django.db import models


class JobStatus(models.TextChoices):
    QUEUED = "queued"
    SCHEDULED = "scheduled"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


WAITING = (JobStatus.QUEUED, JobStatus.SCHEDULED)
FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)
