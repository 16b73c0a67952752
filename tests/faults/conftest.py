"""Fixtures of the fault suite: real workers, a run counter outside the system under test, a TCP
proxy that breaks connections, Redis servers to kill, freeze and restart, PostgreSQL backends to
terminate. See README.md in this directory."""

from __future__ import annotations

import contextlib
import os
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings

from jobqueue.brokers import get_broker
from jobqueue.models import Job
from tests.conftest import wait_until
from tests.faults.proxy import Proxy
from tests.faults.workers import LoggedWorker
from tests.redis_server import (
    RedisServer,
    delete_prefix,
    redis_broker_settings,
    require_redis_broker,
)

COUNTER_DB = 1  # the session's Redis, a database the brokers under test never use


class Runs:
    """Every run of a fault-suite task pushes ``"<item> <pid>"`` here (see
    ``tests.testapp.tasks.count_run``), and a gate is a key the ``gated`` task waits for."""

    def __init__(self, server: RedisServer) -> None:
        self.client = server.client(db=COUNTER_DB)
        self.key = f"runs:{uuid4().hex}"
        self.counter = f"redis://127.0.0.1:{server.port}/{COUNTER_DB}|{self.key}"

    def entries(self) -> list[tuple[str, int]]:
        rows = [row.decode().rsplit(" ", 1) for row in self.client.lrange(self.key, 0, -1)]
        return [(item, int(pid)) for item, pid in rows]

    def counts(self) -> Counter[str]:
        return Counter(item for item, _ in self.entries())

    def of(self, item: str) -> int:
        return self.counts()[item]

    def pids(self, item: str) -> list[int]:
        return [pid for name, pid in self.entries() if name == item]

    def total(self) -> int:
        return int(self.client.llen(self.key))

    def wait(self, item: str, n: int = 1, timeout: float = 20.0) -> None:
        wait_until(lambda: self.of(item) >= n, timeout=timeout, message=f"{n} run(s) of {item}")

    def gate(self) -> str:
        return f"gate:{uuid4().hex}"

    def open(self, gate: str) -> None:
        self.client.set(gate, 1, ex=600)

    def close(self) -> None:
        self.client.delete(self.key)


@pytest.fixture
def runs(redis_server: RedisServer) -> Iterator[Runs]:
    counter = Runs(redis_server)
    yield counter
    counter.close()


@pytest.fixture
def start_worker(
    worker_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., LoggedWorker]]:
    """``start_worker("--concurrency", "2", env={...})``: a real ``jobworker``; all are killed at
    the end of the test."""
    started: list[LoggedWorker] = []

    def start(*args: str, env: dict[str, str] | None = None) -> LoggedWorker:
        log = tmp_path / f"worker-{len(started)}.log"
        worker = LoggedWorker(list(args), {**worker_env, **(env or {})}, log)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def proxy() -> Iterator[Callable[[int], Proxy]]:
    """``proxy(port)``: a fault-injecting TCP proxy to 127.0.0.1:port; closed at the end."""
    made: list[Proxy] = []

    def make(port: int) -> Proxy:
        made.append(Proxy(port))
        return made[-1]

    yield make
    for each in made:
        each.close()


def freeze(server: RedisServer) -> None:
    """SIGSTOP: the server keeps its connections and accepts new ones, and answers nothing."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)


def thaw(server: RedisServer) -> None:
    if server.process is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.process.pid, signal.SIGCONT)


@pytest.fixture
def use_redis(
    live_jobs: None, worker_env: dict[str, str]
) -> Iterator[Callable[..., str]]:
    """``use_redis(server, worker_url=None, url=None)``: from then on ``.delay()`` here (through
    ``url``) and every worker started by the test (through ``worker_url``; a proxy's, say) use a
    Redis broker on ``server`` under a prefix of the test's own; returns the prefix."""
    prefix = f"faults{uuid4().hex[:8]}"
    with contextlib.ExitStack() as stack:

        def use(server: RedisServer, worker_url: str | None = None, url: str | None = None) -> str:
            require_redis_broker()
            worker_env["JOBQUEUE_TEST_REDIS_URL"] = worker_url or server.url
            worker_env["JOBQUEUE_TEST_REDIS_PREFIX"] = prefix
            stack.callback(delete_prefix, server, prefix)
            stack.callback(thaw, server)
            broker = redis_broker_settings(url or server.url, prefix)
            stack.enter_context(override_settings(JOBQUEUE={**settings.JOBQUEUE, "BROKER": broker}))
            return prefix

        yield use


@pytest.fixture(params=["database", "redis"])
def broker(request: pytest.FixtureRequest, live_jobs: None) -> str:
    """Run the test on each broker: the database broker (SQLite or PostgreSQL, per DATABASE), and
    Redis (the session's server, a prefix of the test's own)."""
    if request.param == "redis":
        request.getfixturevalue("use_redis")(request.getfixturevalue("redis_server"))
    return str(request.param)


def job_row(job: Any, timeout: float = 5.0) -> Job:
    """The Job row once it agrees with the broker on the job's status: on Redis the table follows
    an event stream, folded by whichever process holds the tracker lock (about a second)."""

    def caught_up() -> Job | None:
        get_broker().sync()
        row = Job.objects.filter(id=job.id).first()
        return row if row is not None and row.status == job.status else None

    row = wait_until(caught_up, timeout=timeout, message=f"the Job row of {job.id} to catch up")
    assert isinstance(row, Job)
    return row


def postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only (run with DATABASE=postgresql)")


def terminate_backends() -> int:
    """``pg_terminate_backend`` on every connection to the test database but the test's own:
    what a failover, a DBA or an idle-session timeout does to the workers'."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


def database_port() -> int:
    return int(connection.settings_dict.get("PORT") or 5432)


def settle(predicate: Callable[[], object], timeout: float, what: str, worker: Any = None,
           jobs: Any = ()) -> None:
    """``wait_until``, failing with what the jobs and the worker say at the deadline."""
    try:
        wait_until(predicate, timeout=timeout, message=what)
    except pytest.fail.Exception:
        statuses = Counter(j.status for j in jobs)
        log = worker.tail(3000) if worker is not None else ""
        pytest.fail(f"timed out after {timeout} s waiting for {what}; jobs: {dict(statuses)}"
                    f"\nworker log:\n{log}")
