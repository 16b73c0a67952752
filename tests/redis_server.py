"""A private ``redis-server`` for the tests: a free port on 127.0.0.1 and a directory of its own.

A pytest plugin (``tests/conftest.py`` loads it) with the fixtures ``redis_server`` (one per
session; tests keep apart by key prefix), ``durable_redis`` (one per test, AOF on) and
``volatile_redis`` (one per test, no persistence).

``restart()`` keeps the port and the directory, so a server started with ``appendonly=True`` replays
its append-only file: what a test wrote before a SIGKILL is there again, or it was never
acknowledged.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from jobqueue.exceptions import JobQueueError

REDIS_BACKEND = "jobqueue.brokers.redis.RedisBroker"


def unavailable(reason: str) -> None:
    """Skip the test, except on CI, where a missing Redis must not pass unnoticed."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the Redis tests must run)", pytrace=False)
    pytest.skip(reason)


def redis_server_binary() -> str:
    """``$REDIS_SERVER`` if set (tox passes it through), else ``redis-server`` on the PATH."""
    path = shutil.which(os.environ.get("REDIS_SERVER") or "redis-server")
    if path is None:
        unavailable("redis-server is not installed (apt-get install redis-server), or set "
                    "REDIS_SERVER to its path")
    assert path is not None
    return path


def require_redis_broker() -> None:
    try:
        importlib.import_module("jobqueue.brokers.redis")
    except (ImportError, JobQueueError) as exc:
        unavailable(f"jobqueue.brokers.redis cannot be imported: {exc}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """One ``redis-server`` process; started by the constructor, answering PING when it returns."""

    def __init__(self, directory: Path, *, appendonly: bool = False) -> None:
        self.binary = redis_server_binary()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None
        self._clients: list[redis.Redis] = []
        for _ in range(5):  # another process may take the free port before redis binds it
            self.port = free_port()
            if self._start():
                return
        raise RuntimeError(f"redis-server did not start:\n{self.log()}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _start(self, timeout: float = 10.0) -> bool:
        """Start on ``self.port``; True once it answers PING (after replaying its AOF), False if
        it exited (port taken)."""
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(command, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.process.poll() is not None:
                self.process = None
                return False
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server gave no PONG in {timeout} s:\n{self.log()}")
            time.sleep(0.01)
        return True

    def ping(self) -> bool:
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2, socket_timeout=1.0)
        try:
            return bool(client.ping())
        except redis.RedisError:  # refused, or still loading its AOF
            return False
        finally:
            client.close()

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text()[-2000:] if path.exists() else "(no log)"

    def client(self, **options: Any) -> redis.Redis:
        """A client of this server; closed with the server."""
        client = redis.Redis(port=self.port, **options)
        self._clients.append(client)
        return client

    def kill(self) -> None:
        """SIGKILL: what a crash or power loss leaves behind (with ``appendfsync always``, every
        acknowledged write)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: a clean shutdown."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
            self.process = None

    def restart(self) -> None:
        """Start again on the same port and directory (a running server is stopped first)."""
        self.stop()
        if not self._start():
            raise RuntimeError(f"redis-server did not restart on port {self.port}:\n{self.log()}")

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()
        self.kill()


@contextlib.contextmanager
def serve(directory: Path, *, appendonly: bool = False) -> Iterator[RedisServer]:
    server = RedisServer(directory, appendonly=appendonly)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One server for the session (no persistence); tests keep apart by key prefix."""
    with serve(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of the test's own with the append-only file on, for crash and restart tests."""
    with serve(tmp_path / "redis", appendonly=True) as server:
        yield server


@pytest.fixture
def volatile_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of the test's own without persistence (Redis's default): a restart empties it, or
    brings back the snapshot an explicit ``SAVE`` wrote (a crash, or a lagging replica promoted)."""
    with serve(tmp_path / "volatile-redis") as server:
        yield server


def redis_broker_settings(url: str, prefix: str) -> dict[str, Any]:
    return {"BACKEND": REDIS_BACKEND, "OPTIONS": {"url": url, "prefix": prefix}}


def delete_prefix(server: RedisServer, prefix: str) -> None:
    """Drop every key under ``{prefix}:`` (a stopped server has nothing to drop)."""
    if not server.running:
        return
    client = server.client()
    keys = list(client.scan_iter(match=f"{{{prefix}}}:*", count=1000))
    if keys:
        client.delete(*keys)
