"""The Redis broker's upkeep in a supervisor: tracking, the outbox relay and reconciliation run in
a thread of their own, so a drain faster than tracking never delays lease renewals, timeouts or
a SIGTERM.

The thread is started by the supervisor's first tick and stopped by ``close()``, which a
supervisor calls before every fork: no thread is ever running when a child is forked. Every wait
of the thread is bounded (Redis's socket timeout; on the database a lock wait of ``LOCK_WAIT``
and a statement of ``STATEMENT_WAIT`` seconds at most, set on the thread's own connection), so a
stop takes at most about ``STOP_WAIT`` seconds even when a row it writes is locked by someone
else: the supervisor is never stalled for longer. A thread that still runs after that (a socket
that hangs despite the timeouts) is reported by ``ready_to_fork``, and the fork waits. On the
way out the thread records what it can within ``FINAL_BUDGET`` seconds, so a burst worker leaves
the table up to date.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import redis
from django.db import DatabaseError, connections, router

from jobqueue.exceptions import BrokerError

if TYPE_CHECKING:
    from jobqueue.brokers.redis.broker import RedisBroker

logger = logging.getLogger(__name__)

ROUND_BUDGET = 0.25  # seconds of tracking per round: a stop waits at most this long
IDLE = 0.05  # seconds between rounds once caught up
FINAL_BUDGET = 0.5
MAX_BACKOFF = 10.0
LOCK_WAIT = 1.0  # seconds the thread waits for a row lock (or SQLite's write lock)
STATEMENT_WAIT = 3.0  # seconds one statement of the thread may take (PostgreSQL)
STOP_WAIT = LOCK_WAIT + STATEMENT_WAIT + FINAL_BUDGET + 1.0


class Upkeep(threading.Thread):
    def __init__(self, broker: RedisBroker) -> None:
        super().__init__(name="jobqueue-redis-upkeep", daemon=True)
        self.broker = broker
        self.stopping = threading.Event()

    def run(self) -> None:
        failures = 0
        try:
            while not self.stopping.is_set():
                try:
                    bound_waits()
                    caught_up = self.broker.upkeep(ROUND_BUDGET)
                    failures = 0
                except (DatabaseError, BrokerError, redis.RedisError) as exc:
                    failures += 1
                    delay = min(0.25 * 2**failures, MAX_BACKOFF)
                    logger.warning("state=tracking-deferred retry_in=%.1fs error=%s", delay, exc)
                    connections.close_all()  # this thread's own
                    self.stopping.wait(delay)
                    continue
                except Exception:
                    # A bug must not end tracking for good: say it, and try again later.
                    failures += 1
                    logger.exception("state=tracking-failed")
                    self.stopping.wait(MAX_BACKOFF)
                    continue
                self.stopping.wait(IDLE if caught_up else 0)
            try:
                bound_waits()
                self.broker.tracking.sync(budget=FINAL_BUDGET)
            except DatabaseError as exc:
                logger.warning("state=tracking-deferred error=%s", exc)
        finally:
            connections.close_all()

    def stop(self) -> bool:
        """Stop the thread; False if it is still running after ``STOP_WAIT`` seconds (logged), or
        at once if it was asked to stop before and has not yet (a supervisor asks every tick)."""
        asked = self.stopping.is_set()
        self.stopping.set()
        self.join(0 if asked else STOP_WAIT)
        if self.is_alive():
            if not asked:
                logger.error("state=upkeep-still-running waited=%.1fs", STOP_WAIT)
            return False
        return True


def bound_waits() -> None:
    """Bound this thread's waits on its database connection (once per connection): a lock
    held by someone else, or a slow statement, fails the round instead of stalling a stop."""
    from jobqueue.brokers.redis.table import job_model

    connection = connections[router.db_for_write(job_model())]
    connection.ensure_connection()
    raw = connection.connection
    if getattr(connection, "jobqueue_bounded", None) is raw:
        return
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET lock_timeout = %s", [f"{int(LOCK_WAIT * 1000)}ms"])
            cursor.execute("SET statement_timeout = %s", [f"{int(STATEMENT_WAIT * 1000)}ms"])
        elif connection.vendor == "sqlite":
            cursor.execute(f"PRAGMA busy_timeout = {int(LOCK_WAIT * 1000)}")
    connection.jobqueue_bounded = raw  # type: ignore[attr-defined]
