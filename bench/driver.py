"""One measurement of one library configuration, run inside that library's virtual environment.

    python -m bench.driver PEER CONFIG ACTION [--n N] [--procs P] [--timeout S] ...

prints one JSON object on its last line of stdout. The harness (bench.run) calls this; it can
also be run by hand against a running Redis (BENCH_REDIS_URL) to debug a peer.

Actions:
  prepare   create the tables the library needs (Django migrate)
  enqueue   one producer, one call per job: jobs/s
  bulk      the library's bulk API, batches of 1000: jobs/s
  drain     pre-enqueue N, start the worker, poll the broker: jobs/s from the first job taken to
            none left (queued, prefetched or running); the worker's peak RSS
  latency   idle worker; send a stamp job, the job records when it started: p50/p95/p99
  memory    Redis used_memory before/after enqueueing N jobs: bytes per queued job
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

from bench.peers import common  # noqa: E402

PEERS = {
    "jobqueue": "bench.peers.jobqueue",
    "celery": "bench.peers.celery",
    "rq": "bench.peers.rq",
    "dramatiq": "bench.peers.dramatiq",
    "huey": "bench.peers.huey",
    "django-tasks-db": "bench.peers.django_tasks_db",
}


def load(peer: str, config: str) -> common.Adapter:
    module = importlib.import_module(PEERS[peer])
    adapter = module.ADAPTER(config)
    adapter.setup()
    return adapter


# -- process trees ---------------------------------------------------------------------------
def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree(pid: int) -> list[int]:
    kids = children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def rss_report(roots: list[int]) -> dict[str, Any]:
    """VmHWM (peak RSS) of every process of the worker trees, in MB."""
    procs = []
    for root in roots:
        for pid in tree(root):
            hwm = status_kb(pid, "VmHWM")
            if hwm:
                procs.append(
                    {
                        "pid": pid,
                        "root": pid == root,
                        "hwm_mb": hwm / 1024,
                        "cmd": cmdline(pid)[:120],
                    }
                )
    kids = [p["hwm_mb"] for p in procs if not p["root"]]
    tops = [p["hwm_mb"] for p in procs if p["root"]]
    return {
        "rss_max_mb": max([*kids, *tops], default=0.0),
        # The processes that run jobs: the children where the worker forks some, else the roots.
        "rss_job_proc_mb": max(kids) if kids else max(tops, default=0.0),
        "rss_tree_mb": sum(p["hwm_mb"] for p in procs),
        "processes": procs,
    }


class Workers:
    """The worker processes of one measurement, each in its own session, stopped for sure."""

    def __init__(self, adapter: common.Adapter, procs: int, log: Path | None) -> None:
        argv, env = adapter.worker(procs)
        self.log = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        self.popens = [
            subprocess.Popen(
                argv,
                env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                cwd=ROOT,
                stdout=self.log,
                stderr=self.log,
                start_new_session=True,
            )
            for _ in range(adapter.worker_instances(procs))
        ]
        self.started = time.time()
        pidfile = os.environ.get("BENCH_PIDFILE")
        if pidfile:  # the harness kills these sessions if this driver is itself killed
            with open(pidfile, "a") as f:
                f.write("".join(f"{p.pid}\n" for p in self.popens))

    def pids(self) -> list[int]:
        return [p.pid for p in self.popens]

    def check(self) -> None:
        for p in self.popens:
            if p.poll() is not None:
                raise RuntimeError(f"worker exited early with code {p.returncode}")

    def stop(self) -> None:
        for p in self.popens:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.time() + 8
        for p in self.popens:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.time()))
        for p in self.popens:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)  # the whole session: pool children too
            p.wait()
        if self.log is not subprocess.DEVNULL:
            self.log.close()


# -- actions ---------------------------------------------------------------------------------
def act_prepare(adapter: common.Adapter, args: argparse.Namespace) -> dict[str, Any]:
    adapter.prepare()
    return {"ok": True}


def act_enqueue(adapter: common.Adapter, args: argparse.Namespace) -> dict[str, Any]:
    adapter.reset()
    for _ in range(min(200, args.n)):  # warm up: connections, scripts, imports
        adapter.enqueue_one()
    adapter.reset()
    deadline = time.perf_counter() + args.timeout
    began = time.perf_counter()
    done = 0
    for done in range(1, args.n + 1):
        adapter.enqueue_one()
        if done % 256 == 0 and time.perf_counter() > deadline:
            break
    elapsed = time.perf_counter() - began
    adapter.reset()
    return {"rate": done / elapsed, "n": done, "seconds": elapsed, "partial": done < args.n}


def act_bulk(adapter: common.Adapter, args: argparse.Namespace) -> dict[str, Any]:
    if not adapter.has_bulk:
        return {"rate": None, "note": "no bulk API"}
    adapter.reset()
    adapter.enqueue_bulk(min(2000, args.n))
    adapter.reset()
    began = time.perf_counter()
    adapter.enqueue_bulk(args.n)
    elapsed = time.perf_counter() - began
    adapter.reset()
    return {"rate": args.n / elapsed, "n": args.n, "seconds": elapsed}


def act_drain(adapter: common.Adapter, args: argparse.Namespace) -> dict[str, Any]:
    """Pre-enqueue ``n``, start the worker, poll the broker. ``window``: stop once that many are
    done (the growth measurement: the rate while the queue is still ``n`` deep)."""
    n = args.n
    window = min(args.window or n, n)
    adapter.reset()
    t0 = time.perf_counter()
    adapter.enqueue_bulk(n) if adapter.has_bulk else [adapter.enqueue_one() for _ in range(n)]
    fill_seconds = time.perf_counter() - t0
    before = adapter.remaining()
    if before < n:
        raise RuntimeError(f"only {before} of {n} jobs queued")
    workers = Workers(adapter, args.procs, args.worker_log)
    spawned = time.perf_counter()
    first = done_at = tracked_at = None
    done = 0
    deadline = spawned + args.timeout
    result: dict[str, Any] = {}
    try:
        while True:
            now = time.perf_counter()
            left = adapter.remaining()
            done = n - left
            if first is None and left < n:
                first = now
            if done >= window:
                done_at = time.perf_counter()
                break
            if now > deadline:
                break
            if first is None:
                workers.check()
            time.sleep(adapter.poll_interval)
        if done_at is not None and window == n and adapter.tracked() is not None:
            while time.perf_counter() < deadline:
                adapter.sync()
                if adapter.tracked() >= n:
                    tracked_at = time.perf_counter()
                    break
                time.sleep(0.02)
        result.update(rss_report(workers.pids()))
    finally:
        workers.stop()
        adapter.reset()
    start = first if first is not None else spawned
    end = done_at if done_at is not None else time.perf_counter()
    span = max(end - start, 1e-9)
    result.update(
        rate=(window if done_at else done) / span,
        n=n,
        window=window,
        done=done,
        partial=done_at is None,
        seconds=span,
        startup_seconds=(first - spawned) if first else None,
        fill_seconds=fill_seconds,
        tracked_rate=(n / (tracked_at - start)) if tracked_at else None,
        tracked_seconds=(tracked_at - start) if tracked_at else None,
    )
    return result


def act_latency(adapter: common.Adapter, args: argparse.Namespace) -> dict[str, Any]:
    adapter.reset()
    r = common.client()
    workers = Workers(adapter, args.procs, args.worker_log)
    samples: list[float] = []
    try:
        # Wait until the worker runs jobs at all (imports, connections), then let it go idle.
        ready_by = time.time() + 60
        while True:
            adapter.send_stamp(-1)
            if r.blpop(common.LATENCY_KEY, timeout=2):
                break
            workers.check()
            if time.time() > ready_by:
                raise RuntimeError("worker did not start a job within 60 s")
        time.sleep(0.5)
        r.delete(common.LATENCY_KEY)
        deadline = time.time() + args.timeout
        for i in range(args.n):
            time.sleep(random.uniform(0.01, 0.02))
            sent = time.time()
            adapter.send_stamp(i)
            reply = r.blpop(common.LATENCY_KEY, timeout=10)
            if reply is None:
                break
            j, started = reply[1].decode().split()
            if int(j) == i:
                samples.append(float(started) - sent)
            if time.time() > deadline and len(samples) >= 20:
                break
    finally:
        workers.stop()
        adapter.reset()
    if not samples:
        return {"p50": None, "n": 0}
    samples.sort()
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return {
        "p50": statistics.median(samples) * 1000,
        "p95": q[94] * 1000,
        "p99": q[98] * 1000,
        "max": samples[-1] * 1000,
        "n": len(samples),
        "partial": len(samples) < args.n,
    }


def act_memory(adapter: common.Adapter, args: argparse.Namespace) -> dict[str, Any]:
    if not adapter.uses_redis:
        return {"bytes_per_job": None}
    adapter.reset()
    r = common.client()
    adapter.enqueue_bulk(min(100, args.n))
    adapter.reset()
    before = int(r.info("memory")["used_memory"])
    adapter.enqueue_bulk(args.n)
    after = int(r.info("memory")["used_memory"])
    result = {"bytes_per_job": (after - before) / args.n, "n": args.n}
    extra = adapter.memory_after_sync()
    if extra is not None:
        result["bytes_per_job_after_sync"] = (extra - before) / args.n
    adapter.reset()
    return result


ACTIONS = {
    "prepare": act_prepare,
    "enqueue": act_enqueue,
    "bulk": act_bulk,
    "drain": act_drain,
    "latency": act_latency,
    "memory": act_memory,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("peer", choices=PEERS)
    parser.add_argument("config")
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=0)
    parser.add_argument("--procs", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--worker-log", type=Path)
    args = parser.parse_args()
    adapter = load(args.peer, args.config)
    result = ACTIONS[args.action](adapter, args)
    result.update(peer=args.peer, config=args.config, action=args.action, procs=args.procs)
    sys.stdout.flush()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
