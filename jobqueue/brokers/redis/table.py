"""Writing the Job table from what a batch of events does to it: whole records upserted, column
patches, deletions, each conditional on the row being older than the event
(``... WHERE version < new``), so replayed, reordered or concurrent writes cannot take a row back.

A value the table cannot hold is cut to fit with the reason in ``error``; a row the database
still refuses is logged and skipped: it never blocks the others. On PostgreSQL the records
travel by ``COPY``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from django.db import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    connections,
    router,
    transaction,
)

logger = logging.getLogger(__name__)

Row = dict[str, Any]
NOT_WRITTEN = {"resent"}  # counted by reconciliation, not carried by events


@cache
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


@dataclass
class Changes:
    """What a batch of events does to the Job table; each entry carries its version."""

    rows: dict[str, Row] = field(default_factory=dict)  # whole records, upserted
    patches: dict[str, Row] = field(default_factory=dict)  # columns of jobs recorded before
    missing: dict[str, Row] = field(default_factory=dict)  # whole records, if the job has none
    deletes: dict[str, int] = field(default_factory=dict)  # purged: id -> version
    # Failed attempts, by (id, number), and jobs whose attempts before a version are forgotten
    # (requeued or purged): id -> version.
    attempts: dict[tuple[str, int], Row] = field(default_factory=dict)
    forgotten: dict[str, int] = field(default_factory=dict)

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

    def attempt(self, job_id: str, version: int, attempt: Row) -> None:
        self.attempts[(job_id, attempt["number"])] = {**attempt, "version": version}

    def forget_attempts(self, job_id: str, version: int) -> None:
        """Attempts older than ``version`` go: those folded already, and those recorded."""
        for key in [k for k, row in self.attempts.items() if k[0] == job_id]:
            if self.attempts[key]["version"] < version:
                del self.attempts[key]
        self.forgotten[job_id] = max(version, self.forgotten.get(job_id, 0))

    def __len__(self) -> int:
        return (
            len(self.rows)
            + len(self.patches)
            + len(self.missing)
            + len(self.deletes)
            + len(self.attempts)
            + len(self.forgotten)
        )


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


# Columns whose text comes from a run (the signed body's are checked at send, its JSON escaped).
FREE_TEXT = ("error", "traceback", "result", "worker")


def fit(job_id: str, columns: Row) -> Row:
    """``columns`` cut to what the table can hold; what was cut is said in ``error``."""
    problems = []
    for name in FREE_TEXT:
        value = columns.get(name)
        if value and "\x00" in value:  # PostgreSQL's text cannot hold NUL
            problems.append(f"NUL character in {name}")
            columns[name] = value.replace("\x00", "\\x00")
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
    # A refusal of some value (from Django or the driver itself, COPY; or Python's, adapting a
    # value): row by row. Any other database error (the connection, a lock or statement timeout,
    # a missing table) is the database's: the batch waits for the next round, nothing skipped.
    driver: Any = connection.Database  # type: ignore[attr-defined]
    refused = (DataError, IntegrityError, driver.DataError, driver.IntegrityError)
    unavailable = (DatabaseError, InterfaceError, driver.DatabaseError, driver.InterfaceError)
    try:
        with transaction.atomic(using=connection.alias):
            write_all(connection, changes)
        return
    except refused as exc:
        logger.info("state=batch-refused rows=%s error=%r (row by row)", len(changes), exc)
    except unavailable:
        raise
    except Exception as exc:  # a value Python could not adapt
        logger.info("state=batch-refused rows=%s error=%r (row by row)", len(changes), exc)
    jobs = {*changes.rows, *changes.missing, *changes.patches, *changes.deletes}
    jobs |= {*changes.forgotten, *(job_id for job_id, _ in changes.attempts)}
    for job_id in jobs:
        one = Changes(
            rows=pick(changes.rows, job_id),
            patches=pick(changes.patches, job_id),
            missing=pick(changes.missing, job_id),
            deletes={job_id: changes.deletes[job_id]} if job_id in changes.deletes else {},
            attempts={k: row for k, row in changes.attempts.items() if k[0] == job_id},
            forgotten={job_id: changes.forgotten[job_id]} if job_id in changes.forgotten else {},
        )
        try:
            with transaction.atomic(using=connection.alias):
                write_all(connection, one)
        except refused as exc:
            logger.warning("job=%s state=untrackable error=%r (skipped)", job_id, exc)
        except unavailable:
            raise
        except Exception as exc:
            logger.warning("job=%s state=untrackable error=%r (skipped)", job_id, exc)


def pick(group: dict[str, Row], job_id: str) -> dict[str, Row]:
    return {job_id: group[job_id]} if job_id in group else {}


def write_all(connection: Any, changes: Changes) -> None:
    upsert(connection, changes.rows, overwrite=True)
    upsert(connection, changes.missing, overwrite=False)
    update(connection, changes.patches)
    delete(connection, changes.deletes)
    record_attempts(connection, changes.forgotten, changes.attempts)


def record_attempts(
    connection: Any, forgotten: dict[str, int], attempts: dict[tuple[str, int], Row]
) -> None:
    """Forget the attempts of jobs requeued or purged, then add the failed ones: an attempt
    recorded already (an event replayed) is left as it is."""
    from jobqueue.models import JobAttempt

    if forgotten:  # one prepared statement for them all, as ``delete`` (a purge has thousands)
        q = connection.ops.quote_name
        pk = job_model()._meta.pk
        with connection.cursor() as cursor:
            cursor.executemany(
                f"DELETE FROM {q(JobAttempt._meta.db_table)} "  # noqa: S608
                f"WHERE {q('job_id')} = %s AND {q('version')} < %s",
                [
                    [pk.get_db_prep_value(uuid.UUID(job_id), connection), version]
                    for job_id, version in forgotten.items()
                ],
            )
    if attempts:
        JobAttempt.objects.using(connection.alias).bulk_create(
            [
                JobAttempt(job_id=job_id, **fit(job_id, dict(row)))
                for (job_id, _), row in attempts.items()
            ],
            ignore_conflicts=True,
        )


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
