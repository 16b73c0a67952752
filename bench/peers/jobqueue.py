"""jobqueue itself, through its public API: ``noop.delay()``, ``noop.map()``, ``jobworker``.

Configs: ``redis`` (the Redis broker; the Job table, written by tracking, in PostgreSQL),
``db-postgresql`` and ``db-sqlite`` (the database broker), ``tasks-postgresql`` and
``tasks-sqlite`` (the database broker behind Django's tasks framework: ``@task`` functions sent
with ``.enqueue()`` through ``jobqueue.backend.JobQueueBackend``). jobqueue's settings are its
defaults. The worker serves the one queue the jobs go to, as every peer's does.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from bench.peers.common import BATCH, Adapter, client


class JobqueueAdapter(Adapter):
    env = "jobqueue"
    configs = {
        "redis": "Redis broker, tracking on (Job table in PostgreSQL)",
        "redis-untracked": "Redis broker, tracking off (JOBQUEUE['TRACKING'] = False)",
        "db-postgresql": "database broker, PostgreSQL",
        "db-sqlite": "database broker, SQLite",
        "tasks-postgresql": "django.tasks through JobQueueBackend, database broker, PostgreSQL",
        "tasks-sqlite": "django.tasks through JobQueueBackend, database broker, SQLite",
    }

    def __init__(self, config: str) -> None:
        super().__init__(config)
        broker, _, db = config.partition("-")
        self.framework = broker == "tasks"
        self.broker = "redis" if broker == "redis" else "database"
        self.tracking = db != "untracked"
        self.db = db if db in ("postgresql", "sqlite") else "postgresql"
        self.uses_redis = self.broker == "redis"
        if self.broker == "database":
            self.poll_interval = 0.025
        os.environ["BENCH_BROKER"] = self.broker
        os.environ["BENCH_DB"] = self.db
        os.environ["BENCH_TRACKING"] = "1" if self.tracking else "0"
        os.environ["BENCH_FRAMEWORK"] = "1" if self.framework else "0"
        os.environ["DJANGO_SETTINGS_MODULE"] = "bench.jq_settings"

    def setup(self) -> None:
        import django

        django.setup()
        from bench.jqapp.tasks import noop, stamp

        self.noop, self.stamp = noop, stamp
        if self.framework:
            from bench.jqapp import ftasks

            self.ftasks = ftasks
            # Django's tasks framework has no bulk enqueue: a drain's queue is filled one
            # .enqueue() at a time, inside transactions of BATCH (one commit each).
            self.has_bulk = False
            self.max_drain_n = 5_000

    def prepare(self) -> None:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)

    def reset(self) -> None:
        from django.db import connection

        client().flushall()  # the broker's keys, and the bench's counter and stamps
        tables = ["jobqueue_job", "jobqueue_worker", "jobqueue_outbox"]
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(f"TRUNCATE {', '.join(tables)}")
            else:
                for table in tables:
                    cursor.execute(f"DELETE FROM {table}")

    def enqueue_one(self) -> None:
        if self.framework:
            self.ftasks.noop.enqueue()
        else:
            self.noop.delay()

    def fill(self, n: int) -> None:
        if self.has_bulk:
            self.enqueue_bulk(n)
            return
        from django.db import transaction

        for start in range(0, n, BATCH):
            with transaction.atomic():
                for _ in range(min(BATCH, n - start)):
                    self.enqueue_one()

    def enqueue_bulk(self, n: int) -> None:
        noop = self.noop
        for start in range(0, n, BATCH):
            noop.map([()] * min(BATCH, n - start))

    def send_stamp(self, i: int) -> None:
        if self.framework:
            self.ftasks.stamp.enqueue(i)
        else:
            self.stamp.delay(i)

    def remaining(self) -> int:
        if self.uses_redis:
            # Waiting and running messages both live in the msg hash until finished.
            return int(client().hlen("{jobqueue}:msg"))
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM jobqueue_job WHERE status IN ('queued', 'started')"
            )
            return int(cursor.fetchone()[0])

    def tracked(self) -> int | None:
        if not self.uses_redis or not self.tracking:
            return None
        from jobqueue.models import Job

        return Job.objects.filter(status="succeeded").count()

    def sync(self) -> None:
        if self.uses_redis:
            from jobqueue.brokers import get_broker

            get_broker().sync()

    def memory_after_sync(self) -> int | None:
        if not self.uses_redis:
            return None
        self.sync()
        return int(client().info("memory")["used_memory"])

    def worker(self, procs: int) -> tuple[list[str], dict[str, Any]]:
        argv = [sys.executable, "-m", "django", "jobworker", "default", "--concurrency", str(procs)]
        return argv, {}


ADAPTER = JobqueueAdapter
