"""Redis servers for the worker tests, and ``use_redis``: this test and its workers on Redis."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from uuid import uuid4

import pytest
from django.conf import settings
from django.test import override_settings

from jobqueue.brokers import Broker, get_broker
from tests.redis_server import (
    RedisServer,
    delete_prefix,
    redis_broker_settings,
    require_redis_broker,
)


@pytest.fixture
def use_redis(
    live_jobs: None, worker_env: dict[str, str]
) -> Iterator[Callable[[RedisServer], Broker]]:
    """``use_redis(server)``: from then on ``.delay()`` here and every ``jobworker`` started by
    the test use a Redis broker on ``server``, under a prefix of the test's own; returns the
    test process's broker."""
    prefix = f"test{uuid4().hex[:8]}"
    with contextlib.ExitStack() as stack:

        def use(server: RedisServer) -> Broker:
            require_redis_broker()
            worker_env["JOBQUEUE_TEST_REDIS_URL"] = server.url
            worker_env["JOBQUEUE_TEST_REDIS_PREFIX"] = prefix
            stack.callback(delete_prefix, server, prefix)
            broker = redis_broker_settings(server.url, prefix)
            stack.enter_context(override_settings(JOBQUEUE={**settings.JOBQUEUE, "BROKER": broker}))
            return get_broker()

        yield use
