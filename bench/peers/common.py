"""What every peer's app shares: the per-job counter and the latency stamp (both on the private
Redis), and the adapter interface."""

from __future__ import annotations

import os
import time
from typing import Any

import redis

LATENCY_KEY = "bench:latency"
COUNT_KEY = "bench:count"
_client: tuple[int, Any] | None = None


def redis_url() -> str:
    return os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def client() -> Any:
    """A Redis client of this process (a forked child makes its own)."""
    global _client
    if _client is None or _client[0] != os.getpid():
        _client = (os.getpid(), redis.Redis.from_url(redis_url()))
    return _client[1]


def count() -> None:
    """Every library's no-op job: one ``INCR`` on the private Redis. Every library pays the same
    round trip per job, and the counter is a count of runs independent of the library's own."""
    client().incr(COUNT_KEY)


def counted() -> int:
    return int(client().get(COUNT_KEY) or 0)


def stamp_start(i: Any) -> None:
    """Called first thing in the latency task: when the job started, on the shared clock."""
    now = time.time()
    client().rpush(LATENCY_KEY, f"{i} {now!r}")


class Adapter:
    """What the driver needs of a library. ``config`` picks one of ``CONFIGS``."""

    env = ""  # the virtual environment under bench/.venvs
    configs: dict[str, str] = {}  # name -> description
    uses_redis = True
    poll_interval = 0.01  # seconds between polls of remaining() while draining

    def __init__(self, config: str) -> None:
        self.config = config

    def setup(self) -> None:
        """Once per process, before anything else."""

    def prepare(self) -> None:
        """Once per run: create tables (Django migrate)."""

    def sync(self) -> None:
        """Bring the library's record up to date now, where it lags (jobqueue's tracking)."""

    def memory_after_sync(self) -> int | None:
        """Redis used_memory after sync(), where that frees anything."""
        return None

    def reset(self) -> None:
        """No job queued, running or remembered."""
        client().flushall()

    def enqueue_one(self) -> None:
        raise NotImplementedError

    def enqueue_bulk(self, n: int) -> None:
        """Enqueue ``n`` no-op jobs with the library's bulk API (batches of BATCH)."""
        raise NotImplementedError

    has_bulk = True
    max_drain_n: int | None = None  # the most jobs a drain pre-enqueues (slow one-by-one fill)

    def fill(self, n: int) -> None:
        """Queue ``n`` no-op jobs before a drain, the fastest way the library has."""
        if self.has_bulk:
            self.enqueue_bulk(n)
        else:
            for _ in range(n):
                self.enqueue_one()

    def send_stamp(self, i: int) -> None:
        raise NotImplementedError

    def remaining(self) -> int:
        """Jobs neither done nor running to completion (queued + prefetched + in progress)."""
        raise NotImplementedError

    def tracked(self) -> int | None:
        """Jobs the library's record shows succeeded, where that differs from remaining()."""
        return None

    def worker(self, procs: int) -> tuple[list[str], dict[str, str]]:
        """argv and extra environment of a worker with ``procs`` processes."""
        raise NotImplementedError

    def worker_instances(self, procs: int) -> int:
        """How many copies of worker() to start (for libraries whose worker is one process)."""
        return 1


BATCH = 1000
