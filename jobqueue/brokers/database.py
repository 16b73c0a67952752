"""The database broker: the Job table is the queue.

A claim is one ``UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING`` statement: on PostgreSQL
the subquery takes ``FOR UPDATE SKIP LOCKED`` so concurrent workers skip each other's rows; on
SQLite the single statement takes the write lock at once (WAL and a busy timeout are set up in
``jobqueue.sqlite``), so no transaction ever has to upgrade a read lock and fail with "database is
locked". On PostgreSQL an idle worker sleeps in ``LISTEN`` and a trigger notifies it when a job
becomes queued; on SQLite it polls every ``POLL_INTERVAL`` seconds.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from typing import Any

from django.db import connections, transaction
from django.db.models import Case, CharField, DateTimeField, F, Func, Q, Value, When
from django.db.models.functions import Cast, Concat

from jobqueue.brokers.base import Broker, Outcome, announce, announcing, worker_lost_error
from jobqueue.conf import get_settings
from jobqueue.exceptions import BrokerError
from jobqueue.message import Lease, Message
from jobqueue.models import Job, JobAttempt
from jobqueue.states import JobStatus

CHANNEL = "jobqueue"
_CLAIMED_COLUMNS = (
    "id",
    "task",
    "arguments",
    "queue",
    "priority",
    "attempts",
    "max_retries",
    "timeout",
    "version",
    "run_at",
)
LEASE_CHUNK = 200  # leases matched per statement (one OR-ed condition each)
LOST_LEASE = "its worker stopped renewing its lease"


class DbNow(Func):
    """The database's clock, plus ``seconds``: leases and due times never depend on the clock of
    the host a worker runs on."""

    output_field = DateTimeField()

    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__()
        self.seconds = float(seconds)

    def as_sql(self, compiler: Any, connection: Any, *args: Any, **extra: Any) -> Any:
        return now_sql(connection, self.seconds)


def now_sql(connection: Any, seconds: float = 0.0) -> tuple[str, list[Any]]:
    """SQL for the database's clock plus ``seconds``, and its parameters."""
    if connection.vendor == "sqlite":
        # The format Django stores datetimes in; text comparison orders it correctly.
        return "STRFTIME('%%Y-%%m-%%d %%H:%%M:%%f', 'now', %s)", [f"{seconds:+f} seconds"]
    if connection.vendor == "postgresql":
        return "(STATEMENT_TIMESTAMP() + make_interval(secs => %s))", [seconds]
    return "(CURRENT_TIMESTAMP + INTERVAL %s SECOND)", [seconds]


_claim_statements: dict[str, str] = {}


def _claim_sql(connection: Any) -> str:
    """The claim statement for this connection's database, built once per vendor."""
    if connection.vendor not in _claim_statements:
        _claim_statements[connection.vendor] = _build_claim_sql(connection)
    return _claim_statements[connection.vendor]


def _build_claim_sql(connection: Any) -> str:
    """Only quoted identifiers from the model are formatted in; every value is a parameter.
    Parameters: status, worker, the lease's seconds, the queued status, queue, limit."""
    q = connection.ops.quote_name
    table = q(Job._meta.db_table)
    skip_locked = connection.features.has_select_for_update_skip_locked
    lock = " FOR UPDATE SKIP LOCKED" if skip_locked else ""
    columns = ", ".join(q(c) for c in _CLAIMED_COLUMNS)
    now, _ = now_sql(connection)
    return (
        f"UPDATE {table} SET {q('status')} = %s, {q('worker')} = %s, "  # noqa: S608
        f"{q('attempts')} = {q('attempts')} + 1, {q('version')} = {q('version')} + 1, "
        f"{q('started_at')} = {now}, {q('lease_expires_at')} = {now} "
        f"WHERE {q('id')} IN (SELECT {q('id')} FROM {table} WHERE {q('status')} = %s "
        f"AND {q('queue')} = %s ORDER BY {q('priority')} DESC, {q('run_at')}, {q('id')} "
        f"LIMIT %s{lock}) "
        f"RETURNING {columns}"
    )


def _finish_sql(connection: Any, rows: int) -> str:
    """One statement for a batch of outcomes, each applied only if its token is current. A
    retry's due time is its delay counted from the database's clock (the worker's run_at only
    where the database cannot count it); one whose time has come is queued at once, at the
    back (its run_at, its place in the queue, becomes now)."""
    q = connection.ops.quote_name
    table = q(Job._meta.db_table)
    pg = connection.vendor == "postgresql"
    uuid_, time_, int_, float_ = (
        ("::uuid", "::timestamptz", "::bigint", "::float8") if pg else ("", "", "", "")
    )
    row = f"(%s{uuid_}, %s{int_}, %s, %s, %s, %s, %s{time_}, %s{time_}, %s{time_}, %s{float_})"
    columns = ("status", "result", "error", "traceback", "started_at", "ended_at")
    assignments = ", ".join(f"{q(c)} = v.{q(c)}" for c in columns if c != "status")
    now, _ = now_sql(connection)
    delay, run_at = f"v.{q('delay')}", f"v.{q('run_at')}"
    if pg:
        due = f"(STATEMENT_TIMESTAMP() + make_interval(secs => {delay}))"
    elif connection.vendor == "sqlite":
        due = f"STRFTIME('%%Y-%%m-%%d %%H:%%M:%%f', 'now', printf('%%+f seconds', {delay}))"
    else:
        due = run_at
    due = f"(CASE WHEN {delay} IS NULL THEN {run_at} ELSE {due} END)"
    return (
        f"WITH v ({q('id')}, {q('token')}, {', '.join(q(c) for c in columns)}, "  # noqa: S608
        f"{q('run_at')}, {q('delay')}) AS (VALUES {', '.join([row] * rows)}) "
        f"UPDATE {table} SET {assignments}, "
        f"{q('status')} = CASE WHEN v.{q('status')} = %s AND {due} <= {now} "
        f"THEN %s ELSE v.{q('status')} END, "
        f"{q('run_at')} = CASE WHEN {due} <= {now} THEN {now} "
        f"ELSE COALESCE({due}, {table}.{q('run_at')}) END, "
        f"{q('lease_expires_at')} = NULL, {q('version')} = {table}.{q('version')} + 1 "
        f"FROM v WHERE {table}.{q('id')} = v.{q('id')} "
        f"AND {table}.{q('version')} = v.{q('token')} AND {table}.{q('status')} = %s "
        f"RETURNING {table}.{q('id')}"
    )


def _held(leases: Sequence[Lease]) -> Q:
    """Rows still held under these leases: started, with the claim's token."""
    match = Q()
    for lease in leases:
        match |= Q(id=lease.job_id, version=lease.token)
    return match & Q(status=JobStatus.STARTED)


def _canonical(job_id: str) -> str:
    return str(uuid.UUID(job_id))


def _chunks(leases: Sequence[Lease]) -> Iterator[Sequence[Lease]]:
    for i in range(0, len(leases), LEASE_CHUNK):
        yield leases[i : i + LEASE_CHUNK]


class DatabaseBroker(Broker):
    def __init__(self) -> None:
        self._listener: Any = None

    @property
    def _connection(self) -> Any:
        return connections[self.db_alias()]

    def enqueue(self, messages: Sequence[Message]) -> None:
        if len(messages) == 1:
            # One INSERT in autocommit; bulk_create would wrap it in BEGIN ... COMMIT.
            Job.from_message(messages[0]).save(force_insert=True)
        else:
            self._allow_sqlite_parameters()
            Job.objects.bulk_create([Job.from_message(m) for m in messages])

    def _allow_sqlite_parameters(self) -> None:
        """Django assumes SQLite's old limit of 999 parameters per statement, which splits a
        bulk send of 48 jobs; the library in use says how many it takes (32,766 since 3.32).
        Django 6 asks the library itself (a property), and is left alone."""
        connection = self._connection
        if isinstance(getattr(type(connection.features), "max_query_params", None), property):
            return
        if connection.vendor == "sqlite" and not getattr(connection, "_jobqueue_limit", False):
            connection.ensure_connection()
            limit = connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            connection.features.max_query_params = max(limit, 999)
            connection._jobqueue_limit = True

    def claim(self, queues: Sequence[str], worker: str, limit: int) -> list[Message]:
        claimed: list[Message] = []
        for queue in queues:
            claimed += self._claim_from(queue, worker, limit - len(claimed))
            if len(claimed) >= limit:
                break
        return claimed

    def _claim_from(self, queue: str, worker: str, limit: int) -> list[Message]:
        connection = self._connection
        params = [
            JobStatus.STARTED.value,
            worker,
            *now_sql(connection)[1],
            *now_sql(connection, get_settings().LEASE_TIMEOUT)[1],
            JobStatus.QUEUED.value,
            queue,
            limit,
        ]
        with connection.cursor() as cursor:
            cursor.execute(_claim_sql(connection), params)
            rows = cursor.fetchall()
        # RETURNING gives no order: restore priority, then place in the queue.
        rows.sort(key=lambda row: (-row[4], row[9], str(row[0])))
        return [
            Message(
                id=str(uuid.UUID(str(row[0]))),
                task=row[1],
                arguments=row[2],
                queue=row[3],
                priority=row[4],
                attempts=row[5],
                max_retries=row[6],
                timeout=row[7],
                token=row[8],
            )
            for row in rows
        ]

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        listener = self._get_listener()
        if listener is None:
            time.sleep(min(timeout, get_settings().POLL_INTERVAL))
            return
        try:
            if list(listener.notifies(timeout=timeout, stop_after=1)):
                # Drain what else arrived: one wake-up serves any number of jobs.
                list(listener.notifies(timeout=0))
        except listener.Error as exc:
            self.close()
            raise BrokerError(f"lost the LISTEN connection: {exc}") from exc

    def _get_listener(self) -> Any:
        """A dedicated autocommit psycopg 3 connection that LISTENs; None where there is none."""
        if self._listener is not None and not self._listener.closed:
            return self._listener
        connection = self._connection
        if connection.vendor != "postgresql" or connection.Database.__name__ != "psycopg":
            return None
        params = connection.get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        listener = connection.Database.connect(**params, autocommit=True)
        listener.execute(f"LISTEN {CHANNEL}")
        self._listener = listener
        return listener

    def finish(self, worker: str, outcomes: Sequence[Outcome]) -> int:
        """One ``UPDATE ... FROM (VALUES ...)`` for the whole batch; an outcome whose token is no
        longer the job's (canceled, recovered, finished already) changes nothing."""
        if not outcomes:
            return 0
        connection = self._connection
        adapt = connection.ops.adapt_datetimefield_value
        pk = Job._meta.pk
        assert pk is not None
        params: list[Any] = []
        for o in outcomes:
            retry = o.status == JobStatus.SCHEDULED
            params += [
                pk.get_db_prep_value(uuid.UUID(o.job_id), connection),
                o.token,
                o.status.value,
                o.result,
                o.error,
                o.traceback,
                adapt(o.started_at),
                None if retry else adapt(o.ended_at),
                adapt(o.run_at) if retry else None,
                o.delay if retry else None,
            ]
        now = now_sql(connection)[1]
        params += [JobStatus.SCHEDULED.value, *now, JobStatus.QUEUED.value, *now, *now]
        params.append(JobStatus.STARTED.value)
        # Only a batch with a failure pays for a transaction: its attempts are stored with it.
        failed = [o for o in outcomes if o.status in (JobStatus.FAILED, JobStatus.SCHEDULED)]
        alias = self.db_alias()
        with transaction.atomic(using=alias) if failed else nullcontext():
            with connection.cursor() as cursor:
                cursor.execute(_finish_sql(connection, len(outcomes)), params)
                rows = cursor.fetchall()  # rowcount is -1 for a WITH statement on SQLite
            if failed or announcing(type(self)):  # which were taken: only if it matters
                taken = {str(uuid.UUID(str(row[0]))) for row in rows}
                if failed:
                    self._record_failures([o for o in failed if _canonical(o.job_id) in taken])
                finals = [o for o in outcomes if o.final and _canonical(o.job_id) in taken]
                announce(type(self), ((o.job_id, o.task, o.status) for o in finals), alias)
        return len(rows)

    @staticmethod
    def _record_failures(outcomes: Sequence[Outcome]) -> None:
        """An attempt row for each failed run just stored (in its transaction): the number and
        worker of the claim it ran under, read from the row it finished."""
        if not outcomes:
            return
        claims = {
            str(job_id): (attempts, worker)
            for job_id, attempts, worker in Job.objects.filter(
                id__in=[o.job_id for o in outcomes]
            ).values_list("id", "attempts", "worker")
        }
        JobAttempt.objects.bulk_create(
            [
                JobAttempt(
                    job_id=o.job_id,
                    number=claims[_canonical(o.job_id)][0],
                    version=o.token + 1,
                    worker=claims[_canonical(o.job_id)][1],
                    error=o.error,
                    traceback=o.traceback,
                    started_at=o.started_at,
                    ended_at=o.ended_at,
                )
                for o in outcomes
            ],
            ignore_conflicts=True,
        )

    def release(self, worker: str, leases: Sequence[Lease], *, lost: str = "") -> int:
        taken = 0
        for chunk in _chunks(list(leases)):
            rows = Job.objects.filter(_held(chunk))
            if lost:
                taken += self._lose(chunk, rows, lost)
            else:
                # Never started: the attempt is given back, and run_at (its place) is kept.
                taken += rows.update(
                    status=JobStatus.QUEUED,
                    worker="",
                    lease_expires_at=None,
                    started_at=None,
                    attempts=F("attempts") - 1,
                    version=F("version") + 1,
                )
        return taken

    def _lose(self, leases: Sequence[Lease], rows: Any, lost: str) -> int:
        """Runs that may have happened ended without an outcome: the poison-pill rule. ``rows``
        are those of ``leases`` still held (and, for recovery, expired). Each is recorded as a
        failed attempt in the same transaction, read from the row it left (its worker and start
        kept until then). One statement per lease, so what is recorded is exactly what this
        changed, never a row a finish with the same token changed meanwhile: losing runs is rare."""
        head, tail = worker_lost_error(lost)
        error = Concat(Value(head), Cast("attempts", CharField()), Value(tail))
        dead = Q(attempts__gt=F("max_retries"), attempts__gte=2)
        changes = {
            "status": Case(
                When(dead, then=Value(JobStatus.FAILED.value)),
                default=Value(JobStatus.QUEUED.value),
            ),
            "error": Case(
                When(dead, then=error),
                default=Value(f"WorkerLost: its worker process died ({lost})"),
            ),
            "traceback": "",
            "ended_at": Case(When(dead, then=DbNow()), default=None),
            "run_at": Case(When(dead, then=F("run_at")), default=DbNow()),  # back of the queue
            "lease_expires_at": None,
            "version": F("version") + 1,
        }
        alias = self.db_alias()
        with transaction.atomic(using=alias):
            ids = [
                lease.job_id for lease in leases if rows.filter(id=lease.job_id).update(**changes)
            ]
            if not ids:
                return 0
            runs = list(
                Job.objects.filter(id__in=ids).values(
                    "id",
                    "task",
                    "status",
                    "attempts",
                    "worker",
                    "error",
                    "started_at",
                    "version",
                    now=DbNow(),
                )
            )
            JobAttempt.objects.bulk_create(
                [
                    JobAttempt(
                        job_id=run["id"],
                        number=run["attempts"],
                        version=run["version"],
                        worker=run["worker"],
                        error=run["error"],
                        started_at=run["started_at"],
                        ended_at=run["now"],
                    )
                    for run in runs
                ],
                ignore_conflicts=True,
            )
            # A job back in its queue shows no worker and no start, as one never run.
            requeued = [run["id"] for run in runs if run["status"] == JobStatus.QUEUED]
            if requeued:
                Job.objects.filter(id__in=requeued).update(worker="", started_at=None)
        announce(
            type(self),
            (
                (str(run["id"]), run["task"], run["status"])
                for run in runs
                if run["status"] == JobStatus.FAILED
            ),
            alias,
        )
        return len(ids)

    def renew(self, worker: str, leases: Sequence[Lease]) -> set[str]:
        lost = {lease.job_id for lease in leases}
        for chunk in _chunks(list(leases)):
            rows = Job.objects.filter(_held(chunk))
            rows.update(lease_expires_at=DbNow(get_settings().LEASE_TIMEOUT))
            lost -= {str(job_id) for job_id in rows.values_list("id", flat=True)}
        return lost

    def promote_due(self) -> int:
        return Job.objects.filter(status=JobStatus.SCHEDULED, run_at__lte=DbNow()).update(
            status=JobStatus.QUEUED, version=F("version") + 1
        )

    def recover(self) -> int:
        """The expired leases are read first, then lost as ``release(lost=...)`` loses them,
        fenced by their tokens and still expired (a lease renewed meanwhile is kept)."""
        expired = [
            Lease(str(job_id), token)
            for job_id, token in Job.objects.filter(
                status=JobStatus.STARTED, lease_expires_at__lt=DbNow()
            ).values_list("id", "version")
        ]
        recovered = 0
        for chunk in _chunks(expired):
            rows = Job.objects.filter(_held(chunk), lease_expires_at__lt=DbNow())
            recovered += self._lose(chunk, rows, LOST_LEASE)
        return recovered

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
