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

Once caught up, the thread waits on the events stream itself (``XREAD BLOCK`` past the tracked
position, on a connection of its own): an idle worker costs next to nothing, and a new event is
recorded the moment it is written. The wait lasts ``WAIT`` seconds at most (the relay and
reconciliation run at least that often); a stop ends it at once (``CLIENT UNBLOCK``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import redis
from django.db import DatabaseError, connections, router

from jobqueue.conf import get_settings
from jobqueue.exceptions import BrokerError

if TYPE_CHECKING:
    from jobqueue.brokers.redis.broker import RedisBroker

logger = logging.getLogger(__name__)

ROUND_BUDGET = 0.25  # seconds of tracking per round: a stop waits at most this long
WAIT = 1.0  # seconds an idle thread waits on the events stream before a round all the same
UNBLOCK_EVERY = 0.05  # seconds between a stop's requests to end the wait
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
        self.client_id: int | None = None
        self.waiting: int | None = None  # the client id of the connection blocked on the stream
        self.conn: Any = None  # that connection, this thread's own

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
                if caught_up and not self.stopping.is_set():
                    self.wait_for_events()
            try:
                bound_waits()
                self.broker.tracking.sync(budget=FINAL_BUDGET)
            except DatabaseError as exc:
                logger.warning("state=tracking-deferred error=%s", exc)
        finally:
            self.drop_connection()
            connections.close_all()

    def wait_for_events(self) -> None:
        """Until the stream holds an entry past the tracked position, ``WAIT`` seconds pass, or a
        stop unblocks the wait. An entry written between the round and this wait ends it at once:
        the wait is on the position, not on what comes next."""
        if not get_settings().TRACKING:
            self.stopping.wait(WAIT)
            return
        tracking = self.broker.tracking
        conn = self.connection()
        position = tracking.position()
        try:
            self.waiting = self.client_id
            if self.stopping.is_set():  # asked meanwhile: its unblock may have come too early
                return
            conn.send_command(
                "XREAD",
                "COUNT",
                1,
                "BLOCK",
                int(WAIT * 1000),
                "STREAMS",
                self.broker.key("events"),
                position,
            )
            conn.read_response()
        except BaseException:
            self.drop_connection()
            raise
        finally:
            self.waiting = None

    def connection(self) -> Any:
        """The thread's own connection for its waits (its socket timeout covers ``WAIT`` and no
        more: a Redis that stops answering holds a stop no longer than a command would), and its
        client id, which a stop names to end the wait."""
        if self.conn is None:
            conn = self.broker.transport.client.connection_pool.make_connection()
            conn.socket_timeout = (conn.socket_timeout or 0) + WAIT
            conn.send_command("CLIENT", "ID")
            self.client_id = int(conn.read_response())
            self.conn = conn
        return self.conn

    def drop_connection(self) -> None:
        if self.conn is not None:
            self.conn.disconnect()
            self.conn = None

    def unblock(self) -> bool:
        """End the thread's wait on the stream, if it waits; False if Redis refused or did not
        answer (the wait then ends by itself within ``WAIT`` seconds)."""
        client_id = self.waiting
        if client_id is None:
            return True
        try:
            self.broker.transport.client.client_unblock(client_id)
        except redis.RedisError as exc:
            logger.debug("state=upkeep-unblock-failed error=%s", exc)
            return False
        return True

    def stop(self) -> bool:
        """Stop the thread; False if it is still running after ``STOP_WAIT`` seconds (logged), or
        at once if it was asked to stop before and has not yet (a supervisor asks every tick).
        The thread's wait on the stream is ended, again every ``UNBLOCK_EVERY`` seconds: it may
        have begun just after a request."""
        asked = self.stopping.is_set()
        self.stopping.set()
        deadline = time.monotonic() + (0 if asked else STOP_WAIT)
        unblocking = True
        while True:
            unblocking = unblocking and self.unblock()  # a Redis away is not asked again
            step = UNBLOCK_EVERY if unblocking else STOP_WAIT
            self.join(max(0.0, min(step, deadline - time.monotonic())))
            if not self.is_alive() or time.monotonic() >= deadline:
                break
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
