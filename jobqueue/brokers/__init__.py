"""The broker chosen by ``JOBQUEUE['BROKER']``: imported lazily, one instance per process."""

from __future__ import annotations

import os
import threading

from django.utils.module_loading import import_string

from jobqueue.brokers.base import Broker
from jobqueue.conf import get_settings
from jobqueue.exceptions import ConfigurationError

__all__ = ["Broker", "get_broker", "reset_broker"]

_lock = threading.Lock()
_broker: tuple[int, Broker] | None = None


def load_broker_class(path: str) -> type[Broker]:
    try:
        cls = import_string(path)
    except ImportError as exc:
        raise ConfigurationError(
            f"JOBQUEUE['BROKER']['BACKEND'] = {path!r} cannot be imported ({exc}); use "
            "'jobqueue.brokers.database.DatabaseBroker' or 'jobqueue.brokers.redis.RedisBroker'"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Broker)):
        raise ConfigurationError(f"JOBQUEUE['BROKER']['BACKEND'] = {path!r} is not a Broker class")
    return cls


def get_broker() -> Broker:
    """The process's broker; a forked child gets its own (connections never cross a fork)."""
    global _broker
    with _lock:
        if _broker is None or _broker[0] != os.getpid():
            conf = get_settings().BROKER
            cls = load_broker_class(conf["BACKEND"])
            try:
                broker = cls(**conf.get("OPTIONS", {}))
            except TypeError as exc:
                raise ConfigurationError(f"JOBQUEUE['BROKER']['OPTIONS']: {exc}") from exc
            _broker = (os.getpid(), broker)
        return _broker[1]


def reset_broker() -> None:
    global _broker
    with _lock:
        if _broker is not None and _broker[0] == os.getpid():
            _broker[1].close()
        _broker = None
