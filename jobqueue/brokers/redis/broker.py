"""The Redis broker, for production: the transport (send, claim, finish, release, renew,
recover); what it records and what operators do are in the modules beside it.

Claims are atomic: a Lua script pops the next entries from the served queues (in order; by
priority, then age) and records them as leased to the worker in the same step, so no job is ever
"popped but not yet recorded". Idle workers block on a wake-up list (BLPOP) with their claim
queued behind it, so an enqueue reaches them at once. Leases, retries and countdowns live in
sorted sets scored by Redis's own clock; nothing is redelivered for taking long while its worker
renews the lease.

The Job table is a projection of an event stream (``tracking``), so a plain ``.delay()`` costs
one Redis round trip. Inside a transaction, or while Redis cannot be reached, the job goes to
the outbox (``outbox``) and is delivered after commit, or by a worker's relay once Redis is back.
Message bodies are signed (``codec``): a worker never runs one that does not verify.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import redis
from django.db import connections, transaction

from jobqueue.brokers.base import (
    Broker,
    JobState,
    Outcome,
    announce,
    announcing,
    worker_lost_error,
)
from jobqueue.brokers.redis import codec, durability, outbox, records, results
from jobqueue.brokers.redis.client import MAX_WAIT, Transport, text
from jobqueue.brokers.redis.tracking import Tracking
from jobqueue.brokers.redis.upkeep import Upkeep
from jobqueue.conf import get_settings
from jobqueue.exceptions import BrokerError, ConfigurationError
from jobqueue.message import Lease, Message

logger = logging.getLogger(__name__)

CHUNK = 500  # messages per script call
RELAY_EVERY = 1.0  # seconds: the relay and reconciliation run at least this often
LOST_LEASE = "its worker stopped renewing its lease"


class RedisBroker(Broker):
    # Every send to a queue of at most 16 waiting jobs pushes a wake token that stays until a
    # waiter takes it (``scripts.to_queue``): a queue found empty is woken by the next send.
    wakes_for_every_send = True

    def __init__(
        self,
        url: str | None = None,
        cache: str | None = None,
        prefix: str = "jobqueue",
        connect_timeout: float = 0.5,
        socket_timeout: float = 1.0,
        **connection_options: Any,
    ) -> None:
        if (url is None) == (cache is None):
            raise ConfigurationError(
                "RedisBroker needs OPTIONS {'url': 'redis://host:6379/0'} or {'cache': 'alias'}"
            )
        if "{" in prefix or "}" in prefix:
            raise ConfigurationError("the Redis prefix is wrapped in {} by jobqueue: give it bare")
        self.transport = Transport(
            url, cache, prefix, connect_timeout, socket_timeout, connection_options
        )
        self.prefix = self.transport.prefix
        self.tracking = Tracking(self.transport)
        self.reconciler = durability.Reconciler(self.transport, self.tracking)
        self._upkeep: Upkeep | None = None
        self._next_relay = 0.0

    # -- plumbing --------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        return self.transport.client

    def key(self, *parts: str) -> str:
        return self.transport.key(*parts)

    def run(self, name: str, *args: Any) -> Any:
        return self.transport.run(name, *args)

    def close(self) -> None:
        if self._upkeep is not None and self._upkeep.stop():
            # Before a fork: no thread may run across it; its waits are bounded (``upkeep``).
            # One that has not stopped yet is kept: ``ready_to_fork`` says so.
            self._upkeep = None
        self.transport.close()

    def ready_to_fork(self) -> bool:
        return self._upkeep is None

    # -- producers -------------------------------------------------------------------------------
    def enqueue(self, messages: Sequence[Message]) -> None:
        bodies = [codec.encode(m) for m in messages]  # refuses what the scripts cannot route
        alias = self.db_alias()
        if connections[alias].in_atomic_block:
            outbox.write(messages, bodies)
            ids = [m.id for m in messages]
            transaction.on_commit(lambda: outbox.deliver(self, ids), using=alias)
            return
        delivered = 0
        try:
            for start in range(0, len(messages), CHUNK):
                end = start + CHUNK
                self.push(messages[start:end], bodies[start:end])
                delivered = end
        except BrokerError as exc:
            # Chunks Redis confirmed stay there; the rest (the failed chunk may or may not have
            # landed) go to the outbox, whose delivery skips what Redis already has.
            logger.warning(
                "state=outbox jobs=%s error=%s (Redis unreachable; workers relay "
                "them once it is back)",
                len(messages) - delivered,
                exc,
            )
            with transaction.atomic(using=alias):
                outbox.write(messages[delivered:], bodies[delivered:])

    def push(
        self,
        messages: Sequence[Message],
        bodies: Sequence[str],
        attempts: Sequence[int] | None = None,
    ) -> list[str]:
        """Send signed bodies as they are (``attempts``: runs already counted); returns the ids
        Redis did not hold already. Versions are Redis's to give (``scripts.next_version``)."""
        sent: list[str] = []
        for start in range(0, len(messages), CHUNK):
            args: list[Any] = []
            for i in range(start, min(start + CHUNK, len(messages))):
                m = messages[i]
                run_at = codec.to_ms(m.run_at) if m.is_scheduled else 0
                args += [m.id, bodies[i], run_at, attempts[i] if attempts else 0]
            sent += [text(i) for i in self.run("ENQUEUE", *args)]
        return sent

    # -- workers ---------------------------------------------------------------------------------
    def claim(self, queues: Sequence[str], worker: str, limit: int) -> list[Message]:
        return self.leased(self.run("CLAIM", *self.claim_args(queues, worker, limit)))

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        try:
            self.transport.blocking.blpop(self.wake_keys(queues), timeout=wait_time(timeout))
        except redis.RedisError as exc:
            raise BrokerError(f"Redis: {exc}") from exc

    def wait_and_claim(
        self, queues: Sequence[str], worker: str, limit: int, timeout: float
    ) -> list[Message]:
        """BLPOP and the claim script sent together: Redis runs the claim the moment the wait
        ends, so a job sent to an idle worker costs it no second round trip."""
        args = self.claim_args(queues, worker, limit)
        try:
            reply = self.transport.wait_then_run(
                self.wake_keys(queues), wait_time(timeout), "CLAIM", *args
            )
        except redis.exceptions.NoScriptError:
            return []  # Redis restarted: the script is loaded again, the next claim will do
        except (redis.ConnectionError, redis.TimeoutError):
            # The claim may have run: the same request replays its reply.
            return self.leased(self.run("CLAIM", *args))
        except redis.RedisError as exc:
            raise BrokerError(f"Redis: {exc}") from exc
        return self.leased(reply)

    def claim_args(self, queues: Sequence[str], worker: str, limit: int) -> list[Any]:
        refuse_bar(worker)
        lease = int(get_settings().LEASE_TIMEOUT * 1000)
        return [worker, limit, lease, uuid.uuid4().hex, *queues]

    def wake_keys(self, queues: Sequence[str]) -> list[str]:
        return [self.key("wake", q) for q in queues]

    def leased(self, reply: list[Any]) -> list[Message]:
        """The messages of a CLAIM reply ({id, body, attempts, token, ...}, strays)."""
        flat, strays = reply
        for entry in strays:
            logger.warning(
                "state=stray-entry entry=%r (not a job: skipped; kept in %s)",
                text(entry)[:200],
                self.key("strays"),
            )
        messages = []
        for i in range(0, len(flat), 4):
            message = codec.decode(text(flat[i]), text(flat[i + 1]))
            message.attempts = int(flat[i + 2])
            message.token = int(flat[i + 3])
            messages.append(message)
        return messages

    def finish(self, worker: str, outcomes: Sequence[Outcome]) -> int:
        if not outcomes:
            return 0
        refuse_bar(worker)
        args: list[Any] = [worker, results.ttl()]
        for o in outcomes:
            args += [o.job_id, o.token, o.status.value, codec.to_ms(o.run_at)]
            args.append(json.dumps(results.payload(o)))
        taken, ended = self.run("FINISH", *args)
        if ended and announcing(type(self)):
            ids = {text(job_id) for job_id in ended}
            finals = ((o.job_id, o.task, o.status) for o in outcomes if o.job_id in ids)
            announce(type(self), finals, self.db_alias())
        return int(taken)

    def release(self, worker: str, leases: Sequence[Lease], *, lost: str = "") -> int:
        if not leases:
            return 0
        refuse_bar(worker)
        args: list[Any] = [worker, lost, *worker_lost_error(lost), results.ttl()]
        for lease in leases:
            args += [lease.job_id, lease.token]
        return self._lost(self.run("RELEASE", *args))

    def renew(self, worker: str, leases: Sequence[Lease]) -> set[str]:
        if not leases:
            return set()
        args: list[Any] = [int(get_settings().LEASE_TIMEOUT * 1000)]
        for lease in leases:
            args += [lease.job_id, lease.token]
        return {text(i) for i in self.run("RENEW", *args)}

    def promote_due(self) -> int:
        return int(self.run("PROMOTE", 1000))

    def recover(self) -> int:
        words = worker_lost_error(LOST_LEASE)
        return self._lost(self.run("RECOVER", 1000, LOST_LEASE, *words, results.ttl()))

    def _lost(self, reply: list[Any]) -> int:
        """A release's or recovery's count; the jobs it failed for good are announced."""
        count, failed = reply
        finals = (
            (text(failed[i]), text(failed[i + 1]), "failed") for i in range(0, len(failed), 2)
        )
        announce(type(self), finals, self.db_alias())
        return int(count)

    def canceled(self, job_ids: Sequence[str]) -> set[str]:
        if not job_ids:
            return set()
        try:
            scores = self.client.zmscore(self.key("canceled"), list(job_ids))
        except redis.RedisError as exc:
            raise BrokerError(f"Redis: {exc}") from exc
        return {job_id for job_id, score in zip(job_ids, scores, strict=True) if score is not None}

    def tick(self) -> None:
        """A supervisor's upkeep runs in a thread of its own (``upkeep``), started here."""
        if self._upkeep is None or not self._upkeep.is_alive():
            self._upkeep = Upkeep(self)
            self._upkeep.start()

    def upkeep(self, budget: float) -> bool:
        """One round: tracking for about ``budget`` seconds; then the outbox relay and a step of
        reconciliation, each round once tracking has caught up and at least every
        ``RELAY_EVERY`` seconds whatever tracking does (a drain faster than tracking, or a
        failing database write, must not hold back jobs waiting in the outbox). True if
        tracking caught up."""
        failure: BaseException | None = None
        caught_up = False
        try:
            caught_up = self.tracking.sync(budget=budget)
        except Exception as exc:
            failure = exc
        now = time.monotonic()
        if caught_up or now >= self._next_relay:
            self._next_relay = now + RELAY_EVERY
            try:
                outbox.relay(self)
                self.reconciler.step(self)
            except redis.RedisError as exc:
                raise BrokerError(f"Redis: {exc}") from exc
        if failure is not None:
            raise failure
        return caught_up

    def sync(self) -> None:
        """Bring the Job table up to date (bounded: see ``tracking.Tracking.sync``)."""
        self.tracking.sync(budget=self.tracking.READ_BUDGET)

    # -- producers asking about their jobs ------------------------------------------------------
    def state(self, job_id: str) -> JobState:
        return results.state(self, job_id)

    def wait_finished(self, job_id: str, timeout: float | None) -> JobState:
        return results.wait_finished(self, job_id, timeout)

    def table_state(self, job_id: str) -> JobState:
        return super().state(job_id)

    def table_wait_finished(self, job_id: str, timeout: float | None) -> JobState:
        return super().wait_finished(job_id, timeout)

    # -- operators (through the scripts; see records) ------------------------------------------
    def cancel(self, job_id: str) -> bool:
        return records.cancel(self, job_id)

    def requeue(self, job_ids: Sequence[str] | None = None) -> int:
        return records.requeue(self, job_ids)

    def purge_queue(self, queue: str) -> int:
        return records.purge_queue(self, queue)

    def purge_finished(self, older_than: timedelta) -> int:
        records.forget_results(self, older_than)
        return super().purge_finished(older_than)

    def counts(self) -> dict[str, dict[str, int]]:
        self.sync()
        return super().counts()

    def durability_warnings(self) -> list[str]:
        return durability.warnings(self.transport)


def refuse_bar(worker: str) -> None:
    """Events and the lease's owner are '|'-separated: a worker name may not hold one (the
    scripts refuse it too)."""
    if "|" in worker:
        raise ValueError(f"a worker name may not contain '|': {worker!r}")


def wait_time(timeout: float) -> float:
    return min(max(timeout, 0.01), MAX_WAIT)
