"""How long a Redis job's outcome takes to reach its Job row while workers drain a queue.

    DATABASE=postgresql python -m bench.tracking_lag [N]     (default N = 5,000; SQLite without)

Starts a private redis-server, a database of its own (``tracking_lag`` on the local PostgreSQL,
or a file), sends N no-op jobs, starts ``jobworker --concurrency 2``, and polls the Job table
every 10 ms: a job's lag is the time its row was first seen ``succeeded`` minus its ``ended_at``
(the end of its run, on the worker). Prints p50, p99 and the maximum.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def main(n: int) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.redis_server import serve

    with tempfile.TemporaryDirectory() as tmp, serve(Path(tmp) / "redis") as server:
        env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", PYTHONPATH=str(ROOT))
        env["JOBQUEUE_TEST_REDIS_URL"] = server.url
        if env.get("DATABASE") == "postgresql":
            env["JOBQUEUE_TEST_DB_NAME"] = "tracking_lag"
            subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists",
                            "tracking_lag"], check=True)
            subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", "tracking_lag"],
                           check=True)
        else:
            env["JOBQUEUE_TEST_DB_NAME"] = str(Path(tmp) / "lag.sqlite3")
        os.environ.update(env)
        import django

        django.setup()
        from django.core.management import call_command

        from jobqueue.models import Job
        from tests.testapp.tasks import add

        call_command("migrate", verbosity=0)
        add.map([(i, i) for i in range(n)])
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "jobworker", "--concurrency", "2"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        seen: dict[str, float] = {}
        began = time.monotonic()
        try:
            while len(seen) < n and time.monotonic() - began < 300:
                now = time.time()
                for job_id, ended in Job.objects.filter(status="succeeded").values_list(
                    "id", "ended_at"
                ):
                    if str(job_id) not in seen:
                        seen[str(job_id)] = now - ended.timestamp()
                time.sleep(0.01)
        finally:
            worker.terminate()
            worker.wait()
        lags = [max(lag, 0.0) * 1000 for lag in seen.values()]
        drained = time.monotonic() - began
        print(f"{len(lags)} of {n} jobs recorded in {drained:.1f} s; lag from a job's end to its "
              f"row: p50 {percentile(lags, 0.5):.0f} ms, p99 {percentile(lags, 0.99):.0f} ms, "
              f"max {max(lags):.0f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
