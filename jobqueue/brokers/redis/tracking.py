"""The Job table, a projection of the Redis broker's event stream that converges.

Every script appends an event for each change it makes to a job, carrying the job's version
after the change. Whoever syncs (a supervisor's upkeep thread; the admin and ``JobResult.job``
within a bounded time) folds a batch of events in memory and writes it without
reading a row first, each write conditional on the row being older than the event
(``... WHERE version < new``): replayed, reordered or concurrent writes cannot take a row back.
An event that carries the whole record (a job sent, finished, requeued) upserts the row; one that
does not (started, back in its queue, canceled) updates only the columns it changes.

Bodies are verified as they are recorded: a row stores the signed body it was sent with (requeue,
the relay and reconciliation send that body again), and a body that does not verify is recorded
as a failure and never stored. How a batch is written: ``table``.

The stream is trimmed only up to what has been written; the tracked position moves only forward
and only under the tracker's lock (a token per holder, extended and freed by its holder alone).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis
from django.conf import settings

from jobqueue.brokers.redis import codec
from jobqueue.brokers.redis.client import text
from jobqueue.brokers.redis.results import moment
from jobqueue.brokers.redis.table import Changes, Row, job_model, write_changes
from jobqueue.conf import get_settings
from jobqueue.exceptions import BrokerError
from jobqueue.message import canonical_job_id
from jobqueue.states import WAITING, JobStatus

if TYPE_CHECKING:
    from jobqueue.brokers.redis.client import Transport

logger = logging.getLogger(__name__)


MAX_VERSION = 2**63 - 1  # the Job table's bigint
MAX_MS = 253402300799999  # the last millisecond of year 9999 (Python's datetime)


def whole(value: str, low: int = 0, high: int = MAX_VERSION) -> int:
    """``value`` as an integer within ``low..high`` (what Redis holds may have been written by
    hand); ValueError otherwise."""
    if not value.isascii() or not value.lstrip("-").isdigit() or len(value) > 20:
        raise ValueError(f"not a whole number: {value[:40]!r}")
    number = int(value)
    if not low <= number <= high:
        raise ValueError(f"{number} out of range {low}..{high}")
    return number


def version(value: str) -> int:
    return whole(value, 1)


def from_ms(value: str) -> datetime:
    return datetime.fromtimestamp(whole(value, 0, MAX_MS) / 1000, UTC)


def counted(value: str) -> str:
    """Attempts ("" if the event does not say), checked."""
    return str(whole(value, 0, 2**31 - 1)) if value else ""


@dataclass
class Event:
    """One job's change: ``kind`` (e sent, r requeued, s started, f finished or retried,
    q back in its queue, c canceled, x purged), the version it made, and what it says."""

    kind: str
    job_id: str
    version: int
    data: dict[str, str] = field(default_factory=dict)
    payload: dict[str, Any] | None = None  # the outcome ``data["p"]`` holds, read already


def parse(entry: dict[str, str]) -> list[Event]:
    """A stream entry's events, one per job (jobs sent or claimed together share an entry).
    Every field is checked here (numbers in the table's range, times in Python's, outcomes
    a JSON object of texts), so what is folded cannot fail on the values; free text (a worker's
    name) is taken last, so no '|' in it can shift the fields after it. ValueError if the
    entry is malformed."""
    kind, _, rest = entry["d"].partition("|")
    if kind == "e":
        jobs, _, run_at = rest.partition("|")
        if run_at:
            from_ms(run_at)
        out = []
        for job in jobs.split(","):
            job_id, number, attempts = [*job.split(":"), ""][:3]
            data = {"run_at": run_at, "attempts": counted(attempts)}
            out.append(Event("e", job_id, version(number), data))
        return out
    if kind == "s":
        jobs, started, worker = rest.split("|", 2)
        from_ms(started)
        out = []
        for job in jobs.split(","):
            job_id, n, token = job.split(":")
            data = {"attempts": counted(n), "started": started, "worker": worker}
            out.append(Event("s", job_id, version(token), data))
        return out
    if kind == "x":
        return [
            Event("x", job_id, version(number))
            for job_id, number in (job.split(":") for job in rest.split(","))
        ]
    if kind == "f":
        # f|id|status|attempts|worker|version: the worker between, split from both ends.
        job_id, status, attempts, tail = rest.split("|", 3)
        worker, number = tail.rsplit("|", 1)
        data = {"status": status, "attempts": counted(attempts), "worker": worker}
        payload = checked_outcome(entry["p"])
        data.update(p=entry["p"], b=entry["b"])
        return [Event("f", job_id, version(number), data, payload)]
    if kind in ("q", "c"):
        job_id, attempts, number = rest.split("|")
        data = {"attempts": counted(attempts), "b": entry.get("b", "")}
        outcome_read = checked_outcome(entry["p"]) if kind == "c" else None
        data["p"] = entry["p"] if kind == "c" else ""
        data["error"] = entry.get("e", "")
        data["lost"] = entry.get("w", "")
        if data["lost"]:  # started ms|ended ms|worker, of a lost run
            started, ended, _ = data["lost"].split("|", 2)
            from_ms(started), from_ms(ended)
        return [Event(kind, job_id, version(number), data, outcome_read)]
    if kind == "r":
        job_id, number, now = rest.split("|")
        from_ms(now)
        return [Event("r", job_id, version(number), {"now": now, "b": entry["b"]})]
    raise ValueError(f"unknown kind {kind!r}")


def checked_outcome(text: str) -> dict[str, Any]:
    """An outcome's JSON, read and checked as ``outcome`` reads it: an object; its texts text or
    null; its times ISO texts or milliseconds within Python's range."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("the outcome is not a JSON object")
    for key in ("status", "result", "error", "traceback", "started_at", "ended_at", "run_at"):
        if not isinstance(data.get(key), str | None):
            raise ValueError(f"the outcome's {key} is not text")
    for key in ("started", "ended", "run"):
        stamp = data.get(f"{key}_ms")
        if stamp is not None and (
            not isinstance(stamp, int) or isinstance(stamp, bool) or not 0 <= stamp <= MAX_MS
        ):
            raise ValueError(f"the outcome's {key}_ms is out of range")
        moment(data, key)  # ValueError if an ISO time does not parse
    if not isinstance(data.get("status"), str):
        raise ValueError("the outcome has no status")
    return data


def read_outcome(event: Event) -> dict[str, Any]:
    """The event's outcome, read once (by ``parse``) or now."""
    if event.payload is None:
        event.payload = json.loads(event.data["p"])
    return event.payload


def outcome(payload: dict[str, Any]) -> Row:
    """The columns a finish or cancel sets, from its JSON outcome (only the keys it has)."""
    status = payload["status"]
    columns: Row = {"status": status, "result": payload.get("result")}
    for key in ("error", "traceback"):
        columns[key] = payload.get(key) or ""
    columns["ended_at"] = None if status in WAITING else moment(payload, "ended")
    for key in ("started", "run"):
        value = moment(payload, key)
        if value is not None:
            columns[f"{key}_at"] = value
    return columns


def failed_attempt(event: Event) -> Row | None:
    """The attempt row a failure's event records (a run that raised or timed out, retried or
    not, or a lost run); None for any other event."""
    data = event.data
    if not data.get("attempts") or int(data["attempts"]) < 1:
        return None
    if event.kind == "f" and data["status"] in FAILURES:
        payload = read_outcome(event)
        return {
            "number": int(data["attempts"]),
            "worker": data["worker"],
            "error": payload.get("error") or "",
            "traceback": payload.get("traceback") or "",
            "started_at": moment(payload, "started"),
            "ended_at": moment(payload, "ended") or datetime.now(UTC),
        }
    if event.kind == "q" and data.get("error"):
        started, ended, worker = (data.get("lost") or "0|0|").split("|", 2)
        return {
            "number": int(data["attempts"]),
            "worker": worker,
            "error": data["error"],
            "traceback": "",
            "started_at": from_ms(started) if int(started) else None,
            "ended_at": from_ms(ended) if int(ended) else datetime.now(UTC),
        }
    return None


FAILURES = frozenset({JobStatus.FAILED, JobStatus.SCHEDULED, JobStatus.QUEUED})
HISTORY = frozenset("fqrx")  # the kinds of events that may change the attempts recorded


class Tracker:
    """Folds a batch of events into whole rows and column patches, and writes them."""

    VERIFIED = 20_000  # bodies remembered as verified (a job sent, then finished, is seen twice)

    def __init__(self) -> None:
        # Keyed digests of (job, body) verified under ``keys``: a job's signature is checked once,
        # not once per event that carries its body. The key is this process's own, so no body
        # written to Redis can be made to match another's digest.
        self.verified: set[bytes] = set()
        self.keys: tuple[Any, ...] = ()
        self.digest_key = os.urandom(16)

    def record(self, job_id: str, body: str, version: int, **columns: Any) -> Row:
        """A whole row made from a signed body; one that does not verify is a failure whose
        body is not kept (nothing can send it again)."""
        digest = self.digest(job_id, body)
        message = codec.decode(job_id, body, trusted=digest in self.verified)
        if not message.rejected:
            if len(self.verified) >= self.VERIFIED:
                self.verified.clear()
            self.verified.add(digest)
        row = job_model().values_from_message(message)
        del row["id"]
        row.update(columns, version=version, body=body, resent=0)
        if message.rejected:
            logger.warning("job=%s state=rejected-body reason=%s", job_id, message.rejected)
            row.update(
                status=JobStatus.FAILED,
                error=message.rejected,
                body="",
                ended_at=row.get("ended_at") or datetime.now(UTC),
            )
        return row

    def digest(self, job_id: str, body: str) -> bytes:
        keys = (settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", []))
        if keys != self.keys:  # verified under other keys: verify again
            self.verified.clear()
            self.keys = keys
        mac = hashlib.blake2b(key=self.digest_key, digest_size=16)
        mac.update(f"{job_id}|{body}".encode())
        return mac.digest()

    def apply(self, events: Iterable[Event], history: Iterable[Event] = ()) -> int:
        """Fold ``events`` into rows, and ``history`` (every event of the batch, those a later
        whole record replaces too) into the attempts recorded."""
        changes = Changes()
        for event in history:
            try:
                event.job_id = canonical_job_id(event.job_id)
                self.fold_attempt(event, changes)
            except Exception as exc:
                logger.warning("state=untrackable event=%r error=%r (skipped)", event, exc)
        for event in events:
            try:
                event.job_id = canonical_job_id(event.job_id)
                self.fold(event, changes)
            except Exception as exc:
                # Only what Redis holds can be malformed here (parse checks what it can); one
                # event never stops the others. The job itself is unaffected in Redis.
                logger.warning("state=untrackable event=%r error=%r (skipped)", event, exc)
        if changes:
            write_changes(changes)
        return len(changes)

    @staticmethod
    def fold_attempt(event: Event, changes: Changes) -> None:
        """A failure adds its attempt; a requeue or purge forgets the attempts before it."""
        if event.kind in ("r", "x"):
            changes.forget_attempts(event.job_id, event.version)
            return
        attempt = failed_attempt(event)
        if attempt is not None:
            changes.attempt(event.job_id, event.version, attempt)

    def fold(self, event: Event, changes: Changes) -> None:
        data, job_id, version = event.data, event.job_id, event.version
        if event.kind in ("e", "f", "r"):
            if not data.get("b"):
                return  # finished meanwhile: its finish event carries the record
            row = self.record(job_id, data["b"], version)
            if event.kind == "e":
                if data.get("run_at"):
                    row.update(status=JobStatus.SCHEDULED, run_at=from_ms(data["run_at"]))
                if data.get("attempts"):
                    row["attempts"] = int(data["attempts"])
            elif event.kind == "r":
                row["run_at"] = from_ms(data["now"])
            else:
                if row["body"]:  # verified: a rejected body stays recorded as such
                    row.update(outcome(read_outcome(event)), status=data["status"])
                row.update(attempts=int(data["attempts"]), worker=data["worker"])
            changes.whole(job_id, row)
        elif event.kind == "s":
            columns = {
                "status": JobStatus.STARTED,
                "worker": data["worker"],
                "attempts": int(data["attempts"]),
                "started_at": from_ms(data["started"]),
                "ended_at": None,
            }
            changes.change(job_id, version, columns)
        elif event.kind == "q":
            columns = {"status": JobStatus.QUEUED, "worker": "", "ended_at": None}
            if data.get("error"):  # a lost run, retried
                columns.update(error=data["error"], traceback="", started_at=None)
            if data.get("attempts"):
                columns["attempts"] = int(data["attempts"])
            changes.change(job_id, version, columns)
        elif event.kind == "c":
            columns = outcome(read_outcome(event))
            if data.get("attempts"):
                columns["attempts"] = int(data["attempts"])
            if job_id not in changes.rows and data.get("b"):
                changes.missing[job_id] = self.record(job_id, data["b"], version, **columns)
            changes.change(job_id, version, columns)
        elif event.kind == "x":
            changes.delete(job_id, version)
        else:
            raise ValueError(f"unknown kind {event.kind!r}")


def superseded_dropped(events: list[Event]) -> list[Event]:
    """The events of a batch less those a later whole record of the same job replaces (a job
    sent, started and finished within one batch costs one record, not three)."""
    last: dict[str, int] = {}
    for index, event in enumerate(events):
        if event.kind in WHOLE:
            last[event.job_id] = index
    return [e for i, e in enumerate(events) if i >= last.get(e.job_id, -1)]


WHOLE = frozenset("efr")


# -- reading the stream --------------------------------------------------------------------------
class Tracking:
    """Reads the stream under the tracker's lock, in bounded batches and within a time budget."""

    READ_BUDGET = 0.5  # seconds the admin or ``JobResult.job`` wait for tracking to catch up
    LOCK_MS = 10_000
    READ = 200  # stream entries per read (one may hold up to 500 jobs' events)
    BATCH = 2000  # jobs' events folded and written in one transaction

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.tracker = Tracker()

    def position(self) -> str:
        return text(self.transport.client.get(self.transport.key("tracked")) or b"0-0")

    def head(self) -> str:
        """The id of the stream's last entry ("0-0": empty)."""
        last = self.transport.client.xrevrange(self.transport.key("events"), count=1)
        return text(last[0][0]) if last else "0-0"

    def sync(self, budget: float) -> bool:
        """Fold what the stream holds, for about ``budget`` seconds at most; True if it was all
        recorded (False: more is left, another process holds the lock, or Redis is away)."""
        if not get_settings().TRACKING:
            return True
        transport = self.transport
        deadline = time.monotonic() + budget
        token = uuid.uuid4().hex
        try:
            if not transport.run("LOCK", "tracker", token, self.LOCK_MS):
                return False
            try:
                return self.fold_until(token, deadline)
            finally:
                transport.run("UNLOCK", "tracker", token)
        except (redis.RedisError, BrokerError) as exc:
            # Tracking catches up on the next sync; the jobs themselves are safe in Redis.
            logger.warning("state=tracking-deferred error=%s", exc)
            return False

    def fold_until(self, token: str, deadline: float) -> bool:
        """Batches of about ``BATCH`` jobs' events, each written, then committed (the position
        moved past it and the stream trimmed to it), until the stream is empty or time is up."""
        transport = self.transport
        last = self.position()
        events: list[Event] = []
        while True:
            entries = transport.client.xrange(
                transport.key("events"), min=f"({last}", count=self.READ
            )
            for entry_id, values in entries:
                entry = {text(k): text(v) for k, v in values.items()}
                try:
                    events.extend(parse(entry))
                except Exception as exc:
                    logger.warning(
                        "state=untrackable entry=%s d=%r error=%r (skipped)",
                        text(entry_id),
                        entry.get("d", "")[:200],
                        exc,
                    )
                last = text(entry_id)
                if len(events) >= self.BATCH:
                    if not self.commit(events, token, last):
                        return False
                    if time.monotonic() >= deadline:
                        return False
            if len(entries) < self.READ:
                return self.commit(events, token, last)

    def commit(self, events: list[Event], token: str, through: str) -> bool:
        """Write ``events`` (then forget them), and move the position to ``through``; False if
        the lock was lost meanwhile (another tracker goes on from the last commit)."""
        if events:
            history = [e for e in events if e.kind in HISTORY]
            self.tracker.apply(self.with_bodies(superseded_dropped(events)), history)
            events.clear()
        if not self.transport.run("TRACK_COMMIT", token, self.LOCK_MS, through):
            logger.warning("state=tracking-lock-lost through=%s", through)
            return False
        return True

    def with_bodies(self, events: list[Event]) -> list[Event]:
        """The events, with the body of each job sent that is still live, read in one call
        (the stream does not carry them: that would take Redis's memory twice per job)."""
        sent = [e for e in events if e.kind == "e"]
        if sent:
            ids = [e.job_id for e in sent]
            bodies = self.transport.client.hmget(self.transport.key("msg"), ids)
            for event, body in zip(sent, bodies, strict=True):
                if body is not None:
                    event.data["b"] = text(body)
        return events
