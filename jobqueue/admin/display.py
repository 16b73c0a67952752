"""What every admin page of jobqueue shares: how values are shown, and read-only rows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import suppress
from datetime import timedelta
from typing import Any, ClassVar

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from jobqueue.states import JobStatus

BATCH = 500  # ids per broker call: well under SQLite's limit on query parameters
EMPTY = "—"


def batches(items: list[str], size: int = BATCH) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def pretty_json(text: str | None) -> SafeString | str:
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
