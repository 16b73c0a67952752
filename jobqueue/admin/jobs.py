"""The job list and page: filters that never scan the table, requeue and cancel through the
broker."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.auth import get_permission_codename
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import ngettext

from jobqueue.admin.display import (
    EMPTY,
    ReadOnlyAdmin,
    batches,
    format_seconds,
    pretty_json,
    status_badge,
)
from jobqueue.brokers import get_broker
from jobqueue.conf import get_settings
from jobqueue.exceptions import JobQueueError
from jobqueue.models import Job, JobAttempt, Schedule, ScheduleTick
from jobqueue.paginator import EstimatedCountPaginator
from jobqueue.registry import all_tasks
from jobqueue.states import JobStatus


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


class ScheduleFilter(admin.SimpleListFilter):
    """The jobs a schedule sent (by the clock or by "run now")."""

    title = "schedule"
    parameter_name = "schedule"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(str(pk), name) for pk, name in Schedule.objects.values_list("pk", "name")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        value = self.value()
        return queryset.filter(schedule_tick__schedule_id=value) if value else queryset


class ResentFilter(admin.SimpleListFilter):
    """Jobs the broker lost (Redis restarted without persistence) and reconciliation sent again."""

    title = "sent again after broker loss"
    parameter_name = "resent"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "yes")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        return queryset.filter(resent__gt=0) if self.value() == "yes" else queryset


class CurrentAttempts(BaseInlineFormSet):
    """The attempts of the job's current run only: on the Redis broker a requeued job's older
    attempts stay until tracking forgets them, and must not show meanwhile."""

    def get_queryset(self) -> QuerySet[JobAttempt]:
        return super().get_queryset().filter(number__lte=self.instance.attempts)


class AttemptInline(admin.TabularInline):
    """The job's failed attempts, each with its worker and error; read-only, like the job."""

    model = JobAttempt
    formset = CurrentAttempts
    verbose_name = "failed attempt"
    fields = ("number", "worker", "started_at", "ended_at", "error", "traceback_display")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="traceback")
    def traceback_display(self, attempt: JobAttempt) -> SafeString | str:
        if not attempt.traceback:
            return EMPTY
        return format_html(
            '<details><summary>show</summary><pre class="jobqueue-pre">{}</pre></details>',
            attempt.traceback,
        )


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
    list_filter = ("status", QueueFilter, TaskFilter, ScheduleFilter, ResentFilter)
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
                    "schedule_display",
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
    inlines = (AttemptInline,)

    # -- columns and fields ----------------------------------------------------------------------
    @admin.display(description="status")
    def status_display(self, job: Job) -> SafeString:
        return status_badge(job.status)

    @admin.display(description="duration")
    def duration_display(self, job: Job) -> str:
        return format_seconds(job.duration)

    @admin.display(description="schedule")
    def schedule_display(self, job: Job) -> SafeString | str:
        """The schedule that sent the job, its tick (or "run now") and when it was sent: a tick
        sent late (after downtime) was sent, and queued, well after its time."""
        tick = ScheduleTick.objects.filter(job_id=job.pk).select_related("schedule").first()
        if tick is None:
            return EMPTY
        url = reverse(f"{self.admin_site.name}:jobqueue_schedule_change", args=[tick.schedule_id])
        sent = f"sent at {timezone.localtime(job.enqueued_at):%Y-%m-%d %H:%M:%S}"
        when = (
            "run now" if tick.manual else f"tick {timezone.localtime(tick.tick):%Y-%m-%d %H:%M:%S}"
        )
        return format_html('<a href="{}">{}</a> ({} / {})', url, tick.schedule.name, when, sent)

    @admin.display(description="arguments")
    def arguments_display(self, job: Job) -> SafeString | str:
        return pretty_json(job.arguments)

    @admin.display(description="result")
    def result_display(self, job: Job) -> SafeString | str:
        return pretty_json(job.result)

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
        done = sum(broker.requeue(batch) for batch in batches(ids))
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
