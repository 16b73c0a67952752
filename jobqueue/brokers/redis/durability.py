"""What keeps jobs when Redis loses data: configuration warnings, and reconciliation.

Reconciliation compares the Job table with Redis: a job the table says is waiting or running but
that Redis no longer knows (a restart without persistence, a failover to a replica that lagged,
an eviction) is sent again from the signed body the tracker stored, with the attempts the
table last saw (at a version above any it had: Redis's clock is its floor), once (the send
skips a job Redis holds), logged ``state=resent-after-broker-loss`` and counted on its row
(``resent``). Before a job is called lost, everything the stream says happened to it up to
that moment is recorded first, so a job that merely finished and whose result expired is never
taken for lost.

It also sweeps the jobs Redis holds: one that is in no queue, not running and not scheduled (a
value written by hand made a claim pass it over, or its entry was removed) goes back to its queue,
logged ``state=requeued-stray``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import redis
from django.db.models import F

from jobqueue.brokers.redis import codec
from jobqueue.brokers.redis.client import text
from jobqueue.conf import get_settings
from jobqueue.states import JobStatus

if TYPE_CHECKING:
    from jobqueue.brokers.redis.broker import RedisBroker
    from jobqueue.brokers.redis.client import Transport
    from jobqueue.brokers.redis.tracking import Tracking

logger = logging.getLogger(__name__)

LIVE = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED)


def warnings(transport: Transport) -> list[str]:
    """What in the server's configuration could lose acknowledged jobs."""
    try:
        config = {text(k): text(v) for k, v in transport.client.config_get("*").items()}
    except redis.RedisError:
        return []  # CONFIG is often disabled on managed Redis: nothing to say
    found = []
    if config.get("appendonly") != "yes":
        found.append(
            "appendonly is off: a Redis restart loses jobs sent since the last snapshot "
            "(set appendonly yes; reconciliation re-sends those the Job table had recorded)"
        )
    if config.get("maxmemory-policy", "noeviction") != "noeviction":
        found.append(
            f"maxmemory-policy is {config['maxmemory-policy']}: Redis may evict "
            "queued jobs (set maxmemory-policy noeviction)"
        )
    return found


def stream_id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


class Reconciler:
    """Sweeps the table's live rows, and the jobs Redis holds (``sweep_redis``), a chunk per
    tick, a sweep every ``INTERVAL`` seconds."""

    INTERVAL = 30.0
    CHUNK = 1000
    SWEEP_CHUNK = 100  # jobs Redis holds looked at per step
    SWEEP_LONGEST = 2000  # a queue longer than this is not searched for a job's entry

    def __init__(self, transport: Transport, tracking: Tracking) -> None:
        self.transport = transport
        self.tracking = tracking
        self.cursor: str | None = None  # last id of the sweep in progress; None: between sweeps
        self.next_sweep = 0.0
        self.redis_cursor: str | None = None  # of the sweep over the jobs Redis holds

    def sweep_redis(self) -> None:
        """A chunk of the sweep over the jobs Redis holds: one that is in no queue, not running
        and not scheduled goes back to its queue (``scripts.SWEEP``), logged."""
        assert self.redis_cursor is not None
        cursor, found = self.transport.run(
            "SWEEP", self.redis_cursor, self.SWEEP_CHUNK, self.SWEEP_LONGEST
        )
        self.redis_cursor = None if text(cursor) == "0" else text(cursor)
        for i in range(0, len(found), 2):
            logger.warning(
                "job=%s state=requeued-stray reason=%r (back at the end of its queue)",
                text(found[i]),
                text(found[i + 1]),
            )

    def step(self, broker: RedisBroker) -> int:
        """One chunk of the sweeps; returns how many jobs were sent again."""
        if self.redis_cursor is not None:
            self.sweep_redis()
        if not get_settings().TRACKING:
            if self.redis_cursor is None and time.monotonic() >= self.next_sweep:
                self.redis_cursor, self.next_sweep = "0", time.monotonic() + self.INTERVAL
            return 0
        if self.cursor is None:
            if time.monotonic() < self.next_sweep:
                return 0
            self.cursor = ""
            if self.redis_cursor is None:
                self.redis_cursor = "0"
        start = self.cursor
        versions = self.chunk(start)
        if len(versions) < self.CHUNK:
            self.cursor, self.next_sweep = None, time.monotonic() + self.INTERVAL
        else:
            self.cursor = max(versions)
        candidates = self.unknown_to_redis(versions)
        if not candidates:
            return 0
        # What the stream says happened to them up to now is recorded first; if it cannot be,
        # this chunk waits for the next tick.
        head = self.tracking.head()
        self.tracking.sync(budget=self.tracking.READ_BUDGET)
        if stream_id(self.tracking.position()) < stream_id(head):
            self.cursor = start
            return 0
        return self.resend(broker, candidates)

    def chunk(self, after: str) -> dict[str, int]:
        from jobqueue.models import Job

        rows = Job.objects.filter(status__in=LIVE, version__gt=0)
        if after:
            rows = rows.filter(id__gt=after)
        return {
            str(job_id): version
            for job_id, version in rows.order_by("id").values_list("id", "version")[: self.CHUNK]
        }

    def unknown_to_redis(self, versions: dict[str, int]) -> dict[str, int]:
        key = self.transport.key
        pipe = self.transport.client.pipeline(transaction=False)
        for job_id in versions:
            pipe.hexists(key("msg"), job_id)
            pipe.exists(key("r", job_id))
        answers = pipe.execute()
        return {
            job_id: version
            for i, (job_id, version) in enumerate(versions.items())
            if not answers[2 * i] and not answers[2 * i + 1]
        }

    def resend(self, broker: RedisBroker, candidates: dict[str, int]) -> int:
        from jobqueue.models import Job, Outbox

        pending = {
            str(i)
            for i in Outbox.objects.filter(job_id__in=list(candidates)).values_list(
                "job_id", flat=True
            )
        }
        rows = Job.objects.filter(id__in=list(candidates), status__in=LIVE).values_list(
            "id", "version", "body", "attempts", "run_at"
        )
        messages, bodies, attempts = [], [], []
        for pk, version, body, runs, run_at in rows:
            job_id = str(pk)
            if version != candidates[job_id] or job_id in pending:
                continue  # it moved on meanwhile, or the outbox will deliver it
            if not body or not codec.verified(job_id, body):
                logger.error("job=%s state=lost-unrecoverable reason=no signed body", job_id)
                continue
            message = codec.decode(job_id, body)
            message.run_at = run_at
            messages.append(message)
            bodies.append(body)
            attempts.append(runs)
        if not messages:
            return 0
        sent = broker.push(messages, bodies, attempts)
        for job_id in sent:
            logger.warning("job=%s state=resent-after-broker-loss", job_id)
        Job.objects.filter(id__in=sent).update(resent=F("resent") + 1)
        return len(sent)
