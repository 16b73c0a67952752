"""Periodic schedules: edited here, checked before they are saved, previewed, run now or paused."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, JsonResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from jobqueue.admin.display import (
    EMPTY,
)
from jobqueue.exceptions import ConfigurationError, JobQueueError, UnknownTask
from jobqueue.models import Schedule
from jobqueue.registry import all_tasks

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
