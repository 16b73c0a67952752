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
as a failure and never stored. A value the table cannot hold is cut to fit with the reason in
``error``; a row the database still refuses is logged and skipped: it never blocks the others.

The stream is trimmed only up to what has been written; the tracked position moves only forward
and only under the tracker's lock (a token per holder, extended and freed by its holder alone).
On PostgreSQL the records travel by ``COPY``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

import redis
from django.db import DataError, IntegrityError, connections, router, transaction

from jobqueue.brokers.redis import codec
from jobqueue.brokers.redis.client import text
from jobqueue.brokers.redis.results import moment
from jobqueue.conf import get_settings
from jobqueue.exceptions import BrokerError
from jobqueue.message import canonical_job_id
from jobqueue.states import WAITING, JobStatus

if TYPE_CHECKING:
    from jobqueue.brokers.redis.client import Transport

logger = logging.getLogger(__name__)

Row = dict[str, Any]
NOT_WRITTEN = {"resent"}  # counted by reconciliation, not carried by events


def job_model() -> Any:
    from jobqueue.models import Job

    return Job


@cache
def fields() -> list[str]:
    """The columns a whole record writes (``resent`` only as 0, in a new row)."""
    return [f.attname for f in job_model()._meta.concrete_fields if not f.primary_key]


@cache
def time_fields() -> frozenset[str]:
    return frozenset(
        f.attname
        for f in job_model()._meta.concrete_fields
        if f.get_internal_type() == "DateTimeField"
    )


def from_ms(value: str) -> datetime:
    return datetime.fromtimestamp(int(value) / 1000, UTC)


@dataclass
class Event:
    """One job's change: ``kind`` (e sent, r requeued, s started, f finished or retried,
    q back in its queue, c canceled, x purged), the version it made, and what it says."""

    kind: str
    job_id: str
    version: int
    data: dict[str, str] = field(default_factory=dict)


def parse(entry: dict[str, str]) -> list[Event]:
    """A stream entry's events, one per job (jobs sent or claimed together share an entry)."""
    kind, _, rest = entry["d"].partition("|")
    if kind == "e":
        jobs, _, run_at = rest.partition("|")
        out = []
        for job in jobs.split(","):
            job_id, version, attempts = [*job.split(":"), ""][:3]
            data = {"run_at": run_at, "attempts": attempts}
            out.append(Event("e", job_id, int(version), data))
        return out
    if kind == "s":
        jobs, started, worker = rest.split("|", 2)
        return [
            Event("s", job_id, int(token), {"attempts": n, "started": started, "worker": worker})
            for job_id, n, token in (job.split(":") for job in jobs.split(","))
        ]
    if kind == "x":
        return [
            Event("x", job_id, int(version))
            for job_id, version in (job.split(":") for job in rest.split(","))
        ]
    if kind == "f":
        job_id, status, attempts, worker, version = rest.split("|", 4)
        data = {"status": status, "attempts": attempts, "worker": worker}
        return [Event("f", job_id, int(version), {**data, "p": entry["p"], "b": entry["b"]})]
    if kind in ("q", "c"):
        job_id, attempts, version = rest.split("|")
        data = {"attempts": attempts, "p": entry.get("p", ""), "b": entry.get("b", "")}
        data["error"] = entry.get("e", "")
        return [Event(kind, job_id, int(version), data)]
    if kind == "r":
        job_id, version, now = rest.split("|")
        return [Event("r", job_id, int(version), {"now": now, "b": entry["b"]})]
    raise ValueError(f"unknown kind {kind!r}")


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


@dataclass
class Changes:
    """What a batch of events does to the Job table; each entry carries its version."""

    rows: dict[str, Row] = field(default_factory=dict)  # whole records, upserted
    patches: dict[str, Row] = field(default_factory=dict)  # columns of jobs recorded before
    missing: dict[str, Row] = field(default_factory=dict)  # whole records, if the job has none
    deletes: dict[str, int] = field(default_factory=dict)  # purged: id -> version

    def whole(self, job_id: str, row: Row) -> None:
        self.rows[job_id] = row
        self.patches.pop(job_id, None)
        self.missing.pop(job_id, None)
        self.deletes.pop(job_id, None)

    def change(self, job_id: str, version: int, columns: Row) -> None:
        target = self.rows.get(job_id)
        if target is None:
            target = self.patches.setdefault(job_id, {})
        target.update(columns, version=version)

    def delete(self, job_id: str, version: int) -> None:
        for group in (self.rows, self.patches, self.missing):
            group.pop(job_id, None)
        self.deletes[job_id] = version

    def __len__(self) -> int:
        return len(self.rows) + len(self.patches) + len(self.missing) + len(self.deletes)


class Tracker:
    """Folds a batch of events into whole rows and column patches, and writes them."""

    def record(self, job_id: str, body: str, version: int, **columns: Any) -> Row:
        """A whole row made from a signed body; one that does not verify is a failure whose
        body is not kept (nothing can send it again)."""
        message = codec.decode(job_id, body)
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

    def apply(self, events: Iterable[Event]) -> int:
        changes = Changes()
        for event in events:
            try:
                event.job_id = canonical_job_id(event.job_id)
                self.fold(event, changes)
            except (KeyError, ValueError, TypeError) as exc:
                # Only what Redis holds can be malformed here; the job itself is unaffected.
                logger.warning("state=untrackable event=%r error=%s", event, exc)
        if changes:
            write_changes(changes)
        return len(changes)

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
                    row.update(outcome(json.loads(data["p"])), status=data["status"])
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
            columns = outcome(json.loads(data["p"]))
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


# -- writing -------------------------------------------------------------------------------------
# What each column the events fill can hold: (max length) for text, (low, high) for integers.
LIMITS: dict[str, tuple[int, ...]] = {
    "task": (200,),
    "queue": (100,),
    "worker": (200,),
    "status": (16,),
    "priority": (-32768, 32767),
    "max_retries": (0, 32767),
    "attempts": (0, 2**31 - 1),
}


def fit(job_id: str, columns: Row) -> Row:
    """``columns`` cut to what the table can hold; what was cut is said in ``error``."""
    problems = []
    for name, limit in LIMITS.items():
        value = columns.get(name)
        if value is None:
            continue
        if len(limit) == 1:
            if len(value) > limit[0]:
                problems.append(f"{name} longer than {limit[0]} characters")
                columns[name] = value[: limit[0]]
        elif not limit[0] <= value <= limit[1]:
            problems.append(f"{name} {value} out of range {limit[0]}..{limit[1]}")
            columns[name] = min(max(value, limit[0]), limit[1])
    if problems:
        reason = "untrackable: " + "; ".join(problems)
        logger.warning("job=%s state=untrackable reason=%s", job_id, reason)
        columns["error"] = f"{reason}. {columns.get('error') or ''}".strip()
    return columns


def write_changes(changes: Changes) -> None:
    """The batch in one transaction; if the database refuses it for a value, row by row, so
    one bad row is logged and skipped and never blocks the others."""
    Job = job_model()
    for group in (changes.rows, changes.missing, changes.patches):
        for job_id, columns in group.items():
            fit(job_id, columns)
    connection = connections[router.db_for_write(Job)]
    try:
        with transaction.atomic(using=connection.alias):
            write_all(connection, changes)
    except (DataError, IntegrityError):
        for job_id in {*changes.rows, *changes.missing, *changes.patches, *changes.deletes}:
            one = Changes(
                rows=pick(changes.rows, job_id),
                patches=pick(changes.patches, job_id),
                missing=pick(changes.missing, job_id),
                deletes={job_id: changes.deletes[job_id]} if job_id in changes.deletes else {},
            )
            try:
                with transaction.atomic(using=connection.alias):
                    write_all(connection, one)
            except (DataError, IntegrityError) as exc:
                logger.warning("job=%s state=untrackable error=%s (skipped)", job_id, exc)


def pick(group: dict[str, Row], job_id: str) -> dict[str, Row]:
    return {job_id: group[job_id]} if job_id in group else {}


def write_all(connection: Any, changes: Changes) -> None:
    upsert(connection, changes.rows, overwrite=True)
    upsert(connection, changes.missing, overwrite=False)
    update(connection, changes.patches)
    delete(connection, changes.deletes)


def upsert(connection: Any, rows: dict[str, Row], *, overwrite: bool) -> None:
    """``INSERT ... ON CONFLICT (id) DO UPDATE ... WHERE row older``, the batch at once: on
    PostgreSQL with psycopg 3 through ``COPY`` into a temporary table, elsewhere one prepared
    statement run for every row (``executemany``)."""
    if not rows:
        return
    Job = job_model()
    names = fields()
    q = connection.ops.quote_name
    table = q(Job._meta.db_table)
    columns = ", ".join(q(c) for c in ("id", *names))
    conflict = f"ON CONFLICT ({q('id')}) " + (
        "DO UPDATE SET "
        + ", ".join(f"{q(c)} = EXCLUDED.{q(c)}" for c in names if c not in NOT_WRITTEN)
        + f" WHERE {table}.{q('version')} < EXCLUDED.{q('version')}"
        if overwrite
        else "DO NOTHING"
    )
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and uses_psycopg3():
            stage = q(Job._meta.db_table + "_stage")
            cursor.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} (LIKE {table})")
            with cursor.copy(f"COPY {stage} ({columns}) FROM STDIN") as copy:
                for job_id, row in rows.items():
                    copy.write_row([job_id, *(row[f] for f in names)])
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage} {conflict}"  # noqa: S608
            )
            cursor.execute(f"TRUNCATE {stage}")
            return
        placeholders = ", ".join(["%s"] * (len(names) + 1))
        cursor.executemany(
            f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) {conflict}",  # noqa: S608
            [db_values(connection, job_id, row, names) for job_id, row in rows.items()],
        )


def uses_psycopg3() -> bool:
    """Whether PostgreSQL is reached through psycopg 3 (it has ``COPY`` from Python rows); only
    asked on PostgreSQL, whose driver is then installed."""
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return is_psycopg3


def update(connection: Any, patches: dict[str, Row]) -> None:
    """``UPDATE ... WHERE id = %s AND version < %s`` of the columns each patch names; one
    ``executemany`` per set of columns."""
    q = connection.ops.quote_name
    table = q(job_model()._meta.db_table)
    groups: dict[tuple[str, ...], list[tuple[str, Row]]] = {}
    for job_id, columns in patches.items():
        groups.setdefault(tuple(sorted(columns)), []).append((job_id, columns))
    with connection.cursor() as cursor:
        for names, members in groups.items():
            assignments = ", ".join(f"{q(c)} = %s" for c in names)
            params = []
            for job_id, columns in members:
                pk, *values = db_values(connection, job_id, columns, names)
                params.append([*values, pk, columns["version"]])
            cursor.executemany(
                f"UPDATE {table} SET {assignments} "  # noqa: S608
                f"WHERE {q('id')} = %s AND {q('version')} < %s",
                params,
            )


def delete(connection: Any, deletes: dict[str, int]) -> None:
    if not deletes:
        return
    q = connection.ops.quote_name
    table = q(job_model()._meta.db_table)
    pk = job_model()._meta.pk
    with connection.cursor() as cursor:
        cursor.executemany(
            f"DELETE FROM {table} WHERE {q('id')} = %s AND {q('version')} < %s",  # noqa: S608
            [
                [pk.get_db_prep_value(uuid.UUID(job_id), connection), version]
                for job_id, version in deletes.items()
            ],
        )


def db_values(connection: Any, job_id: str, row: Row, names: Iterable[str]) -> list[Any]:
    """The id, then ``row``'s values of ``names``, as the database driver takes them."""
    pk = job_model()._meta.pk
    assert pk is not None
    adapt_time = time_adapter(connection)
    times = time_fields()
    return [
        pk.get_db_prep_value(uuid.UUID(job_id), connection),
        *(adapt_time(row[f]) if f in times else row[f] for f in names),
    ]


def time_adapter(connection: Any) -> Any:
    """Django's adaptation of a datetime for this connection; on SQLite in UTC the same text,
    made without a time zone database lookup per value (tracking adapts thousands a batch)."""
    adapt = connection.ops.adapt_datetimefield_value
    if connection.vendor != "sqlite" or connection.timezone_name != "UTC":
        return adapt

    def utc_text(value: datetime | None) -> str | None:
        if value is None or value.tzinfo is None:
            return adapt(value)
        return str(value.astimezone(UTC).replace(tzinfo=None))

    return utc_text


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
            if not transport.client.set(transport.key("tracker"), token, nx=True, px=self.LOCK_MS):
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
                except (KeyError, ValueError, TypeError) as exc:
                    logger.warning("state=untrackable entry=%r error=%s", entry, exc)
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
            self.tracker.apply(self.with_bodies(superseded_dropped(events)))
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
