"""The Redis broker's upkeep in a supervisor: tracking, the outbox relay and reconciliation run in
a thread of their own, so a drain faster than tracking never delays lease renewals, timeouts or
a SIGTERM.

The thread is started by the supervisor's first tick and stopped by ``close()``, which a
supervisor calls before every fork: no thread is ever running when a child is forked. On the way
out it records what it can within ``FINAL_BUDGET`` seconds, so a burst worker leaves the table up
to date.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import redis
from django.db import DatabaseError, connections

from jobqueue.exceptions import BrokerError

if TYPE_CHECKING:
    from jobqueue.brokers.redis.broker import RedisBroker

logger = logging.getLogger(__name__)

ROUND_BUDGET = 0.25  # seconds of tracking per round: a stop waits at most this long
IDLE = 0.05  # seconds between rounds once caught up
FINAL_BUDGET = 0.5
MAX_BACKOFF = 10.0


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
                    caught_up = self.broker.upkeep(ROUND_BUDGET)
                    failures = 0
                except (DatabaseError, BrokerError, redis.RedisError) as exc:
                    failures += 1
                    delay = min(0.25 * 2**failures, MAX_BACKOFF)
                    logger.warning("state=tracking-deferred retry_in=%.1fs error=%s", delay, exc)
                    connections.close_all()  # this thread's own
                    self.stopping.wait(delay)
                    continue
                self.stopping.wait(IDLE if caught_up else 0)
            try:
                self.broker.tracking.sync(budget=FINAL_BUDGET)
            except DatabaseError as exc:
                logger.warning("state=tracking-deferred error=%s", exc)
        finally:
            connections.close_all()

    def stop(self) -> None:
        self.stopping.set()
        self.join()
