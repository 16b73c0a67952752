"""What the scheduler costs: database queries and Redis commands per tick, for N schedules and
M schedulers (one per worker supervisor).

    python -m bench.schedules --schedules 10 --workers 3 --ticks 5 [--broker database|redis]

The M schedulers run in this process, one after another at each tick, as M supervisors would
(the order decides which one sends; the others lose the race), against a fresh SQLite file
(``BENCH_DB=postgresql`` for the local PostgreSQL, database ``bench_jobqueue``) and, for the Redis
broker, a private ``redis-server``. Every schedule is due every second. Queries are counted with
a connection wrapper, Redis commands with ``INFO stats`` (the INFO itself subtracted).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any


class Counter:
    def __init__(self) -> None:
        self.queries = 0

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        self.queries += 1
        return execute(sql, params, many, context)


def measure(broker: Any, counter: Counter, step: Any) -> tuple[Any, int, int]:
    """``step()``'s result, and the queries and Redis commands it took."""
    client = getattr(broker, "client", None)
    before = client.info("stats")["total_commands_processed"] if client else 0
    queries = counter.queries
    result = step()
    after = client.info("stats")["total_commands_processed"] - 1 if client else 0
    return result, counter.queries - queries, after - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=10)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--broker", choices=("database", "redis"), default="database")
    args = parser.parse_args()

    from bench.services import RedisServer

    server = RedisServer().start() if args.broker == "redis" else None
    workdir = Path(tempfile.mkdtemp(prefix="bench-schedules-"))
    os.environ.setdefault("BENCH_DB", "sqlite")
    os.environ["BENCH_SQLITE_PATH"] = str(workdir / "db.sqlite3")
    os.environ["BENCH_BROKER"] = args.broker
    if server:
        os.environ["BENCH_REDIS_URL"] = server.url
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.jq_settings"
    try:
        run(args)
    finally:
        if server:
            server.stop()


def run(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from jobqueue.brokers import get_broker
    from jobqueue.models import Job, Schedule, ScheduleTick
    from jobqueue.scheduler import Scheduler, send

    call_command("migrate", verbosity=0)
    Schedule.objects.all().delete()
    ScheduleTick.objects.all().delete()
    Job.objects.all().delete()
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=args.ticks + 5)
    for i in range(args.schedules):
        Schedule.objects.create(
            name=f"s{i}", task="bench.jqapp.tasks.noop", interval=1, since=base
        )
    broker = get_broker()
    schedulers = [Scheduler() for _ in range(args.workers)]
    counter = Counter()
    rows = []
    with connection.execute_wrapper(counter):
        for k in range(1, args.ticks + 1):
            tick = base + timedelta(seconds=k)
            passes = [
                measure(broker, counter, partial(s.run_once, tick + timedelta(seconds=0.2)))
                for s in schedulers
            ]
            idle = partial(schedulers[0].run_once, tick + timedelta(seconds=0.6))
            _, idle_q, idle_c = measure(broker, counter, idle)
            rows.append((passes, idle_q, idle_c))
        # A scheduler that read the schedule before another sent its tick, and tries it too.
        stale = Schedule.objects.get(name="s0")
        stale.last_tick = None
        last = base + timedelta(seconds=args.ticks)
        lost, race_q, race_c = measure(broker, counter, partial(send, stale, last))
        assert lost is None
    sent = ScheduleTick.objects.count()
    assert sent == args.schedules * args.ticks, f"{sent} jobs for {args.ticks} ticks"

    n, m = args.schedules, args.workers
    print(f"broker={args.broker} db={connection.vendor} schedules={n} schedulers={m} "
          f"ticks={args.ticks}: {sent} jobs, one per schedule and tick")
    print("tick  jobs  queries(all schedulers)  redis(all)  queries(sender)  queries(each other)"
          "  idle pass: queries redis")
    for k, (passes, idle_q, idle_c) in enumerate(rows, 1):
        jobs = sum(p[0] for p in passes)
        sender = passes[0]
        others = passes[1:]
        other_q = sum(p[1] for p in others) / len(others) if others else 0
        print(f"{k:>4}  {jobs:>4}  {sum(p[1] for p in passes):>23}  "
              f"{sum(p[2] for p in passes):>10}  {sender[1]:>15}  {other_q:>19.1f}  "
              f"{idle_q:>17} {idle_c:>5}")
    total_q = sum(sum(p[1] for p in passes) for passes, _, _ in rows) / args.ticks
    total_c = sum(sum(p[2] for p in passes) for passes, _, _ in rows) / args.ticks
    print(f"a scheduler losing the race for a tick: {race_q} queries, {race_c} Redis commands")
    print(f"per tick: {total_q:.1f} queries ({total_q / n:.1f} per schedule), "
          f"{total_c:.1f} Redis commands ({total_c / n:.1f} per schedule)")


if __name__ == "__main__":
    main()
