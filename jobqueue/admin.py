"""The admin: a read-only window on jobs and workers, with requeue and cancel as the only levers.

A job row belongs to its broker and its worker; an edit by hand would race with them, so nothing
is editable and every change goes through the broker. The job list stays fast on a million rows:
filters take their choices from settings and the registry (no ``DISTINCT`` scans), no full
``COUNT(*)`` runs (see ``jobqueue.paginator``), and the default order is an indexed column.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import suppress
from datetime import timedelta
from typing import Any, ClassVar

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.auth import get_permission_codename
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import ngettext

from jobqueue.brokers import get_broker
from jobqueue.conf import get_settings
from jobqueue.exceptions import JobQueueError
from jobqueue.models import Job, Worker
from jobqueue.paginator import EstimatedCountPaginator
from jobqueue.registry import all_tasks
from jobqueue.states import JobStatus

BATCH = 500  # ids per broker call: well under SQLite's limit on query parameters
EMPTY = "—"


def _batches(items: list[str], size: int = BATCH) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _pretty_json(text: str | None) -> SafeString | str:
    if text is None:
        return EMPTY
    with suppress(ValueError):  # not JSON after all: show it as stored
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    return format_html('<pre class="jobqueue-pre">{}</pre>', text)


def status_badge(status: str) -> SafeString:
    label = JobStatus(status).label if status in JobStatus.values else status
    return format_html('<span class="jobqueue-status jobqueue-status-{}">{}</span>', status, label)


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return EMPTY
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return str(timedelta(seconds=round(seconds)))


class QueueFilter(admin.SimpleListFilter):
    """Choices from ``JOBQUEUE['QUEUES']``: a ``DISTINCT`` over the table would scan all of it."""

    title = "queue"
    parameter_name = "queue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(queue, queue) for queue in get_settings().QUEUES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        value = self.value()
        return queryset.filter(queue=value) if value else queryset


class TaskFilter(admin.SimpleListFilter):
    """Choices from the task registry, for the same reason as ``QueueFilter``."""

    title = "task"
    parameter_name = "task"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in sorted(all_tasks())]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        value = self.value()
        return queryset.filter(task=value) if value else queryset


class ResentFilter(admin.SimpleListFilter):
    """Jobs the broker lost (Redis restarted without persistence) and reconciliation sent again."""

    title = "sent again after broker loss"
    parameter_name = "resent"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "yes")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        return queryset.filter(resent__gt=0) if self.value() == "yes" else queryset


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows that only the broker and workers write: viewable, never added or edited here."""

    class Media:
        css: ClassVar[dict[str, tuple[str, ...]]] = {"all": ("jobqueue/admin.css",)}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # False makes every detail page view-only; the actions check the change permission
        # themselves (see JobAdmin.has_requeue_permission).
        return False


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "status_display",
        "task",
        "queue",
        "attempts",
        "enqueued_at",
        "duration_display",
        "worker",
    )
    list_filter = ("status", QueueFilter, TaskFilter, ResentFilter)
    search_fields = ("task",)  # and ids: see get_search_results
    search_help_text = "A job id, or part of a task name."
    ordering = ("-enqueued_at",)
    # Only the indexed column: sorting a million rows by anything else is a full sort per page.
    sortable_by = ("enqueued_at",)
    list_per_page = 50
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # facets are one COUNT per filter choice
    actions = ("requeue_jobs", "cancel_jobs")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "task",
                    "queue",
                    "priority",
                    "status_display",
                    "attempts",
                    "max_retries",
                    "timeout",
                    "worker",
                    "resent",
                )
            },
        ),
        (
            "Timing",
            {
                "fields": (
                    "enqueued_at",
                    "run_at",
                    "started_at",
                    "ended_at",
                    "duration_display",
                    "lease_expires_at",
                )
            },
        ),
        ("Payload", {"fields": ("arguments_display", "result_display")}),
        ("Failure", {"fields": ("error", "traceback_display")}),
    )
    readonly_fields = tuple(flatten_fieldsets(fieldsets))

    # -- columns and fields ----------------------------------------------------------------------
    @admin.display(description="status")
    def status_display(self, job: Job) -> SafeString:
        return status_badge(job.status)

    @admin.display(description="duration")
    def duration_display(self, job: Job) -> str:
        return format_seconds(job.duration)

    @admin.display(description="arguments")
    def arguments_display(self, job: Job) -> SafeString | str:
        return _pretty_json(job.arguments)

    @admin.display(description="result")
    def result_display(self, job: Job) -> SafeString | str:
        return _pretty_json(job.result)

    @admin.display(description="traceback")
    def traceback_display(self, job: Job) -> SafeString | str:
        if not job.traceback:
            return EMPTY
        return format_html('<pre class="jobqueue-pre">{}</pre>', job.traceback)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        """Brokers that record jobs in the background (Redis) catch up first, so the list shows
        every job sent until now."""
        try:
            get_broker().sync()
        except JobQueueError as exc:
            self.message_user(request, f"The broker could not be reached: {exc}", messages.WARNING)
        return super().changelist_view(request, extra_context)

    # -- search ----------------------------------------------------------------------------------
    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Job], search_term: str
    ) -> tuple[QuerySet[Job], bool]:
        """A whole id is looked up by primary key (an index hit, where ``id::text`` would scan
        the table); anything else searches task names."""
        term = search_term.strip()
        try:
            job_id = uuid.UUID(term)
        except ValueError:
            return super().get_search_results(request, queryset, term)
        return queryset.filter(id=job_id), False

    # -- permissions -----------------------------------------------------------------------------
    def _has_model_change_permission(self, request: HttpRequest) -> bool:
        codename = get_permission_codename("change", self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")

    def has_requeue_permission(self, request: HttpRequest) -> bool:
        return self._has_model_change_permission(request)

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return self._has_model_change_permission(request)

    # -- actions ---------------------------------------------------------------------------------
    @admin.action(description="Requeue selected failed or canceled jobs", permissions=["requeue"])
    def requeue_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        ids = self._ids(queryset.filter(status__in=(JobStatus.FAILED, JobStatus.CANCELED)))
        broker = get_broker()
        done = sum(broker.requeue(batch) for batch in _batches(ids))
        self._report(request, done, "requeued", "failed or canceled")

    @admin.action(description="Cancel selected jobs", permissions=["cancel"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        unfinished = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED)
        broker = get_broker()
        done = sum(
            broker.cancel(job_id) for job_id in self._ids(queryset.filter(status__in=unfinished))
        )
        self._report(request, done, "canceled", "waiting or running")

    @staticmethod
    def _ids(queryset: QuerySet[Job]) -> list[str]:
        # Listed before the broker changes any row, so no batch shifts under an open cursor.
        return [str(job_id) for job_id in queryset.order_by().values_list("id", flat=True)]

    def _report(self, request: HttpRequest, done: int, verb: str, eligible: str) -> None:
        if done:
            message = ngettext("%(n)d job %(verb)s.", "%(n)d jobs %(verb)s.", done)
            self.message_user(request, message % {"n": done, "verb": verb}, messages.SUCCESS)
        else:
            self.message_user(
                request, f"No job {verb}: none of those selected was {eligible}.", messages.WARNING
            )


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdmin):
    """Worker rows are written by their supervisors at every heartbeat and removed at exit."""

    list_display = (
        "name",
        "state",
        "hostname",
        "pid",
        "queues",
        "current_job_link",
        "current_task",
        "jobs_done",
        "last_replaced",
        "last_seen",
    )
    list_filter = ("hostname",)
    search_fields = ("name", "hostname")
    fields = (
        "name",
        "state",
        "hostname",
        "pid",
        "queues",
        "current_job_link",
        "current_task",
        "jobs_done",
        "replacements",
        "replaced_because",
        "replaced_at",
        "started_at",
        "last_seen",
    )
    readonly_fields = fields

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="last replaced")
    def last_replaced(self, worker: Worker) -> str:
        """Why the process serving this place was last replaced (timeout, cancel, crash...)."""
        if not worker.replacements:
            return "-"
        return f"{worker.replaced_because} ({worker.replacements}x)"

    @admin.display(description="state")
    def state(self, worker: Worker) -> SafeString:
        stale = timezone.now() - timedelta(seconds=get_settings().LEASE_TIMEOUT * 2)
        state = "busy" if worker.current_job else "idle"
        if worker.last_seen < stale:
            state = "stale"
        return format_html(
            '<span class="jobqueue-worker jobqueue-worker-{}">{}</span>', state, state
        )

    @admin.display(description="current job")
    def current_job_link(self, worker: Worker) -> SafeString | str:
        if not worker.current_job:
            return EMPTY
        url = reverse(f"{self.admin_site.name}:jobqueue_job_change", args=[worker.current_job])
        return format_html('<a href="{}">{}</a>', url, worker.current_job)
