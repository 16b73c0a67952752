"""Redis servers, and ``broker``: every test that takes it runs once per broker.

``broker`` is the process's broker (``get_broker()``) under settings that choose it, so
``task.delay()``, ``JobResult`` and the test talk to one instance. A test may change other
``JOBQUEUE`` keys with ``@pytest.mark.jobqueue(LEASE_TIMEOUT=0.2)``, and keep to some brokers with
``@pytest.mark.brokers("redis")``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest
from django.conf import settings
from django.test import override_settings

from jobqueue.brokers import Broker, get_broker
from jobqueue.conf import DEFAULT_BROKER
from tests.redis_server import (
    RedisServer,
    delete_prefix,
    redis_broker_settings,
    require_redis_broker,
)


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``@pytest.mark.brokers(...)``: ``broker`` takes only these of its params (a parametrize
    mark, which the fixture's own params give way to)."""
    marker = metafunc.definition.get_closest_marker("brokers")
    if marker is not None and "broker" in metafunc.fixturenames:
        only = pytest.mark.parametrize("broker", marker.args, indirect=True)
        metafunc.definition.add_marker(only)


@pytest.fixture(params=["database", "redis"])
def broker(request: pytest.FixtureRequest, transactional_db: None) -> Iterator[Broker]:
    marker = request.node.get_closest_marker("jobqueue")
    keys: dict[str, Any] = dict(marker.kwargs) if marker else {}
    server: RedisServer | None = None
    prefix = f"test{uuid4().hex[:8]}"
    if request.param == "redis":
        require_redis_broker()
        server = request.getfixturevalue("redis_server")
        keys["BROKER"] = redis_broker_settings(server.url, prefix)
    else:
        keys["BROKER"] = {"BACKEND": DEFAULT_BROKER}
    try:
        with override_settings(JOBQUEUE={**settings.JOBQUEUE, **keys}):
            yield get_broker()  # closed when the settings are restored
    finally:
        if server is not None:
            delete_prefix(server, prefix)
