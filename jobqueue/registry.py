"""Task registry: the only code a worker will run is a function registered here by name."""

from __future__ import annotations

import logging
import sys
from importlib import import_module
from typing import TYPE_CHECKING

from django.apps import apps
from django.utils.module_loading import autodiscover_modules

from jobqueue.conf import get_settings
from jobqueue.exceptions import ConfigurationError, UnknownTask

if TYPE_CHECKING:
    from jobqueue.task import Task

logger = logging.getLogger(__name__)

_tasks: dict[str, Task] = {}
# Modules a worker has loaded too, because this process loaded them while starting: those that
# declared a task before every app was ready (settings, models, any app's ready()), and those
# that ``discover`` imported. A module first imported later (by a view, say) is not in it.
_loaded_at_start: set[str] = set()
_discovering = False


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
    if _discovering or not apps.ready:
        _loaded_at_start.add(task.module)


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
    ``tasks`` of each installed app, then ``TASK_MODULES``. Run again when ``JOBQUEUE`` changes
    (``override_settings`` in tests), as a process started with the new settings would."""
    global _discovering
    try:
        conf = get_settings()
    except ConfigurationError:
        return  # the system checks say why, and every use of the settings raises it
    before = set(sys.modules)
    _discovering = True
    try:
        if conf.AUTODISCOVER:
            autodiscover_modules("tasks")
        for module in conf.TASK_MODULES:
            import_module(module)
    finally:
        _discovering = False
        _loaded_at_start.update(set(sys.modules) - before)


def rediscover() -> None:
    """``discover`` for settings changed after start; a TASK_MODULES entry that cannot be
    imported is logged, not raised, so that ``override_settings`` itself does not fail."""
    if not apps.ready:
        return  # AppConfig.ready will discover
    try:
        discover()
    except ImportError as exc:
        logger.warning("state=task-module-not-imported error=%s", exc)


def worker_imports(module: str) -> bool:
    """True when a worker process imports ``module`` at start, so it will know its tasks: a
    task module itself (``tasks`` of an installed app, or one in ``TASK_MODULES``), or one of
    its submodules loaded while the process started (``myapp/tasks/__init__.py`` importing
    ``.sub``, or an app's ``ready()`` doing so). A submodule imported later, by a view say,
    is not loaded in a worker."""
    conf = get_settings()
    roots = list(conf.TASK_MODULES)
    if conf.AUTODISCOVER:
        roots += [f"{app.name}.tasks" for app in apps.get_app_configs()]
    if module in roots:
        return True
    return module in _loaded_at_start and any(module.startswith(root + ".") for root in roots)
