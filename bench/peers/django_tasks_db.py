"""django-tasks-db: the database backend of the django-tasks package (Django's tasks framework),
run by its ``db_worker`` on PostgreSQL or SQLite. P processes are P ``db_worker`` instances;
an idle worker polls every 0.05 s (``--interval``; the default is 1 s)."""

from __future__ import annotations

import os
import sys
from typing import Any

from bench.peers.common import BATCH, Adapter, client

INTERVAL = os.environ.get("BENCH_DTDB_INTERVAL", "0.05")


class DjangoTasksDbAdapter(Adapter):
    env = "django-tasks-db"
    configs = {"postgresql": "db_worker, PostgreSQL", "sqlite": "db_worker, SQLite"}
    uses_redis = False
    poll_interval = 0.025

    def __init__(self, config: str) -> None:
        super().__init__(config)
        os.environ["BENCH_DB"] = config
        os.environ["DJANGO_SETTINGS_MODULE"] = "bench.dtdb_settings"

    def setup(self) -> None:
        import django

        django.setup()
        from bench import dtdb_tasks

        self.tasks = dtdb_tasks

    def prepare(self) -> None:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)

    def reset(self) -> None:
        from django.db import connection

        client().flushall()
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("TRUNCATE django_tasks_database_dbtaskresult")
            else:
                cursor.execute("DELETE FROM django_tasks_database_dbtaskresult")

    def enqueue_one(self) -> None:
        self.tasks.noop.enqueue()

    has_bulk = False
    max_drain_n = 2_000  # at most a few hundred jobs/s: more would only lengthen the fill

    def fill(self, n: int) -> None:
        from django.db import transaction

        for start in range(0, n, BATCH):  # one commit per BATCH: the fill is not measured
            with transaction.atomic():
                for _ in range(min(BATCH, n - start)):
                    self.enqueue_one()

    def send_stamp(self, i: int) -> None:
        self.tasks.stamp.enqueue(i)

    def remaining(self) -> int:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM django_tasks_database_dbtaskresult "
                "WHERE status IN ('READY', 'RUNNING')"
            )
            return int(cursor.fetchone()[0])

    def worker(self, procs: int) -> tuple[list[str], dict[str, Any]]:
        argv = [
            sys.executable,
            "-m",
            "django",
            "db_worker",
            "--interval",
            INTERVAL,
            "--no-startup-delay",
            "--queue-name",
            "default",
        ]
        return argv, {}

    def worker_instances(self, procs: int) -> int:
        return procs


ADAPTER = DjangoTasksDbAdapter
