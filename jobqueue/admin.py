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
from datetime import datetime, timedelta
from typing import Any, ClassVar

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, JsonResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import ngettext

from jobqueue.brokers import get_broker
from jobqueue.conf import get_settings
from jobqueue.exceptions import ConfigurationError, JobQueueError, UnknownTask
from jobqueue.models import Job, Schedule, ScheduleTick, Worker
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


# -- periodic schedules ----------------------------------------------------------------------------
PREVIEW_RUNS = 5


def _timing_error_field(message: str, cron: str) -> str | None:
    if "exactly one" in message:
        return None
    if "time zone" in message:
        return "timezone"
    return "cron" if cron else "interval"


def _preview(cron: str, interval: Any, zone: str, now: datetime | None = None) -> list[str]:
    """The next run times, in the schedule's time zone (ConfigurationError if invalid)."""
    from jobqueue.schedules import timing

    when = timing(cron=cron, interval=interval, timezone=zone)
    tz = zone_of(when)
    upcoming = when.upcoming(now or timezone.now(), PREVIEW_RUNS)
    return [t.astimezone(tz).strftime("%a %Y-%m-%d %H:%M:%S %Z") for t in upcoming]


def zone_of(when: Any) -> Any:
    from jobqueue.schedules import Cron, zone

    return zone(when.timezone) if isinstance(when, Cron) else zone(None)


class ScheduleForm(forms.ModelForm):
    """Checks what a scheduler would trip on before the schedule is saved: the timing, and the
    arguments against the task's signature (as ``.delay()`` checks them)."""

    task = forms.ChoiceField(help_text="A registered task.")

    class Meta:
        model = Schedule
        fields = (
            "name",
            "task",
            "enabled",
            "cron",
            "interval",
            "timezone",
            "args",
            "kwargs",
            "queue",
            "priority",
            "catch_up",
            "max_delay",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = sorted(all_tasks())
        current = self.instance.task if self.instance.pk else ""
        if current and current not in names:
            names.insert(0, current)  # shown as it is; saving it is refused with the reason
        task_field = self.fields["task"]
        assert isinstance(task_field, forms.ChoiceField)
        task_field.choices = [("", "---------")] + [(n, n) for n in names]
        self.fields["cron"].widget.attrs["placeholder"] = "*/5 * * * *"
        self.fields["timezone"].widget.attrs["placeholder"] = settings.TIME_ZONE or "UTC"

    def clean(self) -> dict[str, Any]:
        from jobqueue.schedule_sync import build_message
        from jobqueue.schedules import timing

        data: dict[str, Any] = super().clean() or {}
        cron, interval, zone = data.get("cron", ""), data.get("interval"), data.get("timezone", "")
        if "cron" in data and "interval" in data:
            try:
                timing(cron=cron, interval=interval, timezone=zone)
            except ConfigurationError as exc:
                self.add_error(_timing_error_field(str(exc), cron), str(exc))
        if data.get("task") and "args" in data and "kwargs" in data:
            try:
                build_message(
                    data["task"],
                    data["args"],
                    data["kwargs"],
                    queue=data.get("queue", ""),
                    priority=data.get("priority"),
                )
            except UnknownTask as exc:
                self.add_error("task", str(exc))
            except (JobQueueError, TypeError, ValueError) as exc:
                text = str(exc)
                field = "queue" if "queue" in text else "priority" if "priority" in text else None
                self.add_error(field, f"The task would refuse these arguments: {text}")
        return data


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    """Schedules from code and from here alike: edit, pause, resume, run now. A schedule
    declared in code keeps an edit made here until its declaration in code changes."""

    form = ScheduleForm
    list_display = (
        "name",
        "task",
        "timing_display",
        "enabled",
        "next_run",
        "last_run",
        "catch_up",
        "origin",
    )
    list_filter = ("enabled", "origin", "catch_up")
    search_fields = ("name", "task")
    actions = ("run_now", "pause", "resume")
    readonly_fields = (
        "preview",
        "origin",
        "since",
        "last_tick",
        "last_run",
        "created_at",
        "updated_at",
    )
    fieldsets = (
        (None, {"fields": ("name", "task", "enabled")}),
        ("When", {"fields": ("cron", "interval", "timezone", "preview")}),
        ("Job", {"fields": ("args", "kwargs", "queue", "priority")}),
        ("After downtime", {"fields": ("catch_up", "max_delay")}),
        (
            "History",
            {"fields": ("origin", "since", "last_tick", "last_run", "created_at", "updated_at")},
        ),
    )

    class Media:
        css: ClassVar[dict[str, tuple[str, ...]]] = {"all": ("jobqueue/admin.css",)}
        js = ("jobqueue/schedule_preview.js",)

    # -- columns and fields ----------------------------------------------------------------------
    @admin.display(description="when")
    def timing_display(self, schedule: Schedule) -> str:
        try:
            return str(schedule.timing())
        except ConfigurationError as exc:
            return f"invalid: {exc}"

    @admin.display(description="next run")
    def next_run(self, schedule: Schedule) -> str:
        from jobqueue.scheduler import owed_after

        if not schedule.enabled:
            return "paused"
        try:
            when = schedule.timing()
            tick = when.next_after(owed_after(schedule))
        except ConfigurationError:
            return EMPTY
        return tick.astimezone(zone_of(when)).strftime("%Y-%m-%d %H:%M:%S %Z")

    @admin.display(description="last run")
    def last_run(self, schedule: Schedule) -> SafeString | str:
        if schedule.last_job_id is None or schedule.last_run_at is None:
            return EMPTY
        url = reverse(f"{self.admin_site.name}:jobqueue_job_change", args=[schedule.last_job_id])
        when = timezone.localtime(schedule.last_run_at).strftime("%Y-%m-%d %H:%M:%S")
        return format_html('<a href="{}">{}</a>', url, when)

    @admin.display(description=f"next {PREVIEW_RUNS} runs")
    def preview(self, schedule: Schedule) -> SafeString:
        try:
            times = _preview(schedule.cron, schedule.interval, schedule.timezone)
        except ConfigurationError as exc:
            times, error = [], str(exc)
        else:
            error = ""
        url = reverse(f"{self.admin_site.name}:jobqueue_schedule_preview")
        items = format_html_join("", "<li>{}</li>", ((t,) for t in times))
        return format_html(
            '<ul id="schedule-preview" class="jobqueue-preview" data-url="{}">{}</ul>'
            '<p id="schedule-preview-error" class="errornote"{}>{}</p>',
            url,
            items,
            "" if error else mark_safe(' style="display: none"'),
            error,
        )

    # -- the live preview ------------------------------------------------------------------------
    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view(self.preview_view)
        return [
            path("preview/", view, name="jobqueue_schedule_preview"),
            *super().get_urls(),
        ]

    def preview_view(self, request: HttpRequest) -> JsonResponse:
        """The next run times of a cron or interval being typed in the form."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        params = request.GET
        interval: Any = params.get("interval") or None
        try:
            if interval is not None:
                interval = int(interval)
            times = _preview(params.get("cron", "").strip(), interval, params.get("timezone", ""))
        except (ConfigurationError, ValueError) as exc:
            return JsonResponse({"times": [], "error": str(exc)})
        return JsonResponse({"times": times, "error": ""})

    # -- saving ----------------------------------------------------------------------------------
    def save_model(self, request: HttpRequest, obj: Schedule, form: Any, change: bool) -> None:
        now = timezone.now()
        timing_changed = {"cron", "interval", "timezone"} & set(form.changed_data)
        resumed = "enabled" in form.changed_data and obj.enabled
        moved = not change or timing_changed or resumed
        if moved:
            obj.since = now  # a new timing, or a resumed schedule, owes no tick from before
        obj.updated_at = now
        if not change:
            super().save_model(request, obj, form, change)
            return
        # Only what the form edits (and the two columns that follow from it): the columns the
        # schedulers own (last_tick, last_job_id, last_run_at) may have moved since the form was
        # loaded, and writing them back would send a tick again, or lose one.
        fields = {f.name for f in obj._meta.concrete_fields} & set(form.fields)
        obj.save(update_fields=sorted(fields | {"updated_at"} | ({"since"} if moved else set())))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A schedule declared in code would come back at the next sync: disable it instead.
        if obj is not None and obj.origin == Schedule.Origin.CODE:
            return False
        return super().has_delete_permission(request, obj)

    # -- actions ---------------------------------------------------------------------------------
    @admin.action(description="Run selected schedules now", permissions=["change"])
    def run_now(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        from jobqueue.scheduler import run_now

        for schedule in queryset:
            try:
                job_id = run_now(schedule)
            except (JobQueueError, TypeError, ValueError) as exc:
                self.message_user(request, f"{schedule.name}: not sent: {exc}", messages.ERROR)
                continue
            url = reverse(f"{self.admin_site.name}:jobqueue_job_change", args=[job_id])
            self.message_user(
                request,
                format_html('{}: job <a href="{}">{}</a> sent.', schedule.name, url, job_id),
                messages.SUCCESS,
            )

    @admin.action(description="Pause selected schedules", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        done = queryset.filter(enabled=True).update(enabled=False, updated_at=timezone.now())
        self.message_user(request, f"{done} paused.", messages.SUCCESS)

    @admin.action(description="Resume selected schedules", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        now = timezone.now()
        done = queryset.filter(enabled=False).update(enabled=True, since=now, updated_at=now)
        self.message_user(request, f"{done} resumed (from now: no catch-up).", messages.SUCCESS)
