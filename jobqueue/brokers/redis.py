"""The Redis broker, for production.

Claims are atomic: a Lua script pops the next ids from the served queues (in order; by priority,
then age) and records them as leased to the worker in the same step, so no job is ever "popped
but not yet recorded" (the gap where RQ can lose one). Idle workers block on a wake-up list
(BLPOP) with their claim queued behind it, so an enqueue reaches them at once. Leases, retries
and countdowns live in sorted sets scored by Redis's own clock; a week's delay is as safe as a
second's, and nothing is redelivered for taking long while its worker renews the lease.

The Job table is written in batches from an event stream (``jobqueue.tracking``), so a plain
``.delay()`` costs one Redis round trip. Inside a transaction, or while Redis cannot be reached,
the job is written to the database with an outbox entry instead and delivered after commit, or
by a worker's relay once Redis is back; a delivery mark in Redis keeps a relay from sending it
twice. Message bodies are signed (``jobqueue.signing``): a worker never runs one that does not
verify.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connections, transaction
from django.utils import timezone

from jobqueue import signing
from jobqueue.brokers import redis_scripts as lua
from jobqueue.brokers.base import Broker, JobState, Outcome
from jobqueue.conf import get_settings
from jobqueue.exceptions import BrokerError, ConfigurationError, JobNotFound
from jobqueue.message import Message
from jobqueue.states import FINISHED, WAITING, JobStatus

try:
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ConfigurationError(
        "the Redis broker needs the redis package: pip install 'jobqueue[redis]'"
    ) from exc

logger = logging.getLogger(__name__)

VERSION = "1"
CHUNK = 500  # messages per script call
DEDUP_TTL = 7 * 24 * 3600  # seconds a delivery mark keeps an outbox message from a second send
OUTBOX_GRACE = timedelta(seconds=2)  # an outbox entry younger than this is left to its on_commit
SYNC_LOCK_MS = 10_000
TRACK_BATCH = 5000  # jobs' events folded into one write of the Job table


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def to_ms(moment: datetime | None) -> int:
    return int(moment.timestamp() * 1000) if moment else 0


class RedisBroker(Broker):
    def __init__(
        self,
        url: str | None = None,
        cache: str | None = None,
        prefix: str = "jobqueue",
        connect_timeout: float = 0.5,
        socket_timeout: float = 10.0,
        **connection_options: Any,
    ) -> None:
        if (url is None) == (cache is None):
            raise ConfigurationError(
                "RedisBroker needs OPTIONS {'url': 'redis://host:6379/0'} or {'cache': 'alias'}"
            )
        if "{" in prefix or "}" in prefix:
            raise ConfigurationError("the Redis prefix is wrapped in {} by jobqueue: give it bare")
        self.prefix = "{" + prefix + "}"
        self.url, self.cache = url, cache
        self.client_options = {
            "socket_connect_timeout": connect_timeout,
            "socket_timeout": socket_timeout,
            "health_check_interval": 30,
            # One quick retry, so that .delay() falls back to the outbox within about a second.
            "retry": Retry(ExponentialBackoff(cap=0.1, base=0.01), 1),
            **connection_options,
        }
        self._client: Any = None
        self._scripts: dict[str, Any] = {}

    # -- plumbing --------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            if self.cache is not None:
                from django_redis import get_redis_connection

                self._client = get_redis_connection(self.cache)
            else:
                assert self.url is not None
                self._client = redis.Redis.from_url(self.url, **self.client_options)
        return self._client

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def run(self, name: str, *args: Any) -> Any:
        """Run a script with the prefix as its first argument; Redis errors become BrokerError."""
        script = self.script(name)
        try:
            return script(keys=self.script_keys(), args=[self.prefix, *args])
        except redis.RedisError as exc:
            raise BrokerError(f"Redis: {exc}") from exc

    def script(self, name: str) -> Any:
        """Script ``name``, registered with the client (which loads it into Redis on first use)."""
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.client.register_script(lua.source(name))
        return script

    def script_keys(self) -> list[str]:
        """The keys every script declares: the events stream only while tracking is on."""
        if get_settings().TRACKING:
            return [self.key("msg"), self.key("events")]
        return [self.key("msg")]

    def close(self) -> None:
        if self._client is not None and self.cache is None:
            self._client.close()
        self._client = None
        self._scripts = {}

    # -- message bodies --------------------------------------------------------------------------
    def encode(self, message: Message) -> str:
        timeout = "" if message.timeout is None else repr(message.timeout)
        rest = "|".join(
            (
                message.task,
                message.queue,
                str(message.priority),
                str(message.max_retries),
                timeout,
                str(to_ms(message.enqueued_at)),
                message.arguments,
            )
        )
        return f"{VERSION}|{signing.sign(message.id + '|' + rest)}|{rest}"

    def decode(self, job_id: str, body: str, verify: bool = True) -> Message:
        """A Message; one that is malformed or fails verification comes back ``rejected``.
        Tracking, which records but runs nothing, skips the signature check."""
        parts = body.split("|", 8)
        if len(parts) != 9 or parts[0] != VERSION:
            return Message(
                id=job_id,
                task="",
                arguments=body,
                queue="",
                rejected=f"malformed message (not jobqueue v{VERSION}): {body[:80]!r}",
            )
        _, signature, task, queue, priority, max_retries, timeout, enqueued, arguments = parts
        rest = body.split("|", 2)[2]
        if verify and not signing.verify(job_id + "|" + rest, signature):
            return Message(
                id=job_id,
                task=task,
                arguments=arguments,
                queue=queue,
                rejected="message failed signature verification; it was not run",
            )
        try:
            return Message(
                id=job_id,
                task=task,
                arguments=arguments,
                queue=queue,
                priority=int(priority),
                max_retries=int(max_retries),
                timeout=float(timeout) if timeout else None,
                enqueued_at=datetime.fromtimestamp(int(enqueued) / 1000, UTC),
            )
        except ValueError as exc:
            return Message(
                id=job_id,
                task=task,
                arguments=arguments,
                queue=queue,
                rejected=f"malformed message: {exc}",
            )

    # -- producers -------------------------------------------------------------------------------
    def enqueue(self, messages: Sequence[Message]) -> None:
        alias = self.db_alias()
        if connections[alias].in_atomic_block:
            self.write_outbox(messages)
            ids = [m.id for m in messages]
            transaction.on_commit(lambda: self.deliver_outbox(ids), using=alias)
            return
        delivered = 0
        try:
            for start in range(0, len(messages), CHUNK):
                self.push(messages[start : start + CHUNK])
                delivered = start + CHUNK
        except BrokerError as exc:
            # Chunks Redis confirmed stay there; the rest (the failed chunk may or may not have
            # landed) go to the outbox, whose delivery skips what Redis already has.
            unsure = messages[delivered:]
            logger.warning(
                "state=outbox jobs=%s error=%s (Redis unreachable; workers relay "
                "them once it is back)",
                len(unsure),
                exc,
            )
            with transaction.atomic(using=alias):
                self.write_outbox(unsure)

    def push(self, messages: Sequence[Message], dedup: bool = False) -> int:
        sent = 0
        for start in range(0, len(messages), CHUNK):
            args: list[Any] = [DEDUP_TTL if dedup else 0]
            for m in messages[start : start + CHUNK]:
                args += [m.id, self.encode(m), to_ms(m.run_at) if m.is_scheduled else 0]
            sent += self.run("ENQUEUE", *args)
        return sent

    def write_outbox(self, messages: Sequence[Message]) -> None:
        from jobqueue.models import Job, Outbox

        now = timezone.now()
        # ignore_conflicts: a job of a chunk that did land may be tracked already.
        Job.objects.bulk_create([Job.from_message(m) for m in messages], ignore_conflicts=True)
        Outbox.objects.bulk_create([Outbox(job_id=m.id, created_at=now) for m in messages])

    def deliver_outbox(self, job_ids: Sequence[str]) -> int:
        """Push the outbox's jobs among ``job_ids`` (those not canceled meanwhile); each is sent
        once however many processes try."""
        from jobqueue.models import Job, Outbox

        rows = Job.objects.filter(id__in=list(job_ids), status__in=WAITING)
        messages = [row.to_message() for row in rows]
        try:
            sent = self.push(messages, dedup=True) if messages else 0
        except BrokerError as exc:
            logger.warning("state=outbox-kept jobs=%s error=%s", len(job_ids), exc)
            return 0
        Outbox.objects.filter(job_id__in=list(job_ids)).delete()
        if not get_settings().TRACKING:
            # The rows only carried the jobs to Redis; untracked jobs leave no record.
            Job.objects.filter(id__in=[m.id for m in messages]).delete()
        return sent

    def relay_outbox(self) -> int:
        from jobqueue.models import Outbox

        cutoff = timezone.now() - OUTBOX_GRACE
        ids = list(
            Outbox.objects.filter(created_at__lt=cutoff)
            .order_by("created_at")
            .values_list("job_id", flat=True)[:CHUNK]
        )
        return self.deliver_outbox([str(i) for i in ids]) if ids else 0

    # -- workers ---------------------------------------------------------------------------------
    def claim(self, queues: Sequence[str], worker: str, limit: int) -> list[Message]:
        return self.leased(self.run("CLAIM", *self.claim_args(queues, worker, limit)))

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        try:
            self.client.blpop(self.wake_keys(queues), timeout=max(timeout, 0.01))
        except redis.RedisError as exc:
            raise BrokerError(f"Redis: {exc}") from exc

    def wait_and_claim(
        self, queues: Sequence[str], worker: str, limit: int, timeout: float
    ) -> list[Message]:
        """BLPOP and the claim script sent together: Redis runs the claim the moment the wait
        ends, so a job sent to an idle worker costs it no second round trip."""
        script = self.script("CLAIM")
        keys = self.script_keys()
        pipe = self.client.pipeline(transaction=False)
        pipe.blpop(self.wake_keys(queues), timeout=max(timeout, 0.01))
        pipe.evalsha(
            script.sha, len(keys), *keys, self.prefix, *self.claim_args(queues, worker, limit)
        )
        try:
            _, flat = pipe.execute()
        except redis.exceptions.NoScriptError:
            self.client.script_load(script.script)  # Redis restarted: the next claim will do
            return []
        except redis.RedisError as exc:
            raise BrokerError(f"Redis: {exc}") from exc
        return self.leased(flat)

    def claim_args(self, queues: Sequence[str], worker: str, limit: int) -> list[Any]:
        return [worker, limit, int(get_settings().LEASE_TIMEOUT * 1000), *queues]

    def wake_keys(self, queues: Sequence[str]) -> list[str]:
        return [self.key("wake", q) for q in queues]

    def leased(self, flat: list[Any]) -> list[Message]:
        """The messages of a CLAIM reply: id, body, attempts, ..."""
        messages = []
        for i in range(0, len(flat), 3):
            message = self.decode(text(flat[i]), text(flat[i + 1]))
            message.attempts = int(flat[i + 2])
            messages.append(message)
        return messages

    def finish(self, worker: str, outcomes: Sequence[Outcome]) -> None:
        if not outcomes:
            return
        args: list[Any] = [worker, result_ttl()]
        for o in outcomes:
            args += [o.job_id, o.status.value, to_ms(o.run_at), json.dumps(payload(o))]
        self.run("FINISH", *args)

    def release(
        self, worker: str, job_ids: Sequence[str] | None = None, *, count_attempt: bool = False
    ) -> int:
        return int(self.run("RELEASE", worker, int(count_attempt), *(job_ids or [])))

    def renew(self, workers: Sequence[str]) -> None:
        if workers:
            self.run("RENEW", int(get_settings().LEASE_TIMEOUT * 1000), *workers)

    def promote_due(self) -> int:
        return int(self.run("PROMOTE", 1000))

    def recover(self) -> int:
        return int(self.run("RECOVER", 1000))

    def canceled(self, job_ids: Sequence[str]) -> set[str]:
        if not job_ids:
            return set()
        scores = self.client.zmscore(self.key("canceled"), list(job_ids))
        return {job_id for job_id, score in zip(job_ids, scores, strict=True) if score is not None}

    def tick(self) -> None:
        self.sync()
        self.relay_outbox()

    # -- producers asking about their jobs ------------------------------------------------------
    def state(self, job_id: str) -> JobState:
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(self.key("r", job_id))
            pipe.zscore(self.key("running"), job_id)
            pipe.zscore(self.key("scheduled"), job_id)
            pipe.hexists(self.key("msg"), job_id)
            ended, running, scheduled, waiting = pipe.execute()
        except redis.RedisError as exc:
            try:
                return super().state(job_id)  # the Job table, as of the last sync
            except JobNotFound:
                # Not yet tracked: it may well be waiting in Redis. Say what is known.
                raise BrokerError(f"job {job_id}: Redis cannot be reached ({exc})") from exc
        if ended is not None:
            data = json.loads(ended)
            return JobState(
                status=data["status"],
                result=data.get("result"),
                error=data.get("error", ""),
                traceback=data.get("traceback", ""),
                ended_at=datetime.fromisoformat(data["ended_at"]),
            )
        if running is not None:
            return JobState(status=JobStatus.STARTED)
        if scheduled is not None:
            return JobState(status=JobStatus.SCHEDULED)
        if waiting:
            return JobState(status=JobStatus.QUEUED)
        return super().state(job_id)

    def wait_finished(self, job_id: str, timeout: float | None) -> JobState:
        """Sleeps on the ``done`` channel; checks the state after subscribing, so a job that
        finishes in between is not missed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.key("done"))
            while True:
                state = self.state(job_id)
                if state.status in FINISHED:
                    return state
                remaining = 1.0 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"job {job_id} is still {state.status} after {timeout} s")
                # Wake on any finish, and at least every second (jobs finished by the outbox
                # path or by an operator announce nothing).
                pubsub.get_message(timeout=min(remaining, 1.0))
        except redis.RedisError:
            return super().wait_finished(job_id, timeout)
        finally:
            pubsub.close()

    def sync(self) -> None:
        """Fold the event stream into the Job table, ``TRACK_BATCH`` jobs' events per write; one
        process at a time does it."""
        from jobqueue.tracking import Tracker, one_per_job

        if not get_settings().TRACKING:
            return
        client = self.client
        token = uuid.uuid4().hex
        lock = self.key("tracker")
        try:
            if not client.set(lock, token, nx=True, px=SYNC_LOCK_MS):
                return
            tracker = Tracker(lambda job_id, body: self.decode(job_id, body, verify=False))
            last = text(client.get(self.key("tracked")) or b"0-0")
            batch: list[dict[str, str]] = []

            def write(through: str) -> None:
                tracker.apply(self.with_bodies(batch))
                batch.clear()
                client.set(self.key("tracked"), through)
                client.xtrim(self.key("events"), minid=through, approximate=False)
                client.pexpire(lock, SYNC_LOCK_MS)

            while True:
                entries = client.xrange(self.key("events"), min=f"({last}", count=1000)
                for entry_id, fields in entries:
                    batch.extend(one_per_job({text(k): text(v) for k, v in fields.items()}))
                    last = text(entry_id)
                    if len(batch) >= TRACK_BATCH:
                        write(last)
                if len(entries) < 1000:
                    break
            if batch:
                write(last)
        except redis.RedisError as exc:
            # Tracking catches up on the next sync; the jobs themselves are safe in Redis.
            logger.warning("state=tracking-deferred error=%s", exc)
        finally:
            try:
                if text(client.get(lock) or b"") == token:
                    client.delete(lock)
            except redis.RedisError:
                pass

    def with_bodies(self, events: list[dict[str, str]]) -> list[dict[str, str]]:
        """The events, with the body of each job sent that is still waiting, read in one call
        (the stream does not carry them: that would take Redis's memory twice per job)."""
        sent = [e for e in events if e.get("d", "").startswith("e|")]
        if sent:
            ids = [e["d"].split("|", 2)[1] for e in sent]
            for event, body in zip(sent, self.client.hmget(self.key("msg"), ids), strict=True):
                if body is not None:
                    event["b"] = text(body)
        return events

    # -- operators -------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> bool:
        now = timezone.now().isoformat()
        done = {"status": JobStatus.CANCELED.value, "error": "canceled", "ended_at": now}
        if self.run("CANCEL", job_id, result_ttl(), json.dumps(done)):
            return True
        return super().cancel(job_id)  # in the outbox, not yet in Redis

    def requeue(self, job_ids: Sequence[str] | None = None) -> int:
        from jobqueue.models import Job

        self.sync()
        rows = Job.objects.filter(status__in=(JobStatus.FAILED, JobStatus.CANCELED))
        if job_ids is not None:
            rows = rows.filter(id__in=list(job_ids))
        messages = [row.to_message(fresh=True) for row in rows]
        if not messages:
            return 0
        ids = [m.id for m in messages]
        self.client.delete(*[self.key("r", i) for i in ids])
        self.client.hdel(self.key("attempts"), *ids)  # a requeued job starts afresh
        self.push(messages)
        return super().requeue([m.id for m in messages])

    def purge_queue(self, queue: str) -> int:
        self.sync()
        self.run("PURGE", queue)
        return super().purge_queue(queue)

    def purge_finished(self, older_than: timedelta) -> int:
        """Also forgets the purged jobs' results in Redis."""
        from jobqueue.models import Job

        self.sync()
        cutoff = timezone.now() - older_than
        old = Job.objects.filter(status__in=FINISHED, ended_at__lt=cutoff)
        ids = [str(i) for i in old.values_list("id", flat=True)]
        for start in range(0, len(ids), CHUNK):
            self.client.delete(*[self.key("r", i) for i in ids[start : start + CHUNK]])
        return super().purge_finished(older_than)

    def counts(self) -> dict[str, dict[str, int]]:
        self.sync()
        return super().counts()

    def durability_warnings(self) -> list[str]:
        """What in the server's configuration could lose acknowledged jobs."""
        try:
            config = {text(k): text(v) for k, v in self.client.config_get("*").items()}
        except redis.RedisError:
            return []  # CONFIG is often disabled on managed Redis: nothing to say
        warnings = []
        if config.get("appendonly") != "yes":
            warnings.append(
                "appendonly is off: a Redis restart loses jobs sent since the last "
                "snapshot (set appendonly yes)"
            )
        if config.get("maxmemory-policy", "noeviction") != "noeviction":
            warnings.append(
                f"maxmemory-policy is {config['maxmemory-policy']}: Redis may evict "
                "queued jobs (set maxmemory-policy noeviction)"
            )
        return warnings


def result_ttl() -> int:
    """Seconds Redis keeps how a job ended. With RESULT_TTL None the Job table keeps results
    for good; Redis, whose memory must stay bounded, a day."""
    ttl = get_settings().RESULT_TTL
    return max(int(ttl if ttl is not None else 86400), 1)


def payload(outcome: Outcome) -> dict[str, Any]:
    return {
        "status": outcome.status.value,
        "result": outcome.result,
        "error": outcome.error,
        "traceback": outcome.traceback,
        "started_at": outcome.started_at.isoformat(),
        "ended_at": outcome.ended_at.isoformat(),
        "run_at": outcome.run_at.isoformat() if outcome.run_at else None,
    }
