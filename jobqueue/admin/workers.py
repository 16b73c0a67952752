"""Worker rows, as their supervisors last recorded them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from jobqueue.admin.display import (
    EMPTY,
    ReadOnlyAdmin,
)
from jobqueue.conf import get_settings
from jobqueue.models import Worker


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
