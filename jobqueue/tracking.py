"""The Job table, written in batches from a broker's event stream.

A broker that keeps its queues elsewhere (Redis) appends an event for every change of a job's
state; whoever syncs (workers, every half second; the admin, before it lists) folds a batch of
events in memory and writes it without reading a row first. An event that carries the whole
record (a job sent, or finished) upserts the row; one that does not (started, back in its queue,
canceled) updates only the columns it changes. On PostgreSQL the records travel by ``COPY``, so
tracking costs the database little more than the writes themselves. Replaying an event is
harmless.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import connections, router, transaction

from jobqueue.message import Message, canonical_job_id
from jobqueue.models import Job
from jobqueue.states import WAITING, JobStatus

logger = logging.getLogger(__name__)

FIELDS = [f.attname for f in Job._meta.concrete_fields if not f.primary_key]
TIME_FIELDS = {
    f.attname for f in Job._meta.concrete_fields if f.get_internal_type() == "DateTimeField"
}

# {"d": "kind|job id|...", "p": outcome JSON, "b": message body}; see redis_scripts.
Event = Mapping[str, str]
Row = dict[str, Any]


def from_ms(value: str) -> datetime:
    return datetime.fromtimestamp(int(value) / 1000, UTC)


def from_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def one_per_job(event: dict[str, str]) -> list[dict[str, str]]:
    """The jobs sent or claimed together share one event in the stream (``e|id,id,...``,
    ``s|id:attempts,...|ms|worker``): one event each, as the tracker reads them."""
    kind, _, rest = event.get("d", "").partition("|")
    if kind == "e":
        job_ids, _, run_at = rest.partition("|")
        suffix = f"|{run_at}" if run_at else ""
        return [{"d": f"e|{job_id}{suffix}"} for job_id in job_ids.split(",")]
    if kind == "s":
        jobs, _, started_by = rest.partition("|")  # started_by: "ms|worker"
        return [
            {"d": f"s|{job_id}|{attempts}|{started_by}"}
            for job_id, _, attempts in (job.partition(":") for job in jobs.split(","))
        ]
    return [event]


def outcome(payload: dict[str, Any]) -> Row:
    """The columns a finish or cancel sets, from its JSON outcome (only the keys it has)."""
    status = payload["status"]
    columns: Row = {"status": status, "result": payload.get("result")}
    for key in ("error", "traceback"):
        columns[key] = payload.get(key) or ""
    columns["ended_at"] = None if status in WAITING else from_iso(payload.get("ended_at"))
    for key in ("started_at", "run_at"):
        if payload.get(key):
            columns[key] = from_iso(payload[key])
    return columns


@dataclass
class Changes:
    """What a batch of events does to the Job table."""

    rows: dict[str, Row] = field(default_factory=dict)  # whole records, upserted
    patches: dict[str, Row] = field(default_factory=dict)  # columns of jobs recorded before
    missing: dict[str, Row] = field(default_factory=dict)  # whole records, if the job has none

    def whole(self, job_id: str, row: Row) -> None:
        self.rows[job_id] = row
        self.patches.pop(job_id, None)
        self.missing.pop(job_id, None)

    def change(self, job_id: str, columns: Row) -> None:
        if job_id in self.rows:
            self.rows[job_id].update(columns)
        else:
            self.patches.setdefault(job_id, {}).update(columns)


class Tracker:
    """Folds a batch of events into whole rows and column patches, and writes them."""

    def __init__(self, decode: Callable[[str, str], Message]) -> None:
        self.decode = decode  # (job id, message body) -> Message

    def record(self, job_id: str, body: str, **columns: Any) -> Row:
        """A whole row made from a message body, then ``columns``."""
        row = Job.values_from_message(self.decode(job_id, body))
        del row["id"]
        row.update(columns)
        return row

    def apply(self, events: Iterable[Event]) -> int:
        changes = Changes()
        for event in events:
            try:
                self.fold(event, changes)
            except (KeyError, ValueError, TypeError) as exc:
                # Only what Redis holds can be malformed here; the job itself is unaffected.
                logger.warning("state=untrackable event=%r error=%s", event, exc)
        if changes.rows or changes.patches or changes.missing:
            connection = connections[router.db_for_write(Job)]
            with transaction.atomic(using=connection.alias):
                write(connection, changes.rows, overwrite=True)
                write(connection, changes.missing, overwrite=False)
                update(connection, changes.patches)
        return len(changes.rows) + len(changes.patches)

    def fold(self, event: Event, changes: Changes) -> None:
        kind, _, rest = event["d"].partition("|")
        fields = rest.split("|", 3 if kind in ("s", "f") else 1)
        job_id = canonical_job_id(fields[0])
        if kind in ("e", "f"):
            if not event.get("b"):
                return  # finished meanwhile: its finish event carries the record
            row = self.record(job_id, event["b"])
            if kind == "e" and len(fields) > 1:
                row.update(status=JobStatus.SCHEDULED, run_at=from_ms(fields[1]))
            elif kind == "f":
                _, status, attempts, worker = fields
                row.update(outcome(json.loads(event["p"])))
                row.update(status=status, attempts=int(attempts), worker=worker)
            changes.whole(job_id, row)
        elif kind == "s":
            _, attempts, started, worker = fields
            changes.change(
                job_id,
                {
                    "status": JobStatus.STARTED,
                    "worker": worker,
                    "attempts": int(attempts),
                    "started_at": from_ms(started),
                },
            )
        elif kind == "q":
            columns: Row = {"status": JobStatus.QUEUED, "worker": ""}
            if len(fields) > 1:
                columns["attempts"] = int(fields[1])
            changes.change(job_id, columns)
        elif kind == "c":
            columns = {**outcome(json.loads(event["p"])), "attempts": int(fields[1])}
            if job_id not in changes.rows:
                changes.missing[job_id] = self.record(job_id, event.get("b", ""), **columns)
            changes.change(job_id, columns)
        else:
            raise ValueError(f"unknown kind {kind!r}")


def write(connection: Any, rows: dict[str, Row], *, overwrite: bool) -> None:
    """``INSERT ... ON CONFLICT (id)`` of whole rows, the batch at once: on PostgreSQL with
    psycopg 3 through ``COPY`` into a temporary table, elsewhere one prepared statement run for
    every row (``executemany``, a C loop in-process on SQLite)."""
    if not rows:
        return
    q = connection.ops.quote_name
    table = q(Job._meta.db_table)
    columns = ", ".join(q(c) for c in ("id", *FIELDS))
    conflict = f"ON CONFLICT ({q('id')}) " + (
        "DO UPDATE SET " + ", ".join(f"{q(c)} = EXCLUDED.{q(c)}" for c in FIELDS)
        if overwrite
        else "DO NOTHING"
    )
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and uses_psycopg3():
            stage = q(Job._meta.db_table + "_stage")
            cursor.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} (LIKE {table})")
            with cursor.copy(f"COPY {stage} ({columns}) FROM STDIN") as copy:
                for job_id, row in rows.items():
                    copy.write_row([job_id, *(row[f] for f in FIELDS)])
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage} {conflict}"  # noqa: S608
            )
            cursor.execute(f"TRUNCATE {stage}")
            return
        placeholders = ", ".join(["%s"] * (len(FIELDS) + 1))
        cursor.executemany(
            f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) {conflict}",  # noqa: S608
            [db_values(connection, job_id, row, FIELDS) for job_id, row in rows.items()],
        )


def uses_psycopg3() -> bool:
    """Whether PostgreSQL is reached through psycopg 3 (it has ``COPY`` from Python rows); only
    asked on PostgreSQL, whose driver is then installed."""
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return is_psycopg3


def update(connection: Any, patches: dict[str, Row]) -> None:
    """``UPDATE`` of the columns each patch names; one ``executemany`` per set of columns."""
    q = connection.ops.quote_name
    groups: dict[tuple[str, ...], list[tuple[str, Row]]] = {}
    for job_id, columns in patches.items():
        groups.setdefault(tuple(sorted(columns)), []).append((job_id, columns))
    with connection.cursor() as cursor:
        for names, members in groups.items():
            assignments = ", ".join(f"{q(c)} = %s" for c in names)
            params = []
            for job_id, columns in members:
                pk, *values = db_values(connection, job_id, columns, names)
                params.append([*values, pk])
            cursor.executemany(
                f"UPDATE {q(Job._meta.db_table)} SET {assignments} WHERE {q('id')} = %s",  # noqa: S608
                params,
            )


def db_values(connection: Any, job_id: str, row: Row, names: Iterable[str]) -> list[Any]:
    """The id, then ``row``'s values of ``names``, as the database driver takes them."""
    pk = Job._meta.pk
    assert pk is not None
    adapt_time = connection.ops.adapt_datetimefield_value
    return [
        pk.get_db_prep_value(uuid.UUID(job_id), connection),
        *(adapt_time(row[f]) if f in TIME_FIELDS else row[f] for f in names),
    ]
