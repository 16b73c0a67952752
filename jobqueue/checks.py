"""System checks: a wrong JOBQUEUE setting is reported at startup, with what to write instead."""

from __future__ import annotations

from typing import Any

from django.core import checks

from jobqueue import registry
from jobqueue.conf import DEFAULT_BROKER, KNOWN_KEYS, NUMBERS, SWITCHES, get_settings, problems
from jobqueue.exceptions import ConfigurationError, JobQueueError
from jobqueue.schedule_sync import check_schedules


def register() -> None:
    checks.register(check_settings, "jobqueue")
    checks.register(check_tasks, "jobqueue")
    checks.register(check_schedules, "jobqueue")
    checks.register(check_broker_durability, "jobqueue", deploy=True)
    checks.register(check_database_clock, "jobqueue")


def check_broker_durability(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``check --deploy``: asks the broker's server how it is configured."""
    from jobqueue.brokers import get_broker

    try:
        get_settings()
    except ConfigurationError:
        return []  # check_settings reports the setting; the broker cannot be asked anything
    try:
        warnings = get_broker().durability_warnings()
    except JobQueueError as exc:
        return [
            checks.Warning(
                f"The broker could not be asked about durability: {exc}", id="jobqueue.W002"
            )
        ]
    return [checks.Warning(f"Broker: {text}", id="jobqueue.W001") for text in warnings]


def check_database_clock(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The database broker compares times Django wrote with SQLite's clock, which is UTC; with
    USE_TZ = False Django writes local times, so every lease and due time would be off by the
    zone's offset (jobs run hours early or late, live leases expire)."""
    from django.conf import settings
    from django.db import connections

    from jobqueue.brokers import load_broker_class
    from jobqueue.brokers.database import DatabaseBroker

    if settings.USE_TZ or settings.TIME_ZONE in (None, "UTC"):
        return []
    user = getattr(settings, "JOBQUEUE", None) or {}
    try:
        broker = load_broker_class(user.get("BROKER", {}).get("BACKEND", DEFAULT_BROKER))
    except (ConfigurationError, AttributeError):
        return []  # check_settings reports why
    if not issubclass(broker, DatabaseBroker):
        return []
    if connections[broker.db_alias()].vendor != "sqlite":
        return []
    return [
        checks.Error(
            f"The database broker on SQLite needs USE_TZ = True or TIME_ZONE = 'UTC' "
            f"(TIME_ZONE is {settings.TIME_ZONE!r} with USE_TZ = False): SQLite's clock is "
            "UTC, so leases and due times would be off by the zone's offset.",
            hint="Set USE_TZ = True (Django's default), or TIME_ZONE = 'UTC'.",
            id="jobqueue.E011",
        )
    ]


# The check id of each key's problems (see conf.problems), in the order they were numbered.
PROBLEM_IDS = {
    "BROKER": "jobqueue.E003",
    "QUEUES": "jobqueue.E005",
    "DEFAULT_QUEUE": "jobqueue.E006",
    **dict.fromkeys(NUMBERS, "jobqueue.E007"),
    "TASK_MODULES": "jobqueue.E008",
    **dict.fromkeys(SWITCHES, "jobqueue.E009"),
}


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from django.conf import settings

    from jobqueue.brokers import load_broker_class

    errors: list[checks.CheckMessage] = []
    user = getattr(settings, "JOBQUEUE", None) or {}
    if not isinstance(user, dict):
        return [
            checks.Error(
                "JOBQUEUE must be a dict.",
                hint="JOBQUEUE = {'QUEUES': ['default']}",
                id="jobqueue.E001",
            )
        ]
    for key in sorted(set(user) - KNOWN_KEYS):
        errors.append(
            checks.Error(
                f"JOBQUEUE has an unknown key {key!r}.",
                hint=f"Known keys: {', '.join(sorted(KNOWN_KEYS))}.",
                id="jobqueue.E002",
            )
        )
    found = problems(user)
    errors += [
        checks.Error(
            problem.message, hint=problem.hint, id=PROBLEM_IDS.get(problem.key, "jobqueue.E001")
        )
        for problem in found
    ]
    if not any(problem.key == "BROKER" for problem in found):
        try:
            load_broker_class(user.get("BROKER", {}).get("BACKEND", DEFAULT_BROKER))
        except ConfigurationError as exc:
            errors.append(checks.Error(str(exc), id="jobqueue.E004"))
    return errors


def check_tasks(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    try:
        queues = get_settings().QUEUES
    except ConfigurationError:
        return []  # check_settings reports why
    return [
        checks.Error(
            f"Task {name} uses queue {task.queue!r}, which is not in JOBQUEUE['QUEUES'] "
            f"{list(queues)}.",
            hint=f"Add {task.queue!r} to JOBQUEUE['QUEUES'] or change the task's queue=.",
            obj=task.func,
            id="jobqueue.E010",
        )
        for name, task in sorted(registry.all_tasks().items())
        if task.queue is not None and task.queue not in queues
    ]
