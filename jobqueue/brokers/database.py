"""The database broker: the Job table is the queue.

A claim is one ``UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING`` statement: on PostgreSQL
the subquery takes ``FOR UPDATE SKIP LOCKED`` so concurrent workers skip each other's rows; on
SQLite the single statement takes the write lock at once (WAL and a busy timeout are set up in
``jobqueue.sqlite``), so no transaction ever has to upgrade a read lock and fail with "database is
locked".

How an idle worker learns of a job without polling the table:

- PostgreSQL: a trigger notifies (``NOTIFY jobqueue``) when a job becomes queued. Of the idle
  processes serving the same queues, only one listens: the one holding an advisory lock, which
  the others wait for. It claims what the notification announced before it lets the lock go, so
  one job wakes one process; the next holder looks for queued jobs before it sleeps, so none
  sent in between is missed.
- SQLite: every commit writes to the write-ahead log; an idle worker sleeps on the log file
  (inotify) and reads the database's ``data_version``, which changes when another connection
  has committed, then looks (a read, no lock) for a queued job and for the next due time of a
  scheduled one, which it promotes when it comes. Where the file cannot be watched, the data
  version is read every ``POLL_INTERVAL`` seconds.

Either way a worker looks again at least once per wait's timeout: a wake-up lost is only late.
On SQLite its claims and promotions are skipped while nothing was written since a look found
nothing to do (the data version and the connection's own change count say so).
"""

from __future__ import annotations

import sqlite3
import time
import uuid
import zlib
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from datetime import datetime
from typing import Any

from django.db import connections, transaction
from django.db.models import Case, CharField, DateTimeField, F, Func, Q, Value, When
from django.db.models.functions import Cast, Concat

from jobqueue.brokers.base import Broker, Outcome, announce, announcing, worker_lost_error
from jobqueue.brokers.filewatch import FileWatch
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
# A write to SQLite's log is seen before its commit is (the commit ends after the write, and its
# fsync): the data version is read again after these pauses, seconds (every millisecond for a
# while, then less and less often).
SETTLE = (0.0005,) * 4 + (0.001,) * 30 + (0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128)
LISTENER_LOCK = zlib.crc32(b"jobqueue.listener") - 2**31  # the advisory lock's first key
LOCK_SQL = "SELECT pg_advisory_lock(%s::integer, %s::integer)"
UNLOCK_SQL = "SELECT pg_advisory_unlock(%s::integer, %s::integer)"


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


# Fields whose values a database driver takes as they are: no conversion by the field.
PLAIN_FIELDS = frozenset(
    (
        "CharField",
        "TextField",
        "SmallIntegerField",
        "IntegerField",
        "BigIntegerField",
        "PositiveSmallIntegerField",
        "PositiveIntegerField",
        "PositiveBigIntegerField",
        "FloatField",
    )
)
_insert_statements: dict[str, tuple[str, list[tuple[str, Any, Any]]]] = {}


def _insert(connection: Any) -> tuple[str, list[tuple[str, Any, Any]]]:
    """The INSERT of one Job row for this connection's database, built once, and for each
    column: the field's name, the field where its value needs the field's own conversion (all
    but plain strings and numbers: ids, times, and whatever a later column holds), and its
    default."""
    if connection.vendor not in _insert_statements:
        q = connection.ops.quote_name
        fields = Job._meta.concrete_fields
        columns = [
            (
                field.attname,
                None if field.get_internal_type() in PLAIN_FIELDS else field,
                field.get_default,
            )
            for field in fields
        ]
        sql = (
            f"INSERT INTO {q(Job._meta.db_table)} "  # noqa: S608
            f"({', '.join(q(f.column) for f in fields)}) "
            f"VALUES ({', '.join(['%s'] * len(fields))})"
        )
        _insert_statements[connection.vendor] = (sql, columns)
    return _insert_statements[connection.vendor]


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
        self._lock_timeout = 0  # the listener's lock_timeout, milliseconds
        self._watch: FileWatch | None = None
        self._unwatched = False  # the database's file cannot be watched
        # SQLite: what the last look found, and under which mark (see _quiet).
        self._quiet: tuple[Any, frozenset[str], float] | None = None

    @property
    def _connection(self) -> Any:
        return connections[self.db_alias()]

    def enqueue(self, messages: Sequence[Message]) -> None:
        if len(messages) == 1:
            # One INSERT in autocommit (bulk_create would wrap it in BEGIN ... COMMIT), built
            # once: the ORM's save compiles the statement anew each time, a third of the call.
            connection = self._connection
            sql, columns = _insert(connection)
            values = Job.values_from_message(messages[0])
            params = [values[name] if name in values else default() for name, _, default in columns]
            for i, (_, field, _) in enumerate(columns):
                if field is not None:
                    params[i] = field.get_db_prep_save(params[i], connection=connection)
            self._insert_one(connection, sql, params)
        else:
            self._allow_sqlite_parameters()
            Job.objects.bulk_create([Job.from_message(m) for m in messages])

    @staticmethod
    def _insert_one(connection: Any, sql: str, params: list[Any]) -> None:
        """On psycopg 3, bound on the server: half the client's work of Django's cursor, which
        composes the statement on the client. Anywhere else, and where queries are logged or
        wrapped (DEBUG, instrumentation), Django's own cursor."""
        if (
            connection.vendor == "postgresql"
            and connection.Database.__name__ == "psycopg"
            and not connection.execute_wrappers
            and not connection.queries_logged
        ):
            connection.close_if_health_check_failed()
            connection.ensure_connection()
            connection.validate_no_broken_transaction()
            # Django's cursors bind on the client; this one binds on the server. psycopg
            # honours the connection's prepare_threshold (None: never prepare, for poolers).
            with connection.wrap_database_errors:
                connection.Database.Cursor(connection.connection).execute(sql, params, prepare=True)
            return
        with connection.cursor() as cursor:
            cursor.execute(sql, params)

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
        if self._quiet is not None and self._still_quiet(queues):
            return []  # nothing was queued, and nothing has been written since
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
        self.wait_and_claim(queues, "", 0, timeout)

    def wait_and_claim(
        self, queues: Sequence[str], worker: str, limit: int, timeout: float
    ) -> list[Message]:
        """Sleep until a job of ``queues`` may be runnable (or ``timeout`` seconds), then claim;
        ``limit`` 0 only waits."""
        connection = self._connection
        if connection.vendor == "sqlite":
            self._wait_sqlite(queues, timeout)
        elif (listener := self._get_listener()) is not None:
            return self._wait_listening(listener, queues, worker, limit, timeout)
        else:
            time.sleep(min(timeout, get_settings().POLL_INTERVAL))
        return self.claim(queues, worker, limit) if limit else []

    # -- PostgreSQL: one listener per set of queues ----------------------------------------------
    def _wait_listening(
        self, listener: Any, queues: Sequence[str], worker: str, limit: int, timeout: float
    ) -> list[Message]:
        """Wait for the listener's lock, then listen: the lock makes this the one idle process
        of its queues that a notification wakes. It claims before it lets the lock go, so the
        next holder, which looks before it sleeps, finds only jobs sent since."""
        deadline = time.monotonic() + timeout
        key = zlib.crc32(",".join(sorted(queues)).encode()) - 2**31
        try:
            if not self._take_lock(listener, key, timeout):
                return self.claim(queues, worker, limit) if limit else []  # the fallback
            try:
                listener.execute(f"LISTEN {CHANNEL}")
                list(listener.notifies(timeout=0))  # for earlier jobs: the look below sees them
                if self._queued(listener, queues):
                    claimed = self.claim(queues, worker, limit) if limit else []
                    if claimed or not limit:
                        return claimed
                    # Queued, yet none could be claimed (rows locked by another transaction):
                    # wait for news rather than look again at once.
                remaining = max(0.0, deadline - time.monotonic())
                list(listener.notifies(timeout=remaining, stop_after=1))
                return self.claim(queues, worker, limit) if limit else []
            finally:
                listener.execute("UNLISTEN *")
                listener.execute(UNLOCK_SQL, (LISTENER_LOCK, key))
        except listener.Error as exc:
            self.close()
            raise BrokerError(f"lost the LISTEN connection: {exc}") from exc

    def _take_lock(self, listener: Any, key: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the listener's lock of these queues."""
        milliseconds = max(1, int(timeout * 1000))
        if self._lock_timeout != milliseconds:
            listener.execute(f"SET lock_timeout = {milliseconds}")
            self._lock_timeout = milliseconds
        try:
            listener.execute(LOCK_SQL, (LISTENER_LOCK, key))
        except listener.Error as exc:
            if getattr(exc, "sqlstate", None) == "55P03":  # lock_not_available: timed out
                return False
            raise
        return True

    def _queued(self, listener: Any, queues: Sequence[str]) -> bool:
        q = self._connection.ops.quote_name
        sql = (
            f"SELECT EXISTS (SELECT 1 FROM {q(Job._meta.db_table)} "  # noqa: S608
            f"WHERE {q('status')} = 'queued' AND {q('queue')} = ANY(%s))"
        )
        return bool(listener.execute(sql, (list(queues),)).fetchone()[0])

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
        self._listener = connection.Database.connect(**params, autocommit=True)
        self._lock_timeout = 0
        return self._listener

    # -- SQLite: the write-ahead log, watched --------------------------------------------------
    def _wait_sqlite(self, queues: Sequence[str], timeout: float) -> None:
        """Return when a job of ``queues`` is queued, once ``timeout`` seconds have passed, or
        after promoting scheduled jobs that became due (a due time is known from each look)."""
        connection = self._connection
        connection.ensure_connection()
        watch = self._get_watch(connection)
        deadline = time.monotonic() + timeout
        # Writes seen before the look may belong to commits not yet visible to it.
        settle = iter(SETTLE if watch is not None and watch.drain() else ())
        mark = self._mark(connection)
        queued, due_at = self._look(queues)
        self._quiet = None if queued else (mark, frozenset(queues), due_at)
        promoted_nothing = False
        while not queued:
            now = time.monotonic()
            if now >= due_at:
                self._quiet = None
                if self.promote_due():
                    return
                # Due by the look, yet not by the promotion's own comparison (a clock's
                # rounding): once more a moment later, then only on news or at the timeout.
                due_at = float("inf") if promoted_nothing else now + 0.005
                promoted_nothing = True
                continue
            if now >= deadline:
                return
            pause = min(deadline, due_at) - now
            if watch is None:
                time.sleep(min(pause, get_settings().POLL_INTERVAL))
            else:
                step = next(settle, None)
                if watch.wait(pause if step is None else min(pause, step)):
                    settle = iter(SETTLE)
            latest = self._mark(connection)
            if latest != mark:
                mark = latest
                queued, due_at = self._look(queues)
                self._quiet = None if queued else (mark, frozenset(queues), due_at)

    def _get_watch(self, connection: Any) -> FileWatch | None:
        if self._watch is None and not self._unwatched:
            if not connection.is_in_memory_db():
                name = str(connection.settings_dict["NAME"])
                # The log in WAL mode; the file itself and its journal in any other.
                self._watch = FileWatch.open(name, (name, f"{name}-wal", f"{name}-journal"))
            self._unwatched = self._watch is None
        return self._watch

    def _mark(self, connection: Any) -> tuple[Any, int, int]:
        """Changes whenever anything was committed to the database: the connection itself,
        another connection's commits (the data version), this connection's own changes."""
        raw = connection.connection
        return (raw, self._data_version(connection), raw.total_changes)

    def _still_quiet(self, queues: Sequence[str] = ()) -> bool:
        """Whether the last look found none of ``queues`` queued, and nothing was written
        since: a claim (or a promotion before the due time it found) would change nothing."""
        assert self._quiet is not None
        mark, empty, _ = self._quiet
        connection = self._connection
        if connection.connection is not mark[0] or not empty.issuperset(queues):
            return False
        if self._mark(connection) == mark:
            return True
        self._quiet = None
        return False

    @staticmethod
    def _data_version(connection: Any) -> int:
        """Changes whenever another connection has committed to the database."""
        with connection.wrap_database_errors:
            return int(connection.connection.execute("PRAGMA data_version").fetchone()[0])

    def _look(self, queues: Sequence[str]) -> tuple[bool, float]:
        """In one read: whether a job of ``queues`` is queued, and when (``time.monotonic()``)
        the next scheduled job is due by the database's clock (infinity if none is)."""
        connection = self._connection
        q = connection.ops.quote_name
        table = q(Job._meta.db_table)
        marks = ", ".join(["%s"] * len(queues))
        now, now_params = now_sql(connection)
        # Each through its partial index: without statistics SQLite would pick the status
        # index and walk every queued (or scheduled) row.
        sql = (
            f"SELECT EXISTS (SELECT 1 FROM {table} INDEXED BY {q('jobqueue_job_claim')} "  # noqa: S608
            f"WHERE {q('status')} = 'queued' AND {q('queue')} IN ({marks})), "
            f"(SELECT MIN({q('run_at')}) FROM {table} INDEXED BY {q('jobqueue_job_due')} "
            f"WHERE {q('status')} = 'scheduled'), {now}"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [*queues, *now_params])
            queued, due, clock = cursor.fetchone()
        if due is None:
            return bool(queued), float("inf")
        wait = (datetime.fromisoformat(due) - datetime.fromisoformat(clock)).total_seconds()
        # A millisecond more: the database's clock counts in milliseconds.
        return bool(queued), time.monotonic() + max(0.0, wait) + 0.001

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
        if self._quiet is not None and self._still_quiet() and time.monotonic() < self._quiet[2]:
            return 0  # nothing is due yet, and nothing has been written since
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
        self._quiet = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._watch is not None:
            self._watch.close()
            self._watch = None
