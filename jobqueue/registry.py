"""Task registry: the only code a worker will run is a function registered here by name."""

from __future__ import annotations

import sys
from importlib import import_module
from typing import TYPE_CHECKING

from django.apps import apps
from django.utils.module_loading import autodiscover_modules

from jobqueue.conf import get_settings
from jobqueue.exceptions import ConfigurationError, UnknownTask

if TYPE_CHECKING:
    from jobqueue.task import Task

_tasks: dict[str, Task] = {}
# Every module loaded once Django was set up and the task modules imported: a worker, set up
# the same way, has loaded them too. None until ``discover`` has run.
_loaded_at_start: frozenset[str] | None = None


def register(task: Task) -> None:
    """Add ``task``; a name already taken by a task of another module is refused (a worker
    would run whichever was imported last)."""
    other = _tasks.get(task.name)
    if other is not None and other.module != task.module:
        raise ConfigurationError(
            f"task name {task.name!r} is taken by {other.module}.{other.func.__qualname__}; "
            "give one of them another name="
        )
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


def discover() -> None:
    """Import the task modules, as every process does when Django starts (``AppConfig.ready``):
    ``tasks`` of each installed app, then ``TASK_MODULES``."""
    global _loaded_at_start
    try:
        conf = get_settings()
    except ConfigurationError:
        return  # the system checks say why, and every use of the settings raises it
    if conf.AUTODISCOVER:
        autodiscover_modules("tasks")
    for module in conf.TASK_MODULES:
        import_module(module)
    _loaded_at_start = frozenset(sys.modules)


def worker_imports(module: str) -> bool:
    """True when a worker process imports ``module`` at start, so it will know its tasks: a
    task module itself (``tasks`` of an installed app, or one in ``TASK_MODULES``), or one of
    its submodules that was loaded with it (``myapp/tasks/__init__.py`` importing
    ``.sub``). A submodule imported later, by a view say, is not loaded in a worker."""
    conf = get_settings()
    roots = list(conf.TASK_MODULES)
    if conf.AUTODISCOVER:
        roots += [f"{app.name}.tasks" for app in apps.get_app_configs()]
    if module in roots:
        return True
    loaded = _loaded_at_start or frozenset()
    return module in loaded and any(module.startswith(root + ".") for root in roots)
