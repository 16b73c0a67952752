"""jobqueue's settings, read from ``settings.JOBQUEUE`` in one place, lazily, with defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULT_BROKER = "jobqueue.brokers.database.DatabaseBroker"


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


@cache
def get_settings() -> Settings:
    """Read ``settings.JOBQUEUE`` once; unknown keys are left to the system checks to report."""
    user = dict(getattr(django_settings, "JOBQUEUE", None) or {})
    values = {key: value for key, value in user.items() if key in KNOWN_KEYS}
    for key in ("QUEUES", "TASK_MODULES"):
        if key in values and isinstance(values[key], list | tuple):
            values[key] = tuple(values[key])
    if "BROKER" in values and isinstance(values["BROKER"], dict):
        values["BROKER"] = {"BACKEND": DEFAULT_BROKER, **values["BROKER"]}
    return Settings(**values)


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting == "JOBQUEUE":
        get_settings.cache_clear()
        from jobqueue.brokers import reset_broker

        reset_broker()
