"""System checks: a wrong JOBQUEUE setting is reported at startup, with what to write instead."""

from __future__ import annotations

from typing import Any

from django.core import checks

from jobqueue import registry
from jobqueue.conf import KNOWN_KEYS, get_settings
from jobqueue.exceptions import ConfigurationError, JobQueueError
from jobqueue.schedule_sync import check_schedules


def register() -> None:
    checks.register(check_settings, "jobqueue")
    checks.register(check_tasks, "jobqueue")
    checks.register(check_schedules, "jobqueue")
    checks.register(check_broker_durability, "jobqueue", deploy=True)


def check_broker_durability(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``check --deploy``: asks the broker's server how it is configured."""
    from jobqueue.brokers import get_broker

    try:
        warnings = get_broker().durability_warnings()
    except JobQueueError as exc:
        return [
            checks.Warning(
                f"The broker could not be asked about durability: {exc}", id="jobqueue.W002"
            )
        ]
    return [checks.Warning(f"Broker: {text}", id="jobqueue.W001") for text in warnings]


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
    try:
        conf = get_settings()
    except TypeError as exc:
        return [*errors, checks.Error(f"JOBQUEUE cannot be read: {exc}", id="jobqueue.E001")]
    broker = conf.BROKER
    if not isinstance(broker, dict) or not isinstance(broker.get("OPTIONS", {}), dict):
        errors.append(
            checks.Error(
                "JOBQUEUE['BROKER'] must be a dict with 'BACKEND' and optional 'OPTIONS' dict.",
                hint="'BROKER': {'BACKEND': 'jobqueue.brokers.database.DatabaseBroker'}",
                id="jobqueue.E003",
            )
        )
    else:
        try:
            load_broker_class(broker["BACKEND"])
        except ConfigurationError as exc:
            errors.append(checks.Error(str(exc), id="jobqueue.E004"))
    queues = conf.QUEUES
    if not queues or not all(isinstance(q, str) and q and q.strip() == q for q in queues):
        errors.append(
            checks.Error(
                f"JOBQUEUE['QUEUES'] must be a non-empty list of queue names, not {queues!r}.",
                hint="'QUEUES': ['high', 'default', 'low']  (highest priority first)",
                id="jobqueue.E005",
            )
        )
    elif len(set(queues)) != len(queues):
        errors.append(
            checks.Error(
                f"JOBQUEUE['QUEUES'] names a queue twice: {list(queues)}.", id="jobqueue.E005"
            )
        )
    elif conf.DEFAULT_QUEUE not in queues:
        errors.append(
            checks.Error(
                f"JOBQUEUE['DEFAULT_QUEUE'] = {conf.DEFAULT_QUEUE!r} is not in QUEUES "
                f"{list(queues)}.",
                hint=f"Add it to QUEUES or set 'DEFAULT_QUEUE': {queues[0]!r}.",
                id="jobqueue.E006",
            )
        )
    numbers = {
        "LEASE_TIMEOUT": (conf.LEASE_TIMEOUT, 1, "seconds, e.g. 30"),
        "POLL_INTERVAL": (conf.POLL_INTERVAL, 0.001, "seconds, e.g. 0.2"),
        "MAX_BATCH": (conf.MAX_BATCH, 1, "jobs, e.g. 100"),
        "RETRY_BACKOFF_MAX": (conf.RETRY_BACKOFF_MAX, 0, "seconds, e.g. 3600"),
    }
    if conf.RESULT_TTL is not None:
        numbers["RESULT_TTL"] = (conf.RESULT_TTL, 0, "seconds, e.g. 500, or None to keep")
    for key, (value, minimum, example) in numbers.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            errors.append(
                checks.Error(
                    f"JOBQUEUE[{key!r}] = {value!r} is not a number >= {minimum}.",
                    hint=f"Write a number of {example}.",
                    id="jobqueue.E007",
                )
            )
    for key in ("EAGER", "AUTODISCOVER", "TRACKING"):
        value = getattr(conf, key)
        if not isinstance(value, bool):
            errors.append(
                checks.Error(
                    f"JOBQUEUE[{key!r}] = {value!r} is not True or False.",
                    hint=f"Write {key!r}: True or {key!r}: False.",
                    id="jobqueue.E009",
                )
            )
    for module in conf.TASK_MODULES:
        if not isinstance(module, str):
            errors.append(
                checks.Error(
                    f"JOBQUEUE['TASK_MODULES'] holds {module!r}, not a module path.",
                    id="jobqueue.E008",
                )
            )
    return errors


def check_tasks(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    queues = get_settings().QUEUES
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
