"""The benchmark harness: jobqueue against Celery, RQ, Dramatiq, Huey and django-tasks-db.

    python -m bench            # the full run (~20 min on 2 quiet cores), writes docs/ and READMEs
    python -m bench --quick    # ~4 min, smaller N, one repetition (for development)

Builds one virtual environment per library (bench/venvs.py), starts a private redis-server,
uses the local PostgreSQL when it answers, then measures every configuration interleaved with
jobqueue (peer A, jobqueue, peer B, jobqueue, ...), repeated, and reports medians with min/max.
Each measurement is one ``python -m bench.driver`` process in the library's own environment.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import report, services, venvs

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / ".results"


@dataclass(frozen=True)
class Config:
    peer: str  # a key of bench.driver.PEERS (and of venvs.ENVS)
    config: str
    label: str
    ref: str  # the jobqueue config it is compared with
    needs_pg: bool = False

    @property
    def key(self) -> str:
        return f"{self.peer}/{self.config}"


JQ_REDIS = Config(
    "jobqueue", "redis", "jobqueue, Redis broker (tracking on, PostgreSQL)", "redis", needs_pg=True
)
JQ_PG = Config(
    "jobqueue",
    "db-postgresql",
    "jobqueue, database broker, PostgreSQL",
    "db-postgresql",
    needs_pg=True,
)
JQ_SQLITE = Config("jobqueue", "db-sqlite", "jobqueue, database broker, SQLite", "db-sqlite")
JOBQUEUE = {c.config: c for c in (JQ_REDIS, JQ_PG, JQ_SQLITE)}
RAW = Config("raw", "blpop", "raw LPUSH → BLPOP (redis-py, no library)", "redis")

# Groups: each group's configurations run, then jobqueue's configuration they are compared with.
GROUPS: list[list[Config]] = [
    [
        Config("celery", "prefork", "Celery 5.7, prefork", "redis"),
        Config("celery", "solo", "Celery 5.7, solo (P workers)", "redis"),
        Config("rq", "simple", "RQ 3.0, SimpleWorker (P workers)", "redis"),
        Config("rq", "fork", "RQ 3.0, Worker, fork per job (P workers)", "redis"),
    ],
    [
        Config("dramatiq", "redis", "Dramatiq 2.2, -p P -t 4", "redis"),
        Config("huey", "process", "Huey 3.5, Redis, -k process -w P", "redis"),
        RAW,
        # jobqueue itself with JOBQUEUE["TRACKING"] = False: no Job table rows for Redis jobs.
        Config(
            "jobqueue",
            "redis-untracked",
            "jobqueue, Redis broker (tracking off)",
            "redis",
            needs_pg=True,
        ),
    ],
    [
        Config(
            "django-tasks-db",
            "postgresql",
            "django-tasks-db 0.13, db_worker, PostgreSQL",
            "db-postgresql",
            needs_pg=True,
        ),
        Config(
            "jobqueue",
            "tasks-postgresql",
            "jobqueue via django.tasks, database broker, PostgreSQL",
            "db-postgresql",
            needs_pg=True,
        ),
    ],
    [
        Config("django-tasks-db", "sqlite", "django-tasks-db 0.13, db_worker, SQLite", "db-sqlite"),
        Config(
            "jobqueue",
            "tasks-sqlite",
            "jobqueue via django.tasks, database broker, SQLite",
            "db-sqlite",
        ),
    ],
]
# Measured as their sibling is: Celery solo and RQ's forking Worker enqueue exactly as prefork and
# SimpleWorker do; tracking off changes nothing on the way from enqueue to start.
SAME_ENQUEUE = {"celery/solo", "rq/fork"}
SAME_LATENCY = {"jobqueue/redis-untracked"}
# The idle worker's CPU: the database-broker targets every repetition, these in the first.
IDLE_ONCE = {
    "jobqueue/redis",
    "jobqueue/db-postgresql",
    "huey/process",
    "django-tasks-db/postgresql",
    "django-tasks-db/sqlite",
}
IDLE_ALWAYS = {"jobqueue/db-sqlite"}
WAKE = {"jobqueue/db-postgresql"}  # children woken per notification, 4 idle children


def venv_of(peer: str) -> str:
    return "jobqueue" if peer == "raw" else peer


@dataclass
class Plan:
    reps: int
    enqueue_n: int
    enqueue_cap: float
    drain_n: int
    drain_cap: float
    latency_n: int  # stamp jobs at 10/s
    latency_fast_n: int  # stamp jobs at 200/s
    latency_cap: float
    idle_seconds: float
    wake_n: int
    memory_n: int
    growth: list[int]
    growth_window: int
    growth_cap: float


FULL = Plan(
    reps=3,
    enqueue_n=10_000,
    enqueue_cap=2,
    drain_n=10_000,
    drain_cap=6,
    latency_n=40,
    latency_fast_n=400,
    latency_cap=8,
    idle_seconds=10,
    wake_n=10,
    memory_n=100_000,
    growth=[1_000, 100_000, 1_000_000],
    growth_window=10_000,
    growth_cap=60,
)
QUICK = Plan(
    reps=1,
    enqueue_n=2_000,
    enqueue_cap=1.5,
    drain_n=2_000,
    drain_cap=3,
    latency_n=20,
    latency_fast_n=150,
    latency_cap=4,
    idle_seconds=3,
    wake_n=5,
    memory_n=20_000,
    growth=[1_000, 10_000, 100_000],
    growth_window=2_000,
    growth_cap=30,
)


class Harness:
    def __init__(self, args: argparse.Namespace, plan: Plan) -> None:
        self.args = args
        self.plan = plan
        self.samples: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self.errors: list[str] = []
        self.notes: list[str] = []
        self.env: dict[str, str] = {}
        self.pidfile = Path(tempfile.mkstemp(prefix="bench-pids-")[1])
        self.logdir = RESULTS / "logs"
        self.began = time.time()

    def log(self, text: str) -> None:
        print(f"[{time.time() - self.began:7.1f}s] {text}", flush=True)

    # -- one measurement -------------------------------------------------------------------
    def drive(self, c: Config, action: str, **options: Any) -> dict[str, Any] | None:
        argv = [venvs.python(venv_of(c.peer)), "-m", "bench.driver", c.peer, c.config, action]
        for name, value in options.items():
            argv += [f"--{name.replace('_', '-')}", str(value)]
        argv += ["--worker-log", str(self.logdir / f"{c.peer}-{c.config}.log")]
        cap = float(options.get("timeout", 60))
        self.pidfile.write_text("")
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **self.env, "BENCH_PIDFILE": str(self.pidfile)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        began = time.time()
        try:
            out, err = proc.communicate(timeout=cap + 120)
        except subprocess.TimeoutExpired:
            self.kill_sessions([proc.pid, *self.worker_pids()])
            out, err = proc.communicate()
            self.fail(c, action, f"timed out after {cap + 120:.0f} s")
            return None
        self.kill_sessions(self.worker_pids())  # normally gone already
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            self.fail(c, action, (err.strip().splitlines() or ["no output"])[-1])
            return None
        result = json.loads(lines[-1])
        result["wall_seconds"] = time.time() - began  # the whole driver process: the run's cost
        if action == "prepare":
            return result
        self.samples.setdefault(c.key, {}).setdefault(self.metric(action, options), []).append(
            result
        )
        return result

    @staticmethod
    def metric(action: str, options: dict[str, Any]) -> str:
        if action == "drain":
            if options.get("window"):
                return f"growth-{options['n']}"
            return f"drain-{options['procs']}"
        return action

    def worker_pids(self) -> list[int]:
        try:
            return [int(x) for x in self.pidfile.read_text().split()]
        except (OSError, ValueError):
            return []

    @staticmethod
    def kill_sessions(pids: list[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    def fail(self, c: Config, action: str, why: str) -> None:
        text = f"{c.key} {action}: {why}"
        self.errors.append(text)
        self.log(f"  ERROR {text}")

    # -- a configuration's set of measurements ------------------------------------------------
    def measure(self, c: Config, rep: int, first: bool) -> None:
        """``first``: the first time this configuration runs (jobqueue's Redis broker runs after
        two groups in every repetition): what is measured once is measured then."""
        p = self.plan
        t0 = time.time()
        if c.peer != "raw":
            # jobqueue's Redis broker runs twice a repetition: enqueueing is measured once.
            if c.key not in SAME_ENQUEUE and (first or not c.config.startswith("redis")):
                self.drive(c, "enqueue", n=p.enqueue_n, timeout=p.enqueue_cap)
                if c.peer != "django-tasks-db" and not c.config.startswith("tasks-"):
                    self.drive(c, "bulk", n=p.enqueue_n, timeout=p.enqueue_cap)
            if first and rep == 0:
                self.drive(c, "drain", n=p.drain_n, procs=1, timeout=p.drain_cap)
            result = self.drive(c, "drain", n=p.drain_n, procs=2, timeout=p.drain_cap)
            if result and result.get("count_error"):
                self.fail(c, "drain", f"the INCR counter disagrees: {result['count_error']}")
            if result and result.get("count_note"):
                self.notes.append(f"{c.key} drain: {result['count_note']}")
        if c.key not in SAME_LATENCY:
            idle = c.key in IDLE_ALWAYS or (c.key in IDLE_ONCE and first and rep == 0)
            self.drive(
                c,
                "latency",
                n=p.latency_n,
                n_fast=p.latency_fast_n,
                idle=p.idle_seconds if idle else 0,
                timeout=p.latency_cap,
            )
        if c.key in WAKE and first and rep == 0:
            self.drive(c, "wake", n=p.wake_n, procs=4, timeout=60)
        redis_peer = c.peer in ("celery", "rq", "dramatiq", "huey") or c.config.startswith("redis")
        if first and rep == 0 and redis_peer and c.key not in SAME_ENQUEUE:
            n = p.memory_n if c.peer == "jobqueue" else min(p.memory_n, 10_000)
            self.drive(c, "memory", n=n, timeout=300)
        summary = self.samples.get(c.key, {})
        d2 = (summary.get("drain-2") or [{}])[-1].get("rate")
        self.log(
            f"  {c.key}: done in {time.time() - t0:.0f} s (drain 2p {d2 and round(d2)} jobs/s)"
        )

    def growth(self) -> None:
        p = self.plan
        for depth in p.growth:
            self.log(f"growth: jobqueue/redis at depth {depth:,}")
            self.drive(
                JQ_REDIS,
                "drain",
                n=depth,
                window=min(p.growth_window, depth),
                procs=2,
                timeout=p.growth_cap,
            )

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        RESULTS.mkdir(exist_ok=True)
        self.logdir.mkdir(exist_ok=True)
        (RESULTS / ".gitignore").write_text("*\n")
        self.log("virtual environments (bench/.venvs)")
        for name in venvs.ENVS:
            venvs.ensure(name, log=self.log)
        redis = services.RedisServer().start()
        try:
            self.env = {
                "BENCH_REDIS_URL": redis.url,
                "PYTHONPATH": str(ROOT),
                "BENCH_SQLITE_PATH": str(RESULTS / "jobqueue.sqlite3"),
                "BENCH_DTDB_SQLITE_PATH": str(RESULTS / "dtdb.sqlite3"),
            }
            for f in ("jobqueue.sqlite3", "dtdb.sqlite3"):
                for suffix in ("", "-wal", "-shm"):
                    (RESULTS / (f + suffix)).unlink(missing_ok=True)
            pg = None
            if not self.args.no_postgres:
                pg = services.postgres(
                    venvs.python("jobqueue"),
                    "127.0.0.1",
                    "5432",
                    "postgres",
                    ["bench_jobqueue", "bench_django_tasks_db"],
                )
            self.log(f"redis-server {redis.version()} on {redis.url}; PostgreSQL: {pg or 'absent'}")
            groups = [[c for c in g if pg or not c.needs_pg] for g in GROUPS]
            groups = [g for g in groups if g]
            if self.args.only:
                groups = [[c for c in g if any(o in c.key for o in self.args.only)] for g in groups]
                groups = [g for g in groups if g]
            jq_redis = (
                JQ_REDIS
                if pg
                else Config(
                    "jobqueue",
                    "redis-sqlite",
                    "jobqueue, Redis broker (tracking on, SQLite)",
                    "redis-sqlite",
                )
            )
            for c in (jq_redis, JQ_PG if pg else None, JQ_SQLITE):
                if c:
                    self.drive(c, "prepare")
            for c in {c for g in groups for c in g if c.peer == "django-tasks-db"}:
                self.drive(c, "prepare")
            for c in {c for g in groups for c in g if c.config.startswith("tasks-")}:
                self.drive(c, "prepare")
            self.log("redis-benchmark (the physical reference)")
            reference = services.redis_benchmark(
                redis.port, 100_000 if self.plan.reps > 1 else 20_000
            )
            for rep in range(self.plan.reps):
                self.log(f"repetition {rep + 1} of {self.plan.reps}")
                seen: set[str] = set()
                for group in groups:
                    jq = (
                        JOBQUEUE.get(group[0].ref, jq_redis)
                        if pg or group[0].ref != "redis"
                        else jq_redis
                    )
                    for c in [*group, jq]:
                        self.log(f" {c.label}")
                        self.measure(c, rep, first=c.key not in seen)
                        seen.add(c.key)
            if not self.args.no_growth:
                self.growth()
        finally:
            redis.stop()
            self.pidfile.unlink(missing_ok=True)
        return {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join(["python -m bench", *sys.argv[1:]]),
            "quick": self.args.quick,
            "plan": self.plan.__dict__,
            "machine": machine(),
            "redis": redis.version(),
            "postgres": pg,
            "python": venvs.find_python(),
            "redis_benchmark": reference,
            "configs": {
                jq.key: {"label": jq.label, "ref": None}
                for jq in (jq_redis, JQ_PG if pg else None, JQ_SQLITE)
                if jq
            }
            | {
                c.key: {
                    "label": c.label,
                    # jobqueue's own variants are not compared with jobqueue.
                    "ref": None
                    if c.peer == "jobqueue"
                    else f"jobqueue/{c.ref}"
                    if pg or c.ref != "redis"
                    else "jobqueue/redis-sqlite",
                }
                for g in groups
                for c in g
            },
            "samples": self.samples,
            "errors": self.errors,
            "notes": self.notes,
            "seconds": time.time() - self.began,
        }


def machine() -> dict[str, Any]:
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) // 1024
    except OSError:
        pass
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), ""
            )
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "memory_mb": mem,
        "cpu": cpu,
        "kernel": platform.release(),
        "system": platform.system(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N, one repetition")
    parser.add_argument("--reps", type=int, help="repetitions (default 3; --quick: 1)")
    parser.add_argument(
        "--only",
        nargs="*",
        help="only configurations whose key contains one of these (e.g. huey celery/solo)",
    )
    parser.add_argument("--no-growth", action="store_true", help="skip the queue-depth runs")
    parser.add_argument("--no-postgres", action="store_true", help="do not use PostgreSQL")
    parser.add_argument(
        "--no-docs", action="store_true", help="write bench/.results only, not docs/benchmarks.*"
    )
    parser.add_argument("--report", type=Path, help="only rebuild the report from a results JSON")
    args = parser.parse_args()
    if args.report:
        data = json.loads(args.report.read_text())
    else:
        plan = QUICK if args.quick else FULL
        if args.reps:
            plan.reps = args.reps
        data = Harness(args, plan).run()
        RESULTS.mkdir(exist_ok=True)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = RESULTS / f"results-{stamp}.json"
        out.write_text(json.dumps(data, indent=1))
        print(f"raw results: {out}")
    summary = report.summarize(data)
    md = report.markdown(summary, data)
    print(md)
    if not args.no_docs:
        docs = ROOT / "docs"
        (docs / "benchmarks.md").write_text(md)
        report.chart(summary, docs / "benchmarks.png")
        readme = BENCH / "README.md"
        readme.write_text(report.quote_in_readme(readme.read_text(), summary, data))
        project = ROOT / "README.md"
        project.write_text(report.quote_in_project_readme(project.read_text(), summary, data))
        print(f"wrote {docs / 'benchmarks.md'}, {docs / 'benchmarks.png'} and the READMEs")


if __name__ == "__main__":
    main()
