"""The transport: connections to Redis with bounded waits, and the scripts run over them.

Every command gives up after ``connect_timeout`` + ``socket_timeout`` (0.5 s + 1 s by default), so
``.delay()`` falls back to the outbox within about a second when Redis accepts connections but
does not answer (stopped, a full network buffer, a failover in progress). The client itself never
retries: a script re-sent after a lost reply must be one that is safe to run twice, so retries
are decided here, per script. Waits that block on purpose (BLPOP) use a second client whose
socket timeout leaves room for them.

Scripts run on connections the transport keeps itself (``connection``), not through the client's
pool: that pool's bookkeeping per command (a poll of the socket, metrics, the retry wrapper)
costs about as much as the round trip itself, and a script call needs none of it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
# Seconds a connection may stay idle and still be used unchecked; one idle longer is first checked
# for having been closed by the server (its ``timeout``, a restart), as redis-py's pool checks
# each one, so that a send after a quiet spell does not fail on a dead socket.
STALE_AFTER = 1.0

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
        # Idle connections for scripts (plain, blocking), each with when it was given back, of
        # process ``_pid``; ``close`` raises the generation, so a connection in use meanwhile
        # is closed when given back.
        self._lock = threading.Lock()
        self._idle: tuple[list[tuple[Any, float]], list[tuple[Any, float]]] = ([], [])
        self._pid = os.getpid()
        self._generation = 0

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

    def evalsha(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """One script call; a Redis that lost its scripts (a restart) is given this one again."""
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        with self.connection() as conn:
            try:
                return roundtrip(conn, command)
            except redis.exceptions.NoScriptError:
                roundtrip(conn, ("SCRIPT", "LOAD", script.script))
                return roundtrip(conn, command)

    @contextmanager
    def connection(self, blocking: bool = False) -> Iterator[Any]:
        """A connection for this call alone, taken from the transport's idle ones (a forked
        child and a ``close`` start afresh) and given back after it."""
        pid = os.getpid()
        with self._lock:
            if self._pid != pid:  # a parent's sockets are never used by its child
                self._idle, self._pid = ([], []), pid
            idle = self._idle[blocking]
            conn, since = idle.pop() if idle else (None, 0.0)
            generation = self._generation
        if conn is None:
            client = self.blocking if blocking else self.client
            conn = client.connection_pool.make_connection()
        elif time.monotonic() - since >= STALE_AFTER:
            fresh(conn)
        try:
            yield conn
        finally:
            with self._lock:
                kept = self._pid == pid and self._generation == generation
                if kept:
                    self._idle[blocking].append((conn, time.monotonic()))
            if not kept:
                conn.disconnect()

    def wait_then_run(self, wake_keys: list[str], timeout: float, name: str, *args: Any) -> Any:
        """BLPOP on ``wake_keys``, and script ``name`` sent right behind it: Redis runs the
        script the moment the wait ends, and one round trip brings its reply. A lost script
        (NoScriptError) is loaded for the next call and raised."""
        script = self.script(name)
        keys = self.keys()
        with self.connection(blocking=True) as conn:
            packed = conn.pack_commands(
                [
                    ("BLPOP", *wake_keys, timeout),
                    ("EVALSHA", script.sha, len(keys), *keys, self.prefix, *args),
                ]
            )
            try:
                conn.send_packed_command(packed)
                conn.read_response()  # the wait's own reply tells nothing the script's does not
                return conn.read_response()
            except redis.exceptions.NoScriptError:
                roundtrip(conn, ("SCRIPT", "LOAD", script.script))  # both replies were read
                raise
            except BaseException:
                conn.disconnect()  # the script's reply may be on its way: never read it later
                raise

    def run(self, name: str, *args: Any) -> Any:
        """Run a script with the prefix as its first argument; one that is safe to run twice is
        re-sent once if the connection broke. Redis errors become BrokerError."""
        script = self.script(name)
        tries = 2 if name in IDEMPOTENT else 1
        for attempt in range(tries):
            try:
                return self.evalsha(script, self.keys(), [self.prefix, *args])
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if attempt + 1 == tries:
                    raise BrokerError(f"Redis: {exc}") from exc
                time.sleep(0.05)
            except redis.RedisError as exc:
                raise BrokerError(f"Redis: {exc}") from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            idle = [*self._idle[0], *self._idle[1]] if self._pid == os.getpid() else []
            self._idle, self._pid = ([], []), os.getpid()
            self._generation += 1
        for conn, _ in idle:
            conn.disconnect()
        for client in (self._client, self._blocking):
            if client is not None:
                client.close()
                if self.cache is not None:
                    client.connection_pool.disconnect()
        self._client = self._blocking = None
        self._scripts = {}


def fresh(conn: Any) -> None:
    """Close ``conn`` if the server has closed its end or anything is waiting on it (the send
    then connects anew)."""
    try:
        stale = conn.can_read()
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        stale = True
    if stale:
        conn.disconnect()


def roundtrip(conn: Any, command: tuple[Any, ...]) -> Any:
    """Send ``command`` on ``conn`` and read its reply. Whatever interrupts the exchange before
    the whole reply is read closes the connection, so that a late reply can never be taken for
    the next command's."""
    try:
        conn.send_command(*command)
        return conn.read_response()
    except redis.ResponseError:
        raise  # an error reply, read whole: the connection is still in step
    except BaseException:
        conn.disconnect()
        raise
