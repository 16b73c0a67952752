"""A bundle is what a visitor asked for at once; a screenshot is one URL of it, and its outcome."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.db import models
from django.urls import reverse
from django.utils import timezone


class Bundle(models.Model):
    # Random: a bundle's page is open to whoever has its link, so links must not be guessable.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"Bundle {str(self.id)[:8]} ({self.created_at:%Y-%m-%d %H:%M})"

    def get_absolute_url(self) -> str:
        return reverse("shootr:bundle", args=[self.id])


class Screenshot(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        STARTED = "started"
        DONE = "done"
        FAILED = "failed"

    FINISHED = (Status.DONE, Status.FAILED)

    bundle = models.ForeignKey(Bundle, on_delete=models.CASCADE, related_name="screenshots")
    position = models.PositiveSmallIntegerField(help_text="Line of the URL in the form.")
    url = models.URLField("URL", max_length=2000)
    status = models.CharField(max_length=7, choices=Status.choices, default=Status.QUEUED,
                              db_index=True)
    job_id = models.CharField("job id", max_length=36, blank=True,
                              help_text="The jobqueue job that takes this screenshot.")
    attempts = models.PositiveSmallIntegerField(default=0)
    image = models.ImageField(upload_to="shots/%Y/%m/%d/", blank=True)
    thumbnail = models.ImageField(upload_to="thumbs/%Y/%m/%d/", blank=True)
    final_url = models.URLField("final URL", max_length=2000, blank=True,
                                help_text="Where the page ended up after redirects.")
    title = models.CharField(max_length=300, blank=True)
    truncated = models.BooleanField(default=False,
                                    help_text="The page was taller than the screenshot.")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("bundle", "position")
        constraints = (
            models.UniqueConstraint(fields=("bundle", "position"), name="shootr_one_url_per_line"),
        )

    def __str__(self) -> str:
        return self.url

    @property
    def finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def waited(self) -> timedelta | None:
        """Time in the queue, until a worker took the job."""
        return self.started_at - self.created_at if self.started_at else None

    @property
    def took(self) -> timedelta | None:
        """Time the worker spent on the screenshot."""
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None

    # State changes: each writes only its own columns, so a change made elsewhere (the admin,
    # another attempt) is never overwritten with stale values.
    def mark_started(self) -> None:
        self.status = self.Status.STARTED
        self.attempts += 1
        self.started_at = timezone.now()
        self.finished_at = None
        self.error = ""
        self.save(update_fields=["status", "attempts", "started_at", "finished_at", "error"])

    def mark_done(self, *, final_url: str, title: str, truncated: bool) -> None:
        """Record success; ``image`` and ``thumbnail`` must have been stored already."""
        self.status = self.Status.DONE
        self.final_url = final_url[:2000]
        self.title = title[:300]
        self.truncated = truncated
        self.finished_at = timezone.now()
        self.save(update_fields=["status", "image", "thumbnail", "final_url", "title",
                                 "truncated", "finished_at"])

    def mark_failed(self, error: str) -> None:
        self.status = self.Status.FAILED
        self.error = error
        self.finished_at = timezone.now()
        self.save(update_fields=["status", "error", "finished_at"])

    def mark_ended_by_job(self, error: str, ended_at: datetime | None) -> None:
        """Record a job that ended without the task recording it (killed by its timeout,
        canceled, lost with its worker). Only if the row still waits on that same job and has
        not recorded an end of its own: an end the task wrote is never overwritten."""
        changes = {"status": self.Status.FAILED, "error": error,
                   "finished_at": ended_at or timezone.now()}
        updated = Screenshot.objects.filter(
            pk=self.pk, job_id=self.job_id, status__in=(self.Status.QUEUED, self.Status.STARTED),
        ).update(**changes)
        if updated:
            for name, value in changes.items():
                setattr(self, name, value)
        else:
            self.refresh_from_db()

    def mark_retrying(self, error: str) -> None:
        """Back to waiting: the job failed in a way another attempt may not."""
        self.status = self.Status.QUEUED
        self.error = error
        self.save(update_fields=["status", "error"])
