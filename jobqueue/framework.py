"""Django's tasks framework, wherever it comes from: ``django.tasks`` (Django 6.0+) or the
``django-tasks`` backport package (Django 5.2, ``pip install "jobqueue[tasks]"``).

The two agree on nearly everything; the names where they differ are settled here and nowhere
else, so ``jobqueue.backend`` has one code path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:  # checked against Django 6's names
    from django.tasks import task, task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist, TaskResultMismatch
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json

    SOURCE = "django.tasks"
else:
    try:
        from django.tasks import task, task_backends
        from django.tasks.backends.base import BaseTaskBackend
        from django.tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
        from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist, TaskResultMismatch
        from django.tasks.signals import task_enqueued, task_finished, task_started
        from django.utils.json import normalize_json

        SOURCE = "django.tasks"
    except ImportError:
        try:
            from django_tasks import task, task_backends
            from django_tasks.backends.base import BaseTaskBackend
            from django_tasks.base import (
                Task,
                TaskContext,
                TaskError,
                TaskResult,
                TaskResultStatus,
            )
            from django_tasks.exceptions import InvalidTaskError as InvalidTask
            from django_tasks.exceptions import TaskResultDoesNotExist, TaskResultMismatch
            from django_tasks.signals import task_enqueued, task_finished, task_started
            from django_tasks.utils import normalize_json

            SOURCE = "django_tasks"
        except ImportError as exc:
            if not (isinstance(exc, ModuleNotFoundError) and exc.name == "django_tasks"):
                raise ImproperlyConfigured(
                    f"this version of django-tasks is not one jobqueue supports ({exc}): "
                    'pip install "jobqueue[tasks]" installs one that is'
                ) from exc
            raise ImproperlyConfigured(
                "jobqueue.backend needs Django's tasks framework: Django 6.0 or later, or on "
                'Django 5.2 the backport package: pip install "jobqueue[tasks]"'
            ) from exc

# The backport called a successful result SUCCEEDED before 0.12; Django 6 says SUCCESSFUL.
SUCCESSFUL: Any = (
    getattr(TaskResultStatus, "SUCCESSFUL", None) or TaskResultStatus.SUCCEEDED  # type: ignore[attr-defined]
)

__all__ = [
    "SOURCE",
    "SUCCESSFUL",
    "BaseTaskBackend",
    "InvalidTask",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultMismatch",
    "TaskResultStatus",
    "normalize_json",
    "task",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]
