"""The Job table, written in batches from a broker's event stream.

A broker that keeps its queues elsewhere (Redis) appends an event for every change of a job's
state; whoever calls ``Tracker.sync`` (workers, every half second; the admin, before it lists)
folds a batch of events into one SELECT and one upsert, so tracking costs the database a few
statements per thousand jobs, not several per job. Replaying an event is harmless.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from django.db import connections, router, transaction

from jobqueue.message import Message
from jobqueue.models import Job
from jobqueue.states import WAITING, JobStatus

logger = logging.getLogger(__name__)

FIELDS = [f.attname for f in Job._meta.concrete_fields if not f.primary_key]
TIME_FIELDS = {
    f.attname for f in Job._meta.concrete_fields if f.get_internal_type() == "DateTimeField"
}


def from_ms(value: Any) -> datetime | None:
    ms = int(value or 0)
    return datetime.fromtimestamp(ms / 1000, UTC) if ms else None


def from_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class Tracker:
    """Applies events ``{"k": kind, "i": job id, ...}`` (see jobqueue.brokers.redis_scripts).

    Rows travel as plain dicts and are written with one raw upsert: at thousands of jobs a
    second, building model instances would cost more than the database does."""

    def __init__(self, decode: Callable[[str, str], Message]) -> None:
        self.decode = decode  # (job id, message body) -> Message

    def apply(self, events: Iterable[dict[str, str]]) -> int:
        changes: dict[str, list[dict[str, str]]] = {}
        for event in events:
            try:
                job_id = str(uuid.UUID(event["i"]))
            except (KeyError, ValueError):
                logger.warning("state=untrackable event=%r", event)
                continue
            changes.setdefault(job_id, []).append(event)
        if not changes:
            return 0
        with transaction.atomic():
            existing = (
                Job.objects.filter(id__in=list(changes)).order_by().values_list("id", *FIELDS)
            )
            rows = {
                str(values[0]): dict(zip(FIELDS, values[1:], strict=True)) for values in existing
            }
            updated = {}
            for job_id, job_events in changes.items():
                row = rows.get(job_id)
                for event in job_events:
                    row = self.fold(job_id, row, event)
                if row is not None:
                    updated[job_id] = row
            upsert(updated)
        return len(updated)

    def fold(
        self, job_id: str, row: dict[str, Any] | None, event: dict[str, str]
    ) -> dict[str, Any] | None:
        """The row after ``event``; a job first seen without its enqueue event is made from the
        message body the event carries, so even a malformed message leaves a record."""
        kind = event.get("k")
        if kind == "e" or (row is None and event.get("b")):
            message = self.decode(job_id, event.get("b", ""))
            status = event.get("s", JobStatus.QUEUED)
            fresh = Job.values_from_message(message, status=status)
            fresh["run_at"] = (from_ms(event.get("r")) if kind == "e" else None) or fresh["run_at"]
            if row is None or kind == "e":
                row = fresh  # an "e" for a known job is a requeue: it starts afresh
        if row is None:
            return None
        if kind == "s":
            row.update(
                status=JobStatus.STARTED,
                worker=event["w"],
                attempts=int(event["a"]),
                started_at=from_ms(event["t"]),
            )
        elif kind == "q":
            row.update(status=JobStatus.QUEUED, worker="")
            if "a" in event:
                row["attempts"] = int(event["a"])
        elif kind in ("f", "c"):
            payload = json.loads(event["p"])
            status = event.get("s", payload["status"])
            row.update(
                status=status,
                result=payload.get("result"),
                error=payload.get("error", ""),
                traceback=payload.get("traceback", ""),
                started_at=from_iso(payload.get("started_at")) or row["started_at"],
                ended_at=None if status in WAITING else from_iso(payload.get("ended_at")),
                run_at=from_iso(payload.get("run_at")) or row["run_at"],
            )
            if "a" in event:
                row["attempts"] = int(event["a"])
        return row


def upsert(rows: dict[str, dict[str, Any]]) -> None:
    """``INSERT ... ON CONFLICT (id) DO UPDATE`` of whole rows, the batch in one statement: on
    PostgreSQL one array per column (``unnest``), elsewhere one prepared statement run for every
    row (``executemany``, a C loop in-process on SQLite)."""
    if not rows:
        return
    connection = connections[router.db_for_write(Job)]
    q = connection.ops.quote_name
    pk = Job._meta.pk
    assert pk is not None
    columns = ", ".join(q(c) for c in ("id", *FIELDS))
    conflict = f"ON CONFLICT ({q('id')}) DO UPDATE SET " + ", ".join(
        f"{q(c)} = EXCLUDED.{q(c)}" for c in FIELDS
    )
    table = q(Job._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            types = [Job._meta.get_field(f).db_type(connection) for f in ("id", *FIELDS)]
            arrays = ", ".join(f"%s::{t}[]" for t in types)
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays}) {conflict}",  # noqa: S608
                [
                    [uuid.UUID(i) for i in rows],
                    *([row[f] for row in rows.values()] for f in FIELDS),
                ],
            )
            return
        adapt_time = connection.ops.adapt_datetimefield_value
        placeholders = ", ".join(["%s"] * (len(FIELDS) + 1))
        cursor.executemany(
            f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) {conflict}",  # noqa: S608
            [
                [
                    pk.get_db_prep_value(uuid.UUID(job_id), connection),
                    *(adapt_time(row[f]) if f in TIME_FIELDS else row[f] for f in FIELDS),
                ]
                for job_id, row in rows.items()
            ],
        )
