"""Django's tasks framework, wherever it comes from: ``django.tasks`` (Django 6.0+) or the
``django-tasks`` backport package, 0.12.x (Django 5.2, ``pip install "jobqueue[tasks]"``).

The two agree on everything jobqueue uses but where they live and the name of one exception
(``InvalidTask``, the backport's ``InvalidTaskError``): that is settled here and nowhere else, so
``jobqueue.backend`` has one code path. Earlier backport releases differ beyond names and are
refused with a clear error.
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING

from django.core.exceptions import ImproperlyConfigured

BACKPORT = "0.12"  # the django-tasks release series supported on Django 5.2

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
        SOURCE = "django_tasks"

    if SOURCE == "django_tasks":
        try:
            _version = metadata.version("django-tasks")
        except metadata.PackageNotFoundError:
            raise ImproperlyConfigured(
                "jobqueue.backend needs Django's tasks framework: Django 6.0 or later, or on "
                'Django 5.2 the backport package: pip install "jobqueue[tasks]"'
            ) from None
        if _version.split(".")[:2] != BACKPORT.split("."):
            # 0.11 requires backends to store TaskResult.metadata; 0.10 and older have no
            # per-task options and an enqueue_on_commit of their own: not Django 6's API.
            raise ImproperlyConfigured(
                f"django-tasks {_version} is installed; jobqueue's backend supports "
                f'django-tasks {BACKPORT}.x, the API of django.tasks: pip install "jobqueue[tasks]"'
            )
        from django_tasks import task, task_backends
        from django_tasks.backends.base import BaseTaskBackend
        from django_tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
        from django_tasks.exceptions import InvalidTaskError as InvalidTask
        from django_tasks.exceptions import TaskResultDoesNotExist, TaskResultMismatch
        from django_tasks.signals import task_enqueued, task_finished, task_started
        from django_tasks.utils import normalize_json

# The status of a task that succeeded (the backport said SUCCEEDED before 0.12).
SUCCESSFUL = TaskResultStatus.SUCCESSFUL

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
