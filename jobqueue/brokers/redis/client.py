"""The transport: connections to Redis with bounded waits, and the scripts run over them.

Every command gives up after ``connect_timeout`` + ``socket_timeout`` (0.5 s + 1 s by default), so
``.delay()`` falls back to the outbox within about a second when Redis accepts connections but
does not answer (stopped, a full network buffer, a failover in progress). The client itself never
retries: a script re-sent after a lost reply must be one that is safe to run twice, so retries
are decided here, per script. Waits that block on purpose (BLPOP) use a second client whose
socket timeout leaves room for them.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from jobqueue.brokers.redis import scripts as lua
from jobqueue.conf import get_settings
from jobqueue.exceptions import BrokerError

MAX_WAIT = 4.0  # seconds a blocking wait may last; the blocking client's timeout allows for it
# Scripts a lost reply may safely re-send (CLAIM replays its first reply by request id; the
# others are fenced by tokens or act only on what is due). ENQUEUE, CANCEL and REQUEUE are safe
# to run twice but their second reply would be wrong: an error tells the caller instead.
IDEMPOTENT = frozenset({"CLAIM", "FINISH", "RELEASE", "RENEW", "PROMOTE", "RECOVER"})

try:
    from redis.driver_info import DriverInfo
except ImportError:  # an older redis-py reads its version once, as a default argument
    IDENTITY: dict[str, Any] = {}
else:
    # What CLIENT SETINFO tells Redis, read once: left to redis-py, every client made reads the
    # package's metadata again, which in a worker child copies about 3 MB of pages it would
    # otherwise share with its supervisor.
    IDENTITY = {"driver_info": DriverInfo()}


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Transport:
    def __init__(
        self,
        url: str | None,
        cache: str | None,
        prefix: str,
        connect_timeout: float,
        socket_timeout: float,
        connection_options: dict[str, Any],
    ) -> None:
        self.url, self.cache = url, cache
        self.prefix = "{" + prefix + "}"
        self.options: dict[str, Any] = {
            "health_check_interval": 30,
            **connection_options,
            "socket_connect_timeout": connect_timeout,
            "socket_timeout": socket_timeout,
            "retry": Retry(NoBackoff(), 0),
            **IDENTITY,
        }
        self._client: Any = None
        self._blocking: Any = None
        self._scripts: dict[str, Any] = {}

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._connect(self.options)
        return self._client

    @property
    def blocking(self) -> Any:
        """A client for BLPOP: its socket timeout covers the wait."""
        if self._blocking is None:
            options = {**self.options, "socket_timeout": self.options["socket_timeout"] + MAX_WAIT}
            self._blocking = self._connect(options)
        return self._blocking

    def _connect(self, options: dict[str, Any]) -> Any:
        if self.cache is None:
            assert self.url is not None
            return redis.Redis.from_url(self.url, **options)
        # The cache's server and credentials, with jobqueue's timeouts and retry policy.
        from django_redis import get_redis_connection

        pool = get_redis_connection(self.cache).connection_pool
        kwargs = {**pool.connection_kwargs, **options}
        kwargs.pop("health_check_interval", None)
        return redis.Redis(
            connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
        )

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def keys(self) -> list[str]:
        """The keys every script declares: the events stream only while tracking is on."""
        if get_settings().TRACKING:
            return [self.key("msg"), self.key("events")]
        return [self.key("msg")]

    def script(self, name: str) -> Any:
        """Script ``name``, registered with the client (which loads it into Redis on first use)."""
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.client.register_script(lua.source(name))
        return script

    def run(self, name: str, *args: Any) -> Any:
        """Run a script with the prefix as its first argument; one that is safe to run twice is
        re-sent once if the connection broke. Redis errors become BrokerError."""
        script = self.script(name)
        tries = 2 if name in IDEMPOTENT else 1
        for attempt in range(tries):
            try:
                return script(keys=self.keys(), args=[self.prefix, *args])
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if attempt + 1 == tries:
                    raise BrokerError(f"Redis: {exc}") from exc
                time.sleep(0.05)
            except redis.RedisError as exc:
                raise BrokerError(f"Redis: {exc}") from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        for client in (self._client, self._blocking):
            if client is not None:
                client.close()
                if self.cache is not None:
                    client.connection_pool.disconnect()
        self._client = self._blocking = None
        self._scripts = {}
