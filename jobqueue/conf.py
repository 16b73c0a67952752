"""jobqueue's settings, read from ``settings.JOBQUEUE`` in one place, lazily, with defaults.

Every value is checked here before anything uses it: a wrong one raises ``ConfigurationError``
at first use, and ``manage.py check`` lists them all (``problems``), each with what to write.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from jobqueue import names
from jobqueue.exceptions import ConfigurationError

DEFAULT_BROKER = "jobqueue.brokers.database.DatabaseBroker"
MAX_SECONDS = 10**9  # about 31 years: any more overflows the dates a job's times are kept in


@dataclass(frozen=True)
class Settings:
    """The effective ``JOBQUEUE`` settings; every key is optional in the user's dict."""

    BROKER: dict[str, Any] = field(default_factory=lambda: {"BACKEND": DEFAULT_BROKER})
    QUEUES: tuple[str, ...] = ("high", "default", "low")
    DEFAULT_QUEUE: str = "default"
    RESULT_TTL: int | None = 500
    LEASE_TIMEOUT: float = 30.0
    EAGER: bool = False
    AUTODISCOVER: bool = True
    TASK_MODULES: tuple[str, ...] = ()
    POLL_INTERVAL: float = 0.2
    MAX_BATCH: int = 100
    RETRY_BACKOFF_MAX: float = 3600.0
    TRACKING: bool = True
    SCHEDULES: dict[str, Any] = field(default_factory=dict)

    @property
    def heartbeat_interval(self) -> float:
        """Leases are renewed three times per lease, so one late heartbeat loses nothing."""
        return max(0.05, self.LEASE_TIMEOUT / 3)


KNOWN_KEYS = frozenset(Settings.__dataclass_fields__)
SWITCHES = ("EAGER", "AUTODISCOVER", "TRACKING")

MAX_BATCH_MAX = 10_000  # one claim statement or script handles the batch at once

# key: (whole numbers only, the least value, whether the least value itself is allowed, the
# greatest value, what to write)
NUMBERS: dict[str, tuple[bool, float, bool, float, str]] = {
    # Leases are renewed every third of LEASE_TIMEOUT and kept in milliseconds by Redis: below
    # 0.1 s a renewal cannot keep up, and below 0.001 s the lease would be 0 ms.
    "LEASE_TIMEOUT": (
        False,
        0.1,
        True,
        MAX_SECONDS,
        "seconds, e.g. 30 (at least 0.1: leases are renewed every third of it)",
    ),
    "POLL_INTERVAL": (
        False,
        0.001,
        True,
        MAX_SECONDS,
        "seconds, e.g. 0.2 (at least 0.001: less would poll the broker in a busy loop)",
    ),
    "MAX_BATCH": (True, 1, True, MAX_BATCH_MAX, "jobs, e.g. 100"),
    "RETRY_BACKOFF_MAX": (False, 0, True, MAX_SECONDS, "seconds, e.g. 3600"),
    "RESULT_TTL": (False, 0, True, MAX_SECONDS, "seconds, e.g. 500, or None to keep results"),
}


@dataclass(frozen=True)
class Problem:
    """One ``JOBQUEUE`` value that cannot be used: what is wrong, and what to write instead."""

    key: str
    message: str
    hint: str

    def __str__(self) -> str:
        return f"{self.message} {self.hint}"


def problems(user: Mapping[str, Any]) -> list[Problem]:
    """Every known key of ``user`` (the ``JOBQUEUE`` dict) whose value cannot be used."""
    found: list[Problem] = []
    broker_problem = _broker_problem(user.get("BROKER", {}))
    if broker_problem:
        found.append(Problem("BROKER", broker_problem, BROKER_FIX))
    queues = user.get("QUEUES", Settings.QUEUES)
    queues_problem = _queues_problem(queues)
    if queues_problem:
        found.append(queues_problem)
    default = user.get("DEFAULT_QUEUE", Settings.DEFAULT_QUEUE)
    error = names.problem("JOBQUEUE['DEFAULT_QUEUE']", default, names.QUEUE_NAME_MAX)
    if error:
        found.append(Problem("DEFAULT_QUEUE", f"{error}.", "'DEFAULT_QUEUE': 'default'"))
    elif not queues_problem and default not in queues:
        found.append(
            Problem(
                "DEFAULT_QUEUE",
                f"JOBQUEUE['DEFAULT_QUEUE'] = {default!r} is not in QUEUES {list(queues)}.",
                f"Add it to QUEUES or set 'DEFAULT_QUEUE': {queues[0]!r}.",
            )
        )
    for key, (whole, least, inclusive, most, example) in NUMBERS.items():
        value = user.get(key, getattr(Settings, key))
        if key == "RESULT_TTL" and value is None:
            continue
        if not _number_ok(value, whole, least, inclusive, most):
            kind = "a whole number" if whole else "a number"
            bound = f"{'>=' if inclusive else '>'} {least}"
            top = f" and <= {most:_}"
            found.append(
                Problem(
                    key,
                    f"JOBQUEUE[{key!r}] = {value!r} is not {kind} {bound}{top}.",
                    f"Write {kind} of {example}.",
                )
            )
    for key in SWITCHES:
        value = user.get(key, getattr(Settings, key))
        if not isinstance(value, bool):
            found.append(
                Problem(
                    key,
                    f"JOBQUEUE[{key!r}] = {value!r} is not True or False.",
                    f"Write {key!r}: True or {key!r}: False.",
                )
            )
    modules = user.get("TASK_MODULES", ())
    if not isinstance(modules, list | tuple):
        found.append(
            Problem(
                "TASK_MODULES",
                f"JOBQUEUE['TASK_MODULES'] must be a list of module paths, not {modules!r}.",
                f"'TASK_MODULES': [{modules!r}]"
                if isinstance(modules, str)
                else "'TASK_MODULES': ['myapp.jobs']",
            )
        )
    else:
        for module in modules:
            if not (isinstance(module, str) and all(p.isidentifier() for p in module.split("."))):
                found.append(
                    Problem(
                        "TASK_MODULES",
                        f"JOBQUEUE['TASK_MODULES'] holds {module!r}, not a module path.",
                        "Write dotted module paths: 'TASK_MODULES': ['myapp.jobs'].",
                    )
                )
    return found


BROKER_FIX = "'BROKER': {'BACKEND': 'jobqueue.brokers.database.DatabaseBroker'}"


def _broker_problem(broker: Any) -> str | None:
    if not isinstance(broker, dict):
        return (
            "JOBQUEUE['BROKER'] must be a dict with 'BACKEND' and an optional 'OPTIONS' dict, "
            f"not {broker!r}."
        )
    unknown = sorted(map(repr, set(broker) - {"BACKEND", "OPTIONS"}))
    if unknown:
        return (
            f"JOBQUEUE['BROKER'] has unknown keys {', '.join(unknown)}; it takes 'BACKEND' "
            "and 'OPTIONS' (the broker's own options go in 'OPTIONS')."
        )
    backend = broker.get("BACKEND", DEFAULT_BROKER)
    if not isinstance(backend, str):
        return (
            "JOBQUEUE['BROKER']['BACKEND'] must be the dotted path of a broker class, "
            f"not {backend!r}."
        )
    options = broker.get("OPTIONS", {})
    if not isinstance(options, dict):
        return f"JOBQUEUE['BROKER']['OPTIONS'] must be a dict of options, not {options!r}."
    return None


def _queues_problem(queues: Any) -> Problem | None:
    fix = "'QUEUES': ['high', 'default', 'low']  (highest priority first)"
    if isinstance(queues, str):
        # ("default") is a string, not a tuple: iterated, it would make queues d, e, f, ...
        return Problem(
            "QUEUES",
            f"JOBQUEUE['QUEUES'] must be a list of queue names, not the string {queues!r}.",
            f"'QUEUES': [{queues!r}]  (a one-item tuple needs a comma: ({queues!r},))",
        )
    if not isinstance(queues, list | tuple) or not queues:
        return Problem(
            "QUEUES",
            f"JOBQUEUE['QUEUES'] must be a non-empty list of queue names, not {queues!r}.",
            fix,
        )
    for queue in queues:
        error = names.problem("queue name", queue, names.QUEUE_NAME_MAX)
        if error:
            return Problem("QUEUES", f"JOBQUEUE['QUEUES']: {error}.", fix)
    if len(set(queues)) != len(queues):
        return Problem("QUEUES", f"JOBQUEUE['QUEUES'] names a queue twice: {list(queues)}.", fix)
    joined = len(",".join(queues))
    if joined > names.QUEUES_MAX:
        return Problem(
            "QUEUES",
            f"JOBQUEUE['QUEUES'] joined by ',' are {joined} characters long; at most "
            f"{names.QUEUES_MAX} fit in the Worker table.",
            "Use fewer or shorter queue names.",
        )
    return None


def _number_ok(value: Any, whole: bool, least: float, inclusive: bool, most: float) -> bool:
    if isinstance(value, bool) or not isinstance(value, int if whole else int | float):
        return False
    if not (math.isfinite(value) and value <= most):
        return False
    return value >= least if inclusive else value > least


@cache
def get_settings() -> Settings:
    """Read ``settings.JOBQUEUE`` once; a value that cannot be used raises ConfigurationError
    (unknown keys are left to the system checks to report)."""
    user = getattr(django_settings, "JOBQUEUE", None) or {}
    if not isinstance(user, dict):
        raise ConfigurationError(f"JOBQUEUE must be a dict, not a {type(user).__name__}.")
    found = problems(user)
    if found:
        raise ConfigurationError(" ".join(str(problem) for problem in found))
    values = {key: value for key, value in user.items() if key in KNOWN_KEYS}
    for key in ("QUEUES", "TASK_MODULES"):
        if key in values:
            values[key] = tuple(values[key])
    for key in NUMBERS:
        value = values.get(key)
        if value is not None:  # a plain int or float, never an int subclass such as an enum
            values[key] = int(value) if isinstance(value, int) else float(value)
    if "BROKER" in values:
        values["BROKER"] = {"BACKEND": DEFAULT_BROKER, **values["BROKER"]}
    return Settings(**values)


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting == "JOBQUEUE":
        get_settings.cache_clear()
        from jobqueue import registry
        from jobqueue.brokers import reset_broker

        reset_broker()
        registry.rediscover()
