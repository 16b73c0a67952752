"""The database broker: the Job table is the queue.

A claim is one ``UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING`` statement: on PostgreSQL
the subquery takes ``FOR UPDATE SKIP LOCKED`` so concurrent workers skip each other's rows; on
SQLite the single statement takes the write lock at once (WAL and a busy timeout are set up in
``jobqueue.sqlite``), so no transaction ever has to upgrade a read lock and fail with "database is
locked". On PostgreSQL an idle worker sleeps in ``LISTEN`` and a trigger notifies it when a job
becomes queued; on SQLite it polls every ``POLL_INTERVAL`` seconds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.db import connections
from django.db.models import F
from django.utils import timezone

from jobqueue.brokers.base import Broker, Outcome
from jobqueue.conf import get_settings
from jobqueue.exceptions import BrokerError
from jobqueue.message import Message
from jobqueue.models import Job
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
)


_claim_statements: dict[str, str] = {}


def _claim_sql(connection: Any) -> str:
    """The claim statement for this connection's database, built once per vendor."""
    if connection.vendor not in _claim_statements:
        _claim_statements[connection.vendor] = _build_claim_sql(connection)
    return _claim_statements[connection.vendor]


def _build_claim_sql(connection: Any) -> str:
    """Only quoted identifiers from the model are formatted in; every value is a parameter."""
    q = connection.ops.quote_name
    table = q(Job._meta.db_table)
    skip_locked = connection.features.has_select_for_update_skip_locked
    lock = " FOR UPDATE SKIP LOCKED" if skip_locked else ""
    columns = ", ".join(q(c) for c in _CLAIMED_COLUMNS)
    return (
        f"UPDATE {table} SET {q('status')} = %s, {q('worker')} = %s, "  # noqa: S608
        f"{q('attempts')} = {q('attempts')} + 1, {q('started_at')} = %s, "
        f"{q('lease_expires_at')} = %s "
        f"WHERE {q('id')} IN (SELECT {q('id')} FROM {table} WHERE {q('status')} = %s "
        f"AND {q('queue')} = %s ORDER BY {q('priority')} DESC, {q('id')} LIMIT %s{lock}) "
        f"RETURNING {columns}"
    )


def _finish_sql(connection: Any, rows: int) -> str:
    q = connection.ops.quote_name
    table = q(Job._meta.db_table)
    pg = connection.vendor == "postgresql"
    uuid_, time_ = ("::uuid", "::timestamptz") if pg else ("", "")
    row = f"(%s{uuid_}, %s, %s, %s, %s, %s{time_}, %s{time_}, %s{time_})"
    columns = ("status", "result", "error", "traceback", "started_at", "ended_at")
    assignments = ", ".join(f"{q(c)} = v.{q(c)}" for c in columns)
    return (
        f"WITH v ({q('id')}, {', '.join(q(c) for c in columns)}, {q('run_at')}) "  # noqa: S608
        f"AS (VALUES {', '.join([row] * rows)}) "
        f"UPDATE {table} SET {assignments}, "
        f"{q('run_at')} = COALESCE(v.{q('run_at')}, {table}.{q('run_at')}), "
        f"{q('lease_expires_at')} = NULL "
        f"FROM v WHERE {table}.{q('id')} = v.{q('id')} "
        f"AND {table}.{q('status')} = %s AND {table}.{q('worker')} = %s"
    )


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
            Job.objects.bulk_create([Job.from_message(m) for m in messages])

    def claim(self, queues: Sequence[str], worker: str, limit: int) -> list[Message]:
        claimed: list[Message] = []
        for queue in queues:
            claimed += self._claim_from(queue, worker, limit - len(claimed))
            if len(claimed) >= limit:
                break
        return claimed

    def _claim_from(self, queue: str, worker: str, limit: int) -> list[Message]:
        connection = self._connection
        ops = connection.ops
        now = timezone.now()
        lease = now + timedelta(seconds=get_settings().LEASE_TIMEOUT)
        params = [
            JobStatus.STARTED.value,
            worker,
            ops.adapt_datetimefield_value(now),
            ops.adapt_datetimefield_value(lease),
            JobStatus.QUEUED.value,
            queue,
            limit,
        ]
        with connection.cursor() as cursor:
            cursor.execute(_claim_sql(connection), params)
            rows = cursor.fetchall()
        messages = [
            Message(
                id=str(uuid.UUID(str(row[0]))),
                task=row[1],
                arguments=row[2],
                queue=row[3],
                priority=row[4],
                attempts=row[5],
                max_retries=row[6],
                timeout=row[7],
            )
            for row in rows
        ]
        # RETURNING gives no order; ids grow with time, so this restores priority-then-FIFO.
        messages.sort(key=lambda m: (-m.priority, m.id))
        return messages

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

    def finish(self, worker: str, outcomes: Sequence[Outcome]) -> None:
        """One ``UPDATE ... FROM (VALUES ...)`` for the whole batch; rows this worker no longer
        holds (canceled, or re-leased after a lost heartbeat) are left alone."""
        if not outcomes:
            return
        connection = self._connection
        adapt = connection.ops.adapt_datetimefield_value
        pk = Job._meta.pk
        assert pk is not None
        now = timezone.now()
        params: list[Any] = []
        for o in outcomes:
            retry = o.status == JobStatus.SCHEDULED
            status = JobStatus.QUEUED if retry and o.run_at and o.run_at <= now else o.status
            params += [
                pk.get_db_prep_value(uuid.UUID(o.job_id), connection),
                status.value,
                o.result,
                o.error,
                o.traceback,
                adapt(o.started_at),
                None if retry else adapt(o.ended_at),
                adapt(o.run_at) if retry else None,
            ]
        params += [JobStatus.STARTED.value, worker]
        with connection.cursor() as cursor:
            cursor.execute(_finish_sql(connection, len(outcomes)), params)

    def release(
        self, worker: str, job_ids: Sequence[str] | None = None, *, count_attempt: bool = False
    ) -> int:
        rows = Job.objects.filter(status=JobStatus.STARTED, worker=worker)
        if job_ids is not None:
            rows = rows.filter(id__in=list(job_ids))
        changes: dict[str, Any] = {
            "status": JobStatus.QUEUED,
            "worker": "",
            "lease_expires_at": None,
            "started_at": None,
        }
        if not count_attempt:
            changes["attempts"] = F("attempts") - 1
        return rows.update(**changes)

    def renew(self, workers: Sequence[str]) -> None:
        lease = timezone.now() + timedelta(seconds=get_settings().LEASE_TIMEOUT)
        Job.objects.filter(status=JobStatus.STARTED, worker__in=list(workers)).update(
            lease_expires_at=lease
        )

    def promote_due(self) -> int:
        return Job.objects.filter(status=JobStatus.SCHEDULED, run_at__lte=timezone.now()).update(
            status=JobStatus.QUEUED
        )

    def recover(self) -> int:
        return Job.objects.filter(
            status=JobStatus.STARTED, lease_expires_at__lt=timezone.now()
        ).update(status=JobStatus.QUEUED, worker="", lease_expires_at=None, started_at=None)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
