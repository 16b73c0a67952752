"""One measurement of one library configuration, run inside that library's virtual environment.

    python -m bench.driver PEER CONFIG ACTION [--n N] [--procs P] [--timeout S] ...

prints one JSON object on its last line of stdout. The harness (bench.run) calls this; it can
also be run by hand against a running Redis (BENCH_REDIS_URL) to debug a peer.

Actions:
  prepare   create the tables the library needs (Django migrate)
  enqueue   one producer, one call per job: jobs/s
  bulk      the library's bulk API, batches of 1000: jobs/s
  drain     pre-enqueue N, start the worker, poll the broker: jobs/s from the first job taken to
            none left (queued, prefetched or running) and, for jobqueue's Redis broker, to the
            Job table complete; the runs counted by the no-op's INCR; the worker tree's
            PSS/USS/RSS
  latency   idle worker; stamp jobs at 10/s then 200/s, each records when it started:
            p50/p95/p99 of enqueue -> start; then the idle worker tree's CPU (--idle S)
  memory    Redis used_memory before/after enqueueing N jobs: bytes per queued job
  wake      idle worker of P children: how many wake per job sent
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
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
    "raw": "bench.peers.raw",
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


def smaps_kb(pid: int) -> dict[str, int]:
    """Rss, Pss, Private_Clean and Private_Dirty (kB) from /proc/<pid>/smaps_rollup."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                    out[name] = int(rest.split()[0])
    except (OSError, ValueError):
        pass
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def voluntary_switches(pid: int) -> int:
    """Voluntary context switches of every thread of a process: how often it went to sleep,
    so a change means it woke up."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def memory_report(roots: list[int]) -> dict[str, Any]:
    """PSS, USS and RSS of every process of the worker trees, in MB.

    PSS (proportional set size) charges each page shared by k processes 1/k to each, so the PSS
    of a tree is what the tree costs the machine; USS (Private_Clean + Private_Dirty) is what a
    process alone holds, what one more child adds. The supervisor is a root that forked
    children; the job processes are those children, or the roots where nothing forks."""
    procs = []
    for root in roots:
        kids = children_map()
        for pid in tree(root):
            m = smaps_kb(pid)
            if not m:
                continue
            procs.append(
                {
                    "pid": pid,
                    "root": pid == root,
                    "forks": pid == root and bool(kids.get(pid)),
                    "pss_mb": m.get("Pss", 0) / 1024,
                    "uss_mb": (m.get("Private_Clean", 0) + m.get("Private_Dirty", 0)) / 1024,
                    "rss_mb": m.get("Rss", 0) / 1024,
                    "hwm_mb": status_kb(pid, "VmHWM") / 1024,
                    "cmd": cmdline(pid)[:120],
                }
            )
    sups = [p for p in procs if p["forks"]]
    jobs = [p for p in procs if not p["root"]] or [p for p in procs if p["root"]]

    def top(rows: list[dict[str, Any]], field: str) -> float | None:
        return max((p[field] for p in rows), default=None)

    return {
        "tree_pss_mb": sum(p["pss_mb"] for p in procs),
        "tree_uss_mb": sum(p["uss_mb"] for p in procs),
        "sup_pss_mb": top(sups, "pss_mb"),
        "sup_rss_mb": top(sups, "rss_mb"),
        "child_pss_mb": top(jobs, "pss_mb"),
        "child_rss_mb": top(jobs, "rss_mb"),
        "child_uss_mb": top(jobs, "uss_mb"),
        "rss_job_proc_mb": top(jobs, "hwm_mb"),  # peak RSS (VmHWM), as measured before
        "rss_max_mb": top(procs, "hwm_mb"),
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
    n = args.n if args.window else min(args.n, adapter.max_drain_n or args.n)
    window = min(args.window or n, n)
    adapter.reset()
    t0 = time.perf_counter()
    adapter.fill(n)
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
            # Until the Job table shows every job succeeded, as the worker's own tracking writes
            # it: nothing here helps it along.
            while time.perf_counter() < max(deadline, done_at + 10):
                if adapter.tracked() >= n:
                    tracked_at = time.perf_counter()
                    break
                time.sleep(0.01)
        result.update(memory_report(workers.pids()))
    finally:
        workers.stop()
    runs = common.counted()  # the no-op's INCR: every run, whatever the library says
    adapter.reset()
    start = first if first is not None else spawned
    end = done_at if done_at is not None else time.perf_counter()
    span = max(end - start, 1e-9)
    problem = note = None
    if done_at is not None and window == n:
        problem = None if runs == n else f"{n} jobs, {runs} runs counted"
    elif runs > n:
        problem = f"{n} jobs, {runs} runs counted (some ran twice)"
    elif runs < done:
        # Stopped mid-drain by the harness: a library that acknowledges a job before running
        # it (Celery without acks_late) may drop the few it held at shutdown.
        note = f"cut at the time limit: {done} jobs reported done, {runs} runs counted"
    result.update(
        rate=(window if done_at else done) / span,
        n=n,
        window=window,
        done=done,
        runs=runs,
        count_error=problem,
        count_note=note,
        partial=done_at is None,
        seconds=span,
        startup_seconds=(first - spawned) if first else None,
        fill_seconds=fill_seconds,
        tracked_rate=(n / (tracked_at - start)) if tracked_at else None,
        tracked_seconds=(tracked_at - start) if tracked_at else None,
    )
    return result


def percentiles(samples: list[float]) -> dict[str, float | None]:
    if not samples:
        return {"p50": None, "p95": None, "p99": None}
    ordered = sorted(samples)
    if len(ordered) == 1:
        return {"p50": ordered[0], "p95": ordered[0], "p99": ordered[0]}
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50": statistics.median(ordered), "p95": q[94], "p99": q[98]}


def wait_ready(adapter: common.Adapter, workers: Workers, r: Any) -> None:
    """Until the worker runs jobs at all (imports, connections)."""
    ready_by = time.time() + 60
    while True:
        adapter.send_stamp(-1)
        if r.blpop(common.LATENCY_KEY, timeout=2):
            break
        workers.check()
        if time.time() > ready_by:
            raise RuntimeError("worker did not start a job within 60 s")


def paced(
    adapter: common.Adapter, r: Any, rate: float, n: int, base: int, cap: float
) -> tuple[list[float], float]:
    """Send ``n`` stamp jobs at ``rate`` per second (open loop: on a fixed schedule, whatever the
    replies), then collect when each started: enqueue -> start, in ms; and the rate achieved
    (lower than ``rate`` if one enqueue takes longer than the interval)."""
    r.delete(common.LATENCY_KEY)
    sent: dict[int, float] = {}
    began = time.perf_counter()
    for k in range(n):
        delay = began + k / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent[base + k] = time.time()
        adapter.send_stamp(base + k)
        if time.perf_counter() - began > cap:
            break
    sending = time.perf_counter() - began
    started: dict[int, float] = {}
    deadline = time.time() + 10
    while len(started) < len(sent) and time.time() < deadline:
        time.sleep(0.02)
        for item in r.lrange(common.LATENCY_KEY, 0, -1):
            j, at = item.decode().split()
            if int(j) in sent:
                started[int(j)] = float(at)
    samples = [(at - sent[j]) * 1000 for j, at in started.items()]
    return samples, (len(sent) - 1) / max(sending, 1e-9) if len(sent) > 1 else rate


def act_latency(adapter: common.Adapter, args: argparse.Namespace) -> dict[str, Any]:
    """An idle worker (``procs`` processes); stamp jobs at 10/s, then at 200/s; then, with
    ``idle`` > 0, the CPU the idle worker's whole process tree uses over that many seconds."""
    adapter.reset()
    r = common.client()
    workers = Workers(adapter, args.procs, args.worker_log)
    result: dict[str, Any] = {}
    try:
        wait_ready(adapter, workers, r)
        for phase, (rate, n) in enumerate(((10, args.n), (200, args.n_fast))):
            time.sleep(0.5)  # idle again
            samples, sent_rate = paced(adapter, r, rate, n, (phase + 1) * 1_000_000, args.timeout)
            p = percentiles(samples)
            result.update(
                {f"{k}_{rate}": v for k, v in p.items()}
                | {
                    f"n_{rate}": len(samples),
                    f"sent_rate_{rate}": sent_rate,
                    f"samples_{rate}": [round(x, 4) for x in samples],
                    f"partial_{rate}": len(samples) < n,
                }
            )
        if args.idle:
            time.sleep(1.0)
            pids = [p for root in workers.pids() for p in tree(root)]
            before = sum(cpu_seconds(p) for p in pids)
            began = time.perf_counter()
            time.sleep(args.idle)
            used = sum(cpu_seconds(p) for p in pids) - before
            result["idle_cpu_pct"] = 100 * used / (time.perf_counter() - began)
            result["idle_processes"] = len(pids)
    finally:
        workers.stop()
        adapter.reset()
    # the 10/s figures under the names the report has always read
    result.update(p50=result.get("p50_10"), p95=result.get("p95_10"), p99=result.get("p99_10"))
    result.update(n=result.get("n_10", 0), partial=result.get("partial_10", True))
    return result


def act_wake(adapter: common.Adapter, args: argparse.Namespace) -> dict[str, Any]:
    """How many of a worker's ``procs`` idle children one job wakes.

    A child counts as awake in a window if it went to sleep again within it (a voluntary context
    switch of any of its threads). Rounds alternate a window with no job (the idle baseline: an
    idle child also wakes on its own timers) and a window that starts when one job is sent. With
    ``c`` children each awake in a quiet window with probability ``p = idle / c``, a job that
    wakes ``k`` of them shows ``k + (c - k) p`` awake, so ``k = (awake - idle) / (1 - p)``."""
    adapter.reset()
    r = common.client()
    workers = Workers(adapter, args.procs, args.worker_log)
    window = 0.03
    awake: list[int] = []
    idle: list[int] = []
    try:
        wait_ready(adapter, workers, r)
        time.sleep(1.0)
        kids = [p for root in workers.pids() for p in tree(root) if p != root]
        for k in range(args.n):
            for bucket, send in ((idle, False), (awake, True)):
                time.sleep(0.3)  # the previous job's acknowledgement is over
                before = {p: voluntary_switches(p) for p in kids}
                began = time.perf_counter()
                if send:
                    adapter.send_stamp(k)
                time.sleep(max(0.0, window - (time.perf_counter() - began)))
                bucket.append(sum(voluntary_switches(p) > before[p] for p in kids))
                if send and not r.blpop(common.LATENCY_KEY, timeout=4):
                    raise RuntimeError("a job sent to the idle worker did not start in 4 s")
    finally:
        workers.stop()
        adapter.reset()
    c = len(kids)
    mean_awake = statistics.mean(awake) if awake else None
    mean_idle = statistics.mean(idle) if idle else None
    woken = None
    if c and mean_awake is not None and mean_idle is not None and mean_idle < c:
        woken = (mean_awake - mean_idle) / (1 - mean_idle / c)
    return {
        "children": c,
        "woken_per_job": woken,
        "awake_with_job": mean_awake,
        "awake_idle": mean_idle,
        "window": window,
        "n": len(awake),
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
    "wake": act_wake,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("peer", choices=PEERS)
    parser.add_argument("config")
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=0)
    parser.add_argument("--n-fast", type=int, default=400, help="latency: jobs at 200/s")
    parser.add_argument("--idle", type=float, default=0, help="latency: idle CPU over S s")
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
