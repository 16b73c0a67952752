"""Shared fixtures: real worker processes against the test database."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, connections

ROOT = Path(__file__).resolve().parent.parent

pytest_plugins = ["tests.redis_server", "tests.browser"]

FAULT_SUITE = ROOT / "tests" / "faults"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The fault suite (real workers against broken brokers, where nothing depends on Django's
    version) is marked ``fault_suite`` and ``per_database``: tox.ini runs it once per database."""
    for item in items:
        if item.path.is_relative_to(FAULT_SUITE):
            item.add_marker(pytest.mark.fault_suite)
            item.add_marker(pytest.mark.per_database)


def wait_until(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.02,
               message: str = "condition") -> object:
    """Poll ``predicate`` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


class WorkerProcess:
    """A real ``manage.py jobworker`` in its own process group."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.args = args
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "jobworker", *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        self._output: str | None = None
        self._seen = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill_group(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            self._output, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            self._output, _ = self.process.communicate()
            pytest.fail(f"jobworker {self.args} did not exit in {timeout} s:\n{self._output}")
        return self.process.returncode

    def says(self, text: str) -> bool:
        """Read the worker's log up to the next line; True once ``text`` has appeared."""
        line = self.process.stdout.readline() if self.process.stdout else ""
        self._seen += line
        return text in self._seen

    @property
    def output(self) -> str:
        """Everything the worker printed (once it has exited)."""
        return self._seen + (self._output or "")

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        if self._output is None:
            self._output, _ = self.process.communicate()  # also closes the pipe


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None) -> None:
    """The test databases, and on PostgreSQL a flush (after each transactional test) that deletes
    the rows instead of truncating the tables: TRUNCATE gives every table new files, about 0.2 s a
    test, where deleting the few rows a test leaves takes milliseconds. Django makes foreign keys
    ``DEFERRABLE INITIALLY DEFERRED`` there, and the flush is one transaction, so order does not
    matter."""
    for each in connections.all():
        if each.vendor != "postgresql":
            continue
        ops, truncate = each.ops, each.ops.sql_flush

        def sql_flush(style: Any, tables: Sequence[str], *, reset_sequences: bool = False,
                      allow_cascade: bool = False, ops: Any = ops, truncate: Any = truncate
                      ) -> list[str]:
            if reset_sequences:
                return truncate(style, tables, reset_sequences=True, allow_cascade=allow_cascade)
            return [f"DELETE FROM {ops.quote_name(table)};" for table in tables]

        ops.sql_flush = sql_flush


@pytest.fixture
def worker_env(tmp_path: Path) -> dict[str, str]:
    """The environment a worker subprocess needs to use this test's database."""
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env["JOBQUEUE_TEST_DB_NAME"] = str(connection.settings_dict["NAME"])
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture
def jobworker(worker_env: dict[str, str]) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``jobworker`` subprocesses: ``jobworker("--burst", env={...})``; all are killed at
    the end of the test."""
    started: list[WorkerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(list(args), {**worker_env, **(env or {})})
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def live_jobs(transactional_db: None) -> None:
    """Jobs the test sends must be visible to other processes: no wrapping transaction."""
