"""Task registry: the only code a worker will run is a function registered here by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.apps import apps

from jobqueue.conf import get_settings
from jobqueue.exceptions import UnknownTask

if TYPE_CHECKING:
    from jobqueue.task import Task

_tasks: dict[str, Task] = {}


def register(task: Task) -> None:
    _tasks[task.name] = task


def get_task(name: str) -> Task:
    try:
        return _tasks[name]
    except KeyError:
        raise UnknownTask(
            f"no task named {name!r} is registered; tasks live in tasks.py of an installed app "
            "or in a module listed in JOBQUEUE['TASK_MODULES']"
        ) from None


def all_tasks() -> dict[str, Task]:
    return dict(_tasks)


def worker_imports(module: str) -> bool:
    """True when a worker process imports ``module`` at start, so it will know its tasks."""
    conf = get_settings()
    roots = list(conf.TASK_MODULES)
    if conf.AUTODISCOVER:
        roots += [f"{app.name}.tasks" for app in apps.get_app_configs()]
    return any(module == root or module.startswith(root + ".") for root in roots)
