"""Schedules declared in code, checked, and synced to the Schedule table.

Declarations come from ``@task(schedule=...)`` (named after the task) and from
``JOBQUEUE["SCHEDULES"]`` (named by their key). A sync creates the new ones, updates those whose
declaration changed since the last sync, and disables those no longer declared; it never deletes
a row (its history, and its jobs' link to it, stay). An admin edit of a declared schedule stands
until its declaration changes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from jobqueue import registry
from jobqueue.conf import get_settings
from jobqueue.exceptions import ConfigurationError, JobQueueError
from jobqueue.message import Message
from jobqueue.schedules import Cron, Every, Timing, timing

logger = logging.getLogger(__name__)

CATCH_UP = ("latest", "skip", "all")
SETTING_KEYS = frozenset(
    {
        "task",
        "cron",
        "every",
        "timezone",
        "args",
        "kwargs",
        "queue",
        "priority",
        "catch_up",
        "max_delay",
        "enabled",
    }
)


@dataclass
class Declaration:
    """One schedule as code declares it; ``values()`` are its Schedule columns."""

    name: str
    task: str
    cron: str = ""
    interval: int | None = None
    timezone: str = ""
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str = ""
    priority: int | None = None
    catch_up: str = "latest"
    max_delay: int | None = None
    enabled: bool = True

    def values(self) -> dict[str, Any]:
        values = asdict(self)
        del values["name"]
        return values


def takes_tick(task: Any) -> bool:
    """Whether the task asks for the tick its run belongs to (a ``scheduled_at`` parameter)."""
    return "scheduled_at" in task.signature.parameters


def build_message(
    task_name: str,
    args: Any,
    kwargs: Any,
    *,
    queue: str = "",
    priority: int | None = None,
    tick: datetime | None = None,
) -> Message:
    """The message of one run; what the scheduler sends, and how a schedule's arguments are
    checked before they are saved. Raises JobQueueError, TypeError or ValueError saying why."""
    task = registry.get_task(task_name)
    if not isinstance(args, list):
        raise TypeError(f"args must be a JSON list, not {type(args).__name__}")
    if not isinstance(kwargs, dict):
        raise TypeError(f"kwargs must be a JSON object, not {type(kwargs).__name__}")
    kwargs = dict(kwargs)
    if takes_tick(task):
        kwargs["scheduled_at"] = tick or timezone.now()
    # The tick reaches the task as ``scheduled_at`` only: the job's enqueued_at and run_at are
    # when it is sent (see ``scheduler.send``), so that it queues behind the jobs already waiting.
    return task.message(args, kwargs, queue=queue or None, priority=priority)


def check(declaration: Declaration | Any) -> list[str]:
    """What is wrong with a schedule (a Declaration or a Schedule row): empty when nothing."""
    problems: list[str] = []
    try:
        timing(cron=declaration.cron, interval=declaration.interval, timezone=declaration.timezone)
    except ConfigurationError as exc:
        problems.append(str(exc))
    if declaration.catch_up not in CATCH_UP:
        problems.append(f"catch_up {declaration.catch_up!r}: expected one of {list(CATCH_UP)}")
    max_delay = declaration.max_delay
    if max_delay is not None and (
        isinstance(max_delay, bool) or not isinstance(max_delay, int) or max_delay < 1
    ):
        problems.append(f"max_delay {max_delay!r}: expected whole seconds, at least 1, or None")
    try:
        json.dumps([declaration.args, declaration.kwargs])
    except (TypeError, ValueError) as exc:
        problems.append(f"args and kwargs are stored as plain JSON: {exc}")
        return problems
    try:
        build_message(
            declaration.task,
            declaration.args,
            declaration.kwargs,
            queue=declaration.queue,
            priority=declaration.priority,
        )
    except (JobQueueError, TypeError, ValueError) as exc:
        problems.append(str(exc))
    return problems


def declarations() -> tuple[list[Declaration], list[str]]:
    """Every schedule declared in code, and what is wrong with the declarations that could not
    be read at all (the others are checked by ``check``)."""
    found: list[Declaration] = []
    errors: list[str] = []
    for name, task in sorted(registry.all_tasks().items()):
        schedule = getattr(task, "schedule", None)
        if schedule is not None:
            found.append(_from_timing(name, name, schedule))
    entries = get_settings().SCHEDULES
    if not isinstance(entries, dict):
        return found, [f"JOBQUEUE['SCHEDULES'] must be a dict of name: schedule, not {entries!r}"]
    for name, entry in entries.items():
        try:
            found.append(_from_setting(name, entry))
        except ConfigurationError as exc:
            errors.append(f"JOBQUEUE['SCHEDULES'][{name!r}]: {exc}")
    return found, errors


def _from_timing(name: str, task: str, schedule: Timing) -> Declaration:
    if isinstance(schedule, Cron):
        return Declaration(name, task, cron=schedule.expression, timezone=schedule.timezone or "")
    assert isinstance(schedule, Every)
    return Declaration(name, task, interval=schedule.seconds)


def _from_setting(name: Any, entry: Any) -> Declaration:
    if not isinstance(name, str) or not name:
        raise ConfigurationError("a schedule's name must be a non-empty string")
    if not isinstance(entry, dict):
        raise ConfigurationError(f"expected a dict, not {entry!r}")
    unknown = sorted(set(entry) - SETTING_KEYS)
    if unknown:
        raise ConfigurationError(f"unknown keys {unknown}; known: {sorted(SETTING_KEYS)}")
    if not isinstance(entry.get("task"), str):
        raise ConfigurationError("'task' must be a task's dotted name")
    every: Any = entry.get("every")
    if isinstance(every, timedelta):
        every = every.total_seconds()
    if isinstance(every, float) and every.is_integer():
        every = int(every)
    return Declaration(
        name=name,
        task=entry["task"],
        cron=entry.get("cron") or "",
        interval=every,
        timezone=entry.get("timezone") or "",
        args=list(entry["args"]) if isinstance(entry.get("args"), tuple) else entry.get("args", []),
        kwargs=entry.get("kwargs", {}),
        queue=entry.get("queue") or "",
        priority=entry.get("priority"),
        catch_up=entry.get("catch_up", "latest"),
        max_delay=entry.get("max_delay"),
        enabled=entry.get("enabled", True),
    )


def sync(now: datetime | None = None) -> dict[str, int]:
    """Bring the Schedule table in line with the code; returns how many were created, updated
    and disabled. Declarations with problems are skipped (the system checks report them)."""
    from jobqueue.models import Schedule

    now = now or timezone.now()
    found, _ = declarations()
    declared = {d.name: d for d in found if not check(d)}
    counts = {"created": 0, "updated": 0, "disabled": 0}
    rows = {s.name: s for s in Schedule.objects.filter(name__in=list(declared))}
    for name, declaration in declared.items():
        values = declaration.values()
        row = rows.get(name)
        if row is None:
            try:
                with transaction.atomic():
                    Schedule.objects.create(
                        name=name,
                        origin=Schedule.Origin.CODE,
                        declared=values,
                        since=now,
                        created_at=now,
                        updated_at=now,
                        **values,
                    )
                counts["created"] += 1
                logger.info("schedule=%s state=created task=%s", name, declaration.task)
            except IntegrityError:
                pass  # another worker, starting at the same time, created it
            continue
        if row.declared == values and row.origin == Schedule.Origin.CODE:
            continue  # unchanged in code: an admin edit, if any, stands
        changes: dict[str, Any] = {
            **values,
            "origin": Schedule.Origin.CODE,
            "declared": values,
            "updated_at": now,
        }
        if (row.cron, row.interval, row.timezone) != (
            declaration.cron,
            declaration.interval,
            declaration.timezone,
        ) or not row.enabled:
            changes["since"] = now  # a new timing owes nothing from before it
        # Compare-and-set: of workers starting together, one updates.
        if Schedule.objects.filter(pk=row.pk, updated_at=row.updated_at).update(**changes):
            counts["updated"] += 1
            logger.info("schedule=%s state=updated task=%s", name, declaration.task)
    gone = Schedule.objects.filter(origin=Schedule.Origin.CODE, declared__isnull=False).exclude(
        name__in=list(declared)
    )
    for row in gone:
        row.enabled = False
        row.declared = None
        row.updated_at = now
        row.save(update_fields=["enabled", "declared", "updated_at"])
        counts["disabled"] += 1
        logger.info("schedule=%s state=disabled (no longer declared in code)", row.name)
    return counts


def check_schedules(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """System check: every declared schedule can be read, is due at valid times and would send
    a job its task accepts."""
    from django.core import checks

    found, errors = declarations()
    messages: list[Any] = [checks.Error(text, id="jobqueue.E020") for text in errors]
    seen: set[str] = set()
    for declaration in found:
        if declaration.name in seen:
            messages.append(
                checks.Error(
                    f"Schedule {declaration.name!r} is declared twice (a task's schedule= and "
                    "JOBQUEUE['SCHEDULES'] use one name).",
                    hint="Give the JOBQUEUE['SCHEDULES'] entry another name.",
                    id="jobqueue.E022",
                )
            )
        seen.add(declaration.name)
        messages += [
            checks.Error(f"Schedule {declaration.name!r}: {problem}", id="jobqueue.E021")
            for problem in check(declaration)
        ]
    return messages


def overview(now: datetime | None = None) -> list[dict[str, Any]]:
    """Each schedule with its next run and lag (how late its oldest unsent due tick is: a lag
    that grows means no scheduler is running), for ``jobinfo`` and ``jobschedules``."""
    from jobqueue.models import Schedule
    from jobqueue.scheduler import owed_after

    now = now or timezone.now()
    rows = []
    for schedule in Schedule.objects.all():
        row: dict[str, Any] = {"schedule": schedule, "when": "", "next": None, "lag": None}
        try:
            when = schedule.timing()
            row["when"] = str(when)
            due = when.next_after(owed_after(schedule))
        except ConfigurationError as exc:
            row["when"] = f"invalid: {exc}"
            rows.append(row)
            continue
        if schedule.enabled:
            row["next"] = due if due > now else when.next_after(now)
            row["lag"] = max(now - due, timedelta(0))
        rows.append(row)
    return rows
