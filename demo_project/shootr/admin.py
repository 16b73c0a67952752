"""Admin: bundles with their screenshots, and a way to take a screenshot again."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from demo_project.shootr.models import Bundle, Screenshot
from demo_project.shootr.tasks import make_screenshot


def preview(shot: Screenshot) -> str:
    if not shot.thumbnail:
        return "-"
    return format_html('<a href="{}"><img src="{}" alt="" width="160"></a>',
                       shot.image.url, shot.thumbnail.url)


class ScreenshotInline(admin.TabularInline):
    model = Screenshot
    extra = 0
    can_delete = False
    fields = ("position", "url", "status", "attempts", "error", "thumb")
    readonly_fields = fields

    @admin.display(description="thumbnail")
    def thumb(self, shot: Screenshot) -> str:
        return preview(shot)

    def has_add_permission(self, request: HttpRequest, obj: Bundle | None = None) -> bool:
        return False


@admin.register(Bundle)
class BundleAdmin(admin.ModelAdmin):
    list_display = ("__str__", "created_at", "size")
    date_hierarchy = "created_at"
    inlines = (ScreenshotInline,)

    @admin.display(description="URLs")
    def size(self, bundle: Bundle) -> int:
        return bundle.screenshots.count()


@admin.register(Screenshot)
class ScreenshotAdmin(admin.ModelAdmin):
    list_display = ("url", "status", "attempts", "bundle", "created_at", "took")
    list_filter = ("status", "created_at")
    search_fields = ("url", "final_url", "title", "error")
    list_select_related = ("bundle",)
    readonly_fields = ("bundle", "position", "job_id", "attempts", "created_at", "started_at",
                       "finished_at", "final_url", "title", "truncated", "thumb")
    actions = ("take_again",)

    @admin.display(description="thumbnail")
    def thumb(self, shot: Screenshot) -> str:
        return preview(shot)

    @admin.action(description="Take the selected screenshots again")
    def take_again(self, request: HttpRequest, queryset: QuerySet[Screenshot]) -> None:
        with transaction.atomic():
            shots = list(queryset.select_for_update())
            for shot in shots:
                shot.status = Screenshot.Status.QUEUED
                shot.error = ""
                shot.attempts = 0
                shot.job_id = make_screenshot.delay(shot).id
                shot.save(update_fields=["status", "error", "attempts", "job_id"])
        self.message_user(request, f"{len(shots)} screenshot(s) queued again.", messages.SUCCESS)
