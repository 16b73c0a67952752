"""The Job table (one row per job: its record, and on the database broker also its message) and
the Worker table (live worker processes, for ``jobinfo`` and the admin)."""

from __future__ import annotations

from typing import Any

from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from jobqueue.message import Message
from jobqueue.states import JobStatus


class JobQuerySet(models.QuerySet["Job"]):
    def delete(self) -> tuple[int, dict[str, int]]:
        """Jobs go with their attempts (a table with no database cascade: see ``JobAttempt``)."""
        with transaction.atomic(using=self.db):
            JobAttempt.objects.using(self.db).filter(job_id__in=self.values("pk")).delete()
            return super().delete()


class Job(models.Model):
    Status = JobStatus

    id = models.UUIDField(primary_key=True, editable=False)
    task = models.CharField(max_length=200)
    queue = models.CharField(max_length=100)
    priority = models.SmallIntegerField(default=0, help_text="-100..100; higher runs first.")
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    arguments = models.TextField(help_text="The JSON payload: args and kwargs.")
    result = models.TextField(  # noqa: DJ001 (NULL: no result, or expired)
        null=True, blank=True, help_text="The JSON return value."
    )
    error = models.TextField(
        blank=True, help_text="Exception type and message of the last failure."
    )
    traceback = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Times a worker has taken the job.")
    max_retries = models.PositiveSmallIntegerField(default=0)
    timeout = models.FloatField(
        null=True, blank=True, help_text="Seconds; the worker kills it past."
    )
    worker = models.CharField(max_length=200, blank=True)
    enqueued_at = models.DateTimeField()
    run_at = models.DateTimeField(help_text="When the job may run (now, a countdown, a retry).")
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    version = models.PositiveBigIntegerField(
        default=0,
        help_text="Raised by every change the broker makes; a claim's fencing token.",
    )
    body = models.TextField(
        blank=True,
        help_text="Redis broker: the signed message as first sent; what a requeue sends again.",
    )
    resent = models.PositiveIntegerField(
        default=0, help_text="Redis broker: times sent again after Redis lost it."
    )

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-enqueued_at"]
        indexes = [
            # The claim: the next queued job of a queue, by priority then place in the queue (the
            # time it entered, or re-entered after a retry or a lost run; ids break ties).
            models.Index(
                fields=["queue", "-priority", "run_at", "id"],
                condition=Q(status="queued"),
                name="jobqueue_job_claim",
            ),
            models.Index(
                fields=["run_at"], condition=Q(status="scheduled"), name="jobqueue_job_due"
            ),
            models.Index(
                fields=["worker", "lease_expires_at"],
                condition=Q(status="started"),
                name="jobqueue_job_leases",
            ),
            models.Index(fields=["status", "ended_at"], name="jobqueue_job_finished"),
            # Results still to expire: rows leave it once their result is dropped.
            models.Index(
                fields=["ended_at"],
                condition=Q(status="succeeded", result__isnull=False),
                name="jobqueue_job_results",
            ),
            models.Index(fields=["-enqueued_at"], name="jobqueue_job_recent"),
            models.Index(fields=["task", "-enqueued_at"], name="jobqueue_job_task"),
            models.Index(fields=["resent"], condition=Q(resent__gt=0), name="jobqueue_job_resent"),
        ]

    def __str__(self) -> str:
        return f"{self.task} [{self.status}] {self.id}"

    @classmethod
    def from_message(cls, message: Message, **fields: Any) -> Job:
        """The row of a job just sent (``fields`` override, e.g. a state already reached)."""
        return cls(**cls.values_from_message(message, **fields))

    @staticmethod
    def values_from_message(message: Message, **fields: Any) -> dict[str, Any]:
        values: dict[str, Any] = {
            "id": message.id,
            "task": message.task,
            "queue": message.queue,
            "priority": message.priority,
            "status": JobStatus.SCHEDULED if message.is_scheduled else JobStatus.QUEUED,
            "arguments": message.arguments,
            "max_retries": message.max_retries,
            "timeout": message.timeout,
            "enqueued_at": message.enqueued_at,
            "run_at": message.run_at or message.enqueued_at,
            "error": message.rejected,
            "result": None,
            "traceback": "",
            "attempts": 0,
            "worker": "",
            "started_at": None,
            "ended_at": None,
            "lease_expires_at": None,
        }
        return {**values, **fields}

    def to_message(self, fresh: bool = False) -> Message:
        """The message this row describes; ``fresh``: sent again now, as by a requeue."""
        now = timezone.now()
        return Message(
            id=str(self.id),
            task=self.task,
            arguments=self.arguments,
            queue=self.queue,
            priority=self.priority,
            run_at=None if fresh or self.run_at <= now else self.run_at,
            enqueued_at=now if fresh else self.enqueued_at,
            max_retries=self.max_retries,
            timeout=self.timeout,
        )

    @property
    def duration(self) -> float | None:
        if self.started_at and self.ended_at:
            return (self.ended_at - self.started_at).total_seconds()
        return None

    def delete(self, using: Any = None, keep_parents: bool = False) -> tuple[int, dict[str, int]]:
        alias = using or self._state.db
        with transaction.atomic(using=alias):
            JobAttempt.objects.using(alias).filter(job_id=self.pk).delete()
            return super().delete(using=using, keep_parents=keep_parents)


class JobAttempt(models.Model):
    """A run of a job that failed: raised (retried or not), was killed for its timeout, or was
    lost with its worker process. The Job row keeps only its last run; these rows keep each
    failed one, so ``TaskResult.errors`` and ``worker_ids`` name every attempt. Written with the
    failure it records (in the same transaction; on the Redis broker by tracking, from the
    failure's event), never for a run that succeeded. A requeue starts the job afresh, without
    its earlier attempts; purging a job deletes them."""

    # No database constraint: on the Redis broker tracking may record an attempt of a job whose
    # row it could not write. Indexed by the unique (job, number).
    job = models.ForeignKey(
        Job,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="failed_attempts",
    )
    number = models.PositiveIntegerField(help_text="The attempt: 1 for the first run.")
    version = models.PositiveBigIntegerField(
        help_text="The job's version the failure made (a requeue forgets older attempts)."
    )
    worker = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True, help_text="Exception type and message.")
    traceback = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField()

    class Meta:
        ordering = ["job_id", "number"]  # not "job": that would join the Job table
        constraints = [
            models.UniqueConstraint(fields=["job", "number"], name="jobqueue_one_entry_per_attempt")
        ]

    def __str__(self) -> str:
        return f"{self.job_id} attempt {self.number}"


class Worker(models.Model):
    """A worker process serving jobs; its supervisor refreshes the row at every heartbeat."""

    name = models.CharField(max_length=200, unique=True)
    hostname = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    queues = models.CharField(max_length=1000)
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField()
    current_job = models.UUIDField(null=True, blank=True)
    current_task = models.CharField(max_length=200, blank=True)
    jobs_done = models.PositiveIntegerField(default=0)
    replacements = models.PositiveIntegerField(
        default=0, help_text="Times this worker process was replaced by a new one."
    )
    replaced_at = models.DateTimeField(null=True, blank=True)
    replaced_because = models.CharField(
        max_length=200,
        blank=True,
        help_text="Why it was last replaced: timeout, cancel, lease lost, crash (exit code or "
        "signal), recycled (max-jobs, max-memory).",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Outbox(models.Model):
    """Jobs written to the database but not yet delivered to an external broker (Redis): sent in
    a transaction (delivered when it commits) or while the broker was unreachable. Workers relay
    what is left here."""

    job_id = models.UUIDField(primary_key=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name_plural = "outbox"

    def __str__(self) -> str:
        return str(self.job_id)


_now = timezone.now  # the Schedule model has a field named timezone


class Schedule(models.Model):
    """A periodic job: a task, its arguments and when it is due (a cron or an interval).

    Rows come from code (``@task(schedule=...)``, ``JOBQUEUE["SCHEDULES"]``; synced at worker
    start: ``declared`` holds the declaration as last synced, so an edit in the admin stands until
    the code changes) or from the admin. Schedulers only read them, and move ``last_tick`` forward
    in the transaction that sends a tick's job."""

    class CatchUp(models.TextChoices):
        LATEST = "latest", "latest: the last missed tick, once"
        SKIP = "skip", "skip: missed ticks are not run"
        ALL = "all", "all: every missed tick (capped)"

    class Origin(models.TextChoices):
        CODE = "code"
        ADMIN = "admin"

    name = models.CharField(max_length=200, unique=True)
    task = models.CharField(max_length=200)
    cron = models.CharField(
        max_length=200, blank=True, help_text="Five fields: minute hour day month weekday."
    )
    interval = models.PositiveIntegerField(
        null=True, blank=True, help_text="Seconds between runs (instead of a cron)."
    )
    timezone = models.CharField(
        max_length=64, blank=True, help_text="Of the cron expression; default: TIME_ZONE."
    )
    args = models.JSONField(default=list, blank=True, help_text="A JSON list.")
    kwargs = models.JSONField(default=dict, blank=True, help_text="A JSON object.")
    queue = models.CharField(max_length=100, blank=True, help_text="Default: the task's.")
    priority = models.SmallIntegerField(
        null=True, blank=True, help_text="-100..100; default: the task's."
    )
    enabled = models.BooleanField(default=True)
    catch_up = models.CharField(max_length=8, choices=CatchUp.choices, default=CatchUp.LATEST)
    max_delay = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Seconds: a tick later than this is not run (default: no limit).",
    )
    origin = models.CharField(max_length=8, choices=Origin.choices, default=Origin.ADMIN)
    declared = models.JSONField(null=True, blank=True, editable=False)
    since = models.DateTimeField(default=_now, help_text="Ticks up to this instant are not owed.")
    last_tick = models.DateTimeField(null=True, blank=True)
    last_job_id = models.UUIDField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=_now)
    updated_at = models.DateTimeField(default=_now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def timing(self) -> Any:
        """The Cron or Every this row describes (ConfigurationError if it describes neither)."""
        from jobqueue.schedules import timing

        return timing(cron=self.cron, interval=self.interval, timezone=self.timezone)


class ScheduleTick(models.Model):
    """One tick of a schedule and the job sent for it, written in the job's transaction: the
    unique (schedule, tick) pair is what makes a tick one job however many schedulers run. It is
    also the job's link to its schedule (``job.schedule_tick``): the Job row itself is rewritten
    from the broker's message on some brokers, which carries no schedule."""

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="ticks")
    tick = models.DateTimeField()
    # No database constraint: on the Redis broker the Job row may be written after this one.
    job = models.OneToOneField(
        Job, on_delete=models.DO_NOTHING, db_constraint=False, related_name="schedule_tick"
    )
    manual = models.BooleanField(default=False, help_text="Sent by 'run now', not by the clock.")
    created_at = models.DateTimeField(default=_now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["schedule", "tick"],
                condition=Q(manual=False),
                name="jobqueue_one_job_per_tick",
            )
        ]

    def __str__(self) -> str:
        return f"{self.schedule_id} @ {self.tick.isoformat()}"
