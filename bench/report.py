# ruff: noqa: RUF001
"""From raw samples to docs/benchmarks.md (tables) and docs/benchmarks.png (bench/chart.py)."""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench import venvs

ROOT = Path(__file__).resolve().parent.parent

# metric key -> (sample key, field): the median (min-max) over repetitions
FIELDS = {
    "enqueue": ("enqueue", "rate"),
    "bulk": ("bulk", "rate"),
    "drain1q": ("drain-1", "rate"),  # until the queue is empty
    "drain2q": ("drain-2", "rate"),
    "tracked2": ("drain-2", "tracked_rate"),  # until the Job table is complete
    "tracked1": ("drain-1", "tracked_rate"),
    "p50": ("latency", "p50_10"),  # per repetition (the chart); the tables pool the samples
    "rss": ("drain-2", "rss_job_proc_mb"),
    "rss_max": ("drain-2", "rss_max_mb"),
    "tree_pss": ("drain-2", "tree_pss_mb"),
    "tree_uss": ("drain-2", "tree_uss_mb"),
    "sup_pss": ("drain-2", "sup_pss_mb"),
    "sup_rss": ("drain-2", "sup_rss_mb"),
    "child_pss": ("drain-2", "child_pss_mb"),
    "child_rss": ("drain-2", "child_rss_mb"),
    "child_uss": ("drain-2", "child_uss_mb"),
    "idle_cpu": ("latency", "idle_cpu_pct"),
    "woken": ("wake", "woken_per_job"),
    "awake_idle": ("wake", "awake_idle"),
    "mem": ("memory", "bytes_per_job"),
    "mem_synced": ("memory", "bytes_per_job_after_sync"),
}
HIGHER_BETTER = {
    "enqueue",
    "bulk",
    "drain1",
    "drain2",
    "drain1q",
    "drain2q",
    "tracked1",
    "tracked2",
}
NOT_PARTIAL = {"enqueue", "bulk", "drain1q", "drain2q", "tracked1", "tracked2", "p50"}
# The headline drain of jobqueue's Redis broker with tracking on: until the Job table is complete.
TRACKED = {"jobqueue/redis", "jobqueue/redis-sqlite"}
RATES = (10, 200)  # latency: stamp jobs per second


def stats(values: list[float]) -> dict[str, float] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def pooled(samples: list[dict[str, Any]], rate: int) -> dict[str, Any] | None:
    """Latency percentiles over the samples of every repetition together."""
    values = sorted(v for x in samples for v in x.get(f"samples_{rate}", []))
    if not values:
        return None
    q = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else []
    return {
        "p50": statistics.median(values),
        "p95": q[94] if q else values[0],
        "p99": q[98] if q else values[0],
        "n": len(values),
        "partial": any(x.get(f"partial_{rate}") for x in samples),
        "sent_rate": min((x.get(f"sent_rate_{rate}") or rate) for x in samples),
    }


def summarize(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    keys = [k for k in data["configs"] if k in data["samples"]]
    keys += [k for k in data["samples"] if k not in keys]
    for key in keys:
        metrics = data["samples"][key]
        row: dict[str, Any] = {
            "label": data["configs"].get(key, {}).get("label", key),
            "ref": data["configs"].get(key, {}).get("ref"),
        }
        for name, (sample_key, field) in FIELDS.items():
            samples = metrics.get(sample_key, [])
            s = stats([x.get(field) for x in samples])
            if s and name in NOT_PARTIAL:
                s["partial"] = any(x.get("partial") for x in samples)
            row[name] = s
        for procs in (1, 2):
            row[f"drain{procs}"] = row[f"tracked{procs}" if key in TRACKED else f"drain{procs}q"]
        for rate in RATES:
            row[f"lat{rate}"] = pooled(metrics.get("latency", []), rate)
        for sample_key, samples in metrics.items():
            if sample_key.startswith("growth-"):
                depth = int(sample_key.split("-")[1])
                s = stats([x.get("rate") for x in samples])
                if s:
                    s["partial"] = any(x.get("partial") for x in samples)
                    s["window"] = samples[0].get("window")
                row.setdefault("growth", {})[depth] = s
        out[key] = row
    return out


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def cell(s: dict[str, Any] | None, digits: int = 0, spread: bool = True) -> str:
    if not s:
        return "—"
    text = fmt(s["median"], digits)
    if spread and s["n"] > 1:
        text += f" ({fmt(s['min'], digits)}–{fmt(s['max'], digits)})"
    if s.get("partial"):
        text += "\\*"
    return text


def med(row: dict[str, Any] | None, name: str) -> float | None:
    s = (row or {}).get(name)
    return s["median"] if s else None


def ratio(jq: float | None, peer: float | None, higher_better: bool) -> str:
    if not jq or not peer:
        return "—"
    r = jq / peer if higher_better else peer / jq
    return f"{r:.1f}×" if r < 10 else f"{r:.0f}×"


def order(summary: dict[str, Any]) -> list[str]:
    """jobqueue's rows first, then the peers in the order they ran."""
    return [k for k in summary if k.startswith("jobqueue/")] + [
        k for k in summary if not k.startswith("jobqueue/")
    ]


def lat(row: dict[str, Any] | None, rate: int, field: str) -> float | None:
    s = (row or {}).get(f"lat{rate}")
    return s[field] if s else None


def lat_cell(row: dict[str, Any], rate: int) -> str:
    s = row.get(f"lat{rate}")
    if not s:
        return "—"
    text = " / ".join(fmt(s[x], 1 if s[x] < 100 else 0) for x in ("p50", "p99"))
    if s.get("sent_rate", rate) < 0.9 * rate:  # the producer could not enqueue that fast
        text += f" (sent at {s['sent_rate']:.0f}/s)"
    return text + (f" (n={s['n']})" if s.get("partial") else "")


def pair(a: float | None, b: float | None, digits: int = 1) -> str:
    if a is None and b is None:
        return "—"
    return f"{fmt(a, digits)} / {fmt(b, digits)}"


MAIN_HEADER = [
    "| Configuration | enqueue /s | bulk enqueue /s | drain, 1 proc /s | drain, 2 procs /s "
    "| latency at 10/s, p50 / p99 ms | latency at 200/s, p50 / p99 ms | worker PSS MB "
    "| Redis B/job |",
    "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
]


def main_row(row: dict[str, Any], spread: bool = True) -> str:
    def c(name: str) -> str:
        return cell(row.get(name), spread=spread)

    return (
        f"| {row['label']} | {c('enqueue')} | {c('bulk')} | "
        f"{c('drain1')} | {c('drain2')} | {lat_cell(row, 10)} | "
        f"{lat_cell(row, 200)} | {cell(row.get('tree_pss'), 1, spread=False)} | "
        f"{cell(row.get('mem'), 0, spread=False)} |"
    )


def markdown(summary: dict[str, Any], data: dict[str, Any]) -> str:
    m = data["machine"]
    plan = data["plan"]
    lines = [
        "# Benchmarks: jobqueue against Celery, RQ, Dramatiq, Huey and django-tasks-db",
        "",
        f"Measured {data['date']} on {m['cpus']} CPUs ({m['cpu']}), "
        f"{m['memory_mb'] / 1024:.0f} GB RAM, Linux {m['kernel']}; Python "
        f"{Path(data['python']).parent.parent.name}, redis-server {data['redis']}, PostgreSQL "
        f"{data['postgres'] or 'absent'}. Produced by `{data['command']}`"
        + (" (**quick mode**: small N, one repetition; indicative only)" if data["quick"] else "")
        + f" in {data['seconds'] / 60:.0f} min.",
        "",
        f"{plan['reps']} repetition(s), configurations interleaved with jobqueue's; each cell is "
        "the median, with (min–max) when repeated. Every library's no-op job does one Redis "
        "`INCR` on the bench's Redis: the same round trip per job for all, and a count of runs "
        "that every complete drain must match. jobqueue runs with its default settings. "
        f"Enqueue: one producer, {plan['enqueue_n']:,} jobs (at most {plan['enqueue_cap']:g} s). "
        f"Drain: {plan['drain_n']:,} jobs pre-enqueued (fewer where a library enqueues one at a "
        "time), rate from the first job taken to none left queued, prefetched or running "
        "(jobqueue's Redis broker with tracking on: to the `Job` table complete), polled on the "
        f"broker (worker start-up excluded; a run is cut at {plan['drain_cap']:g} s and then "
        "counts the jobs done so far, marked \\*); 1 process in the first repetition only. "
        "Latency: enqueue → start on an idle 1-process worker, stamp jobs sent on a fixed "
        f"schedule at 10/s ({plan['latency_n']} a repetition) and at 200/s "
        f"({plan['latency_fast_n']}), percentiles over the samples of all repetitions. Worker "
        "PSS: the proportional set size of the whole 2-process worker (every process of its "
        "tree) at the end of the drain. Redis memory: used_memory after enqueueing "
        f"{plan['memory_n']:,} jobs, per job. How each is measured: "
        "[bench/README.md](../bench/README.md).",
        "",
        *MAIN_HEADER,
    ]
    for key in order(summary):
        lines.append(main_row(summary[key]))
    lines += ["", "## Targets (issue 13)", "", *targets(summary, plan), ""]
    lines += memory_section(summary)
    lines += tasks_section(summary)
    lines += [
        "",
        "## Ratios to jobqueue",
        "",
        "How many times better jobqueue is (its figure ÷ the peer's for rates; the peer's ÷ "
        "jobqueue's for latency and memory): above 1× jobqueue wins. Redis peers are "
        "compared with jobqueue's Redis broker, django-tasks-db with jobqueue's database broker "
        "on the same database.",
        "",
        "| Configuration | compared with | enqueue | bulk | drain 1 proc | drain 2 procs "
        "| p50 at 10/s | p99 at 10/s | p50 at 200/s | p99 at 200/s | worker PSS | Redis B/job |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for key in order(summary):
        row = summary[key]
        ref_key = row.get("ref")
        if not ref_key:
            continue
        ref = summary.get(ref_key) or summary.get("jobqueue/redis-sqlite")
        cells = [
            ratio(med(ref, n), med(row, n), n in HIGHER_BETTER)
            for n in ("enqueue", "bulk", "drain1", "drain2")
        ]
        cells += [
            ratio(lat(ref, rate, f), lat(row, rate, f), False)
            for rate in RATES
            for f in ("p50", "p99")
        ]
        cells += [ratio(med(ref, n), med(row, n), False) for n in ("tree_pss", "mem")]
        lines.append(f"| {row['label']} | {ref_key} | " + " | ".join(cells) + " |")

    jq = summary.get("jobqueue/redis") or summary.get("jobqueue/redis-sqlite")
    if jq:
        lines += [
            "",
            "## Job tracking (Redis broker)",
            "",
            "jobqueue's Redis broker records every job in the `Job` table, in batches from an "
            'event stream that the supervisor folds in, unless `JOBQUEUE["TRACKING"]` is '
            "`False`. Below, the drain rate counted until the queue is empty, and counted until "
            "the `Job` table shows every job succeeded (the harness only reads the table: the "
            "worker's own tracking writes it). The main table shows the latter.",
            "",
            "| | 1 proc /s | 2 procs /s |",
            "|---|--:|--:|",
            f"| tracking on: queue empty (jobs done) | {cell(jq.get('drain1q'))} | "
            f"{cell(jq.get('drain2q'))} |",
            f"| tracking on: `Job` table complete | {cell(jq.get('tracked1'))} | "
            f"{cell(jq.get('tracked2'))} |",
        ]
        off = summary.get("jobqueue/redis-untracked")
        if off:
            lines.append(
                f"| tracking off: queue empty (jobs done) | {cell(off.get('drain1'))} | "
                f"{cell(off.get('drain2'))} |"
            )
        if jq.get("mem_synced"):
            lines += [
                "",
                f"Redis memory per queued job: {fmt(med(jq, 'mem'))} B with the "
                "tracking stream not yet folded in, "
                f"{fmt(med(jq, 'mem_synced'))} B once `sync()` has trimmed it.",
            ]
    growth_rows = [(k, summary[k]) for k in order(summary) if summary[k].get("growth")]
    if growth_rows:
        lines += [
            "",
            "## Queue depth",
            "",
            f"Drain rate of the first {plan['growth_window']:,} jobs (all of them for a "
            "smaller queue), 2 processes, with the queue this deep at start (counted on the "
            "queue, measured once, after the repetitions).",
            "",
            "| Configuration | "
            + " | ".join(f"{d:,} queued" for d in plan["growth"])
            + " | deepest ÷ shallowest |",
            "|---|" + "--:|" * (len(plan["growth"]) + 1),
        ]
        for _, row in growth_rows:
            g = row["growth"]
            first, last = g.get(min(g)), g.get(max(g))
            change = f"{last['median'] / first['median']:.2f}" if first and last else "—"
            lines.append(
                f"| {row['label']} | "
                + " | ".join(cell(g.get(d)) for d in plan["growth"])
                + f" | {change} |"
            )
    lines.append("")
    rb = data.get("redis_benchmark") or {}
    if rb:
        lines += [
            "## The physical reference: redis-benchmark on the same Redis",
            "",
            "| | SET /s | LPUSH /s | RPOP /s |",
            "|---|--:|--:|--:|",
        ]
        for label, rates in rb.items():
            lines.append(
                f"| {label} | "
                + " | ".join(fmt(rates.get(c)) for c in ("SET", "LPUSH", "RPOP"))
                + " |"
            )
        lines.append("")
    lines += ["## Errors during the run", ""]
    if data.get("errors"):
        lines += [f"- {e}" for e in data["errors"]]
    else:
        lines.append(
            "None: every measurement finished, and every complete drain's `INCR` count equals "
            "its number of jobs (no job lost, none run twice)."
        )
    if data.get("notes"):
        lines += [
            "",
            "Drains cut at their time limit whose `INCR` count is below the jobs the broker "
            "reported done (the harness stopped the worker mid-drain; a library that "
            "acknowledges a job before running it may drop the few it held):",
            "",
            *(f"- {n}" for n in data["notes"]),
        ]
    lines += ["", "![Benchmarks chart](benchmarks.png)", ""]
    return "\n".join(lines)


def memory_section(summary: dict[str, Any]) -> list[str]:
    lines = [
        "## Worker memory and idle CPU",
        "",
        "From `/proc/<pid>/smaps_rollup` of every process of the 2-process worker at the end of "
        "its drain (median over repetitions). PSS charges a page shared by k processes 1/k to "
        "each, so the tree's PSS is what the worker costs the machine; USS (private pages) is "
        "what a process alone holds: what one more child adds. The supervisor is the process "
        "that forked the others (none where the library runs P independent processes); a job "
        "process is a child, or each process where nothing forks (the largest is shown). Idle "
        "CPU: utime + stime of the idle 1-process worker's whole tree (`/proc/<pid>/stat`) over "
        "a quiet spell after its latency run, in % of one core.",
        "",
        "| Configuration | worker PSS MB | worker USS MB | supervisor PSS / RSS MB "
        "| job process PSS / RSS MB | job process USS MB | idle CPU % |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for key in order(summary):
        row = summary[key]
        if not row.get("tree_pss") and not row.get("idle_cpu"):
            continue
        idle = med(row, "idle_cpu")
        lines.append(
            f"| {row['label']} | {fmt(med(row, 'tree_pss'), 1)} | {fmt(med(row, 'tree_uss'), 1)} "
            f"| {pair(med(row, 'sup_pss'), med(row, 'sup_rss'))} "
            f"| {pair(med(row, 'child_pss'), med(row, 'child_rss'))} "
            f"| {fmt(med(row, 'child_uss'), 1)} | {fmt(idle, 2)} |"
        )
    pg = summary.get("jobqueue/db-postgresql") or {}
    if pg.get("woken"):
        lines += [
            "",
            f"Database broker on PostgreSQL, an idle worker of 4 children: one job sent wakes "
            f"{fmt(med(pg, 'woken'), 1)} of them (a child woke if it had a voluntary context "
            "switch within 30 ms of the job being sent, against the same count over 30 ms with "
            f"no job: {fmt(med(pg, 'awake_idle'), 2)} awake on their own timers; see "
            "bench/README.md).",
        ]
    return [*lines, ""]


def tasks_section(summary: dict[str, Any]) -> list[str]:
    pairs = [
        ("jobqueue/tasks-postgresql", "django-tasks-db/postgresql"),
        ("jobqueue/tasks-sqlite", "django-tasks-db/sqlite"),
    ]
    pairs = [(a, b) for a, b in pairs if a in summary or b in summary]
    if not pairs:
        return []
    lines = [
        "## Django's tasks framework: `@task` through jobqueue against django-tasks-db",
        "",
        "The same `@django.tasks.task` no-op and stamp (the `django-tasks` 0.12 backport on "
        "Django 5.2), enqueued with `.enqueue()` through `jobqueue.backend.JobQueueBackend` (its "
        "database broker, default settings, run by `jobworker`) and through django-tasks-db's "
        "backend (run by `db_worker --interval 0.05`), on the same database server.",
        "",
        "| Configuration | enqueue /s | drain, 2 procs /s | latency at 10/s, p50 / p99 ms "
        "| latency at 200/s, p50 / p99 ms |",
        "|---|--:|--:|--:|--:|",
    ]
    for a, b in pairs:
        for key in (a, b):
            row = summary.get(key)
            if row:
                lines.append(
                    f"| {row['label']} | {cell(row.get('enqueue'))} | {cell(row.get('drain2'))} "
                    f"| {lat_cell(row, 10)} | {lat_cell(row, 200)} |"
                )
        jq, dt = summary.get(a), summary.get(b)
        if jq and dt:
            lines.append(
                f"| *jobqueue ÷ django-tasks-db* | "
                f"{ratio(med(jq, 'enqueue'), med(dt, 'enqueue'), True)} | "
                f"{ratio(med(jq, 'drain2'), med(dt, 'drain2'), True)} | "
                f"{ratio(lat(jq, 10, 'p50'), lat(dt, 10, 'p50'), False)} (p50) | "
                f"{ratio(lat(jq, 200, 'p50'), lat(dt, 200, 'p50'), False)} (p50) |"
            )
    return [*lines, ""]


def best(summary: dict[str, Any], prefix: str, metric: str) -> float | None:
    values = [med(r, metric) for k, r in summary.items() if k.startswith(prefix)]
    values = [v for v in values if v]
    return max(values) if values else None


def targets(summary: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    """Each target of issue 13: jobqueue's figure, the peer's, their ratio, the goal, met."""
    jq = summary.get("jobqueue/redis") or summary.get("jobqueue/redis-sqlite") or {}
    pg = summary.get("jobqueue/db-postgresql") or {}
    lite = summary.get("jobqueue/db-sqlite") or {}
    huey = summary.get("huey/process") or {}
    raw = summary.get("raw/blpop") or {}
    dt_pg = summary.get("django-tasks-db/postgresql") or {}
    dt_lite = summary.get("django-tasks-db/sqlite") or {}
    rq_bulk = best(summary, "rq/", "bulk")
    g = jq.get("growth") or {}
    g_first = g.get(min(g)) if g else None
    g_last = g.get(max(g)) if g else None
    # (target, unit, jobqueue, peer name, peer, goal on the ratio jq ÷ peer or on jq itself)
    rows: list[tuple[str, str, float | None, str, float | None, str, float]] = [
        (
            "Redis broker, one `.delay()` per job, ≥ 1.2× Huey's",
            "/s",
            med(jq, "enqueue"),
            "Huey",
            med(huey, "enqueue"),
            "≥",
            1.2,
        ),
    ]
    for rate in RATES:
        for f in ("p50", "p99"):
            rows.append(
                (
                    f"Latency enqueue → start at {rate} jobs/s, {f} ≤ Huey's",
                    "ms",
                    lat(jq, rate, f),
                    "Huey",
                    lat(huey, rate, f),
                    "≤",
                    1.0,
                )
            )
    for rate in RATES:
        rows.append(
            (
                f"Latency at {rate} jobs/s, p50 within 1.3× of a raw `LPUSH`→`BLPOP`",
                "ms",
                lat(jq, rate, "p50"),
                "raw",
                lat(raw, rate, "p50"),
                "≤",
                1.3,
            )
        )
    rows += [
        (
            "2-process worker, PSS of the whole tree, ≤ 1.2× Huey's",
            "MB",
            med(jq, "tree_pss"),
            "Huey",
            med(huey, "tree_pss"),
            "≤",
            1.2,
        ),
        (
            "Supervisor no larger than a child (PSS; RSS in the memory table)",
            "MB",
            med(jq, "sup_pss"),
            "its child",
            med(jq, "child_pss"),
            "≤",
            1.0,
        ),
        (
            "An extra child ≤ 8 MB of its own (USS of a child)",
            "MB",
            med(jq, "child_uss"),
            "Huey",
            med(huey, "child_uss"),
            "≤ abs",
            8.0,
        ),
        (
            "Drain until the `Job` table is complete, 2 processes, ≥ 2.5× Huey's 2 processes",
            "/s",
            med(jq, "tracked2"),
            "Huey",
            med(huey, "drain2"),
            "≥",
            2.5,
        ),
        (
            "Database broker, SQLite, default settings: latency p50 (10 jobs/s) ≤ 15 ms",
            "ms",
            lat(lite, 10, "p50"),
            "django-tasks-db",
            lat(dt_lite, 10, "p50"),
            "≤ abs",
            15.0,
        ),
        (
            "Database broker, SQLite: an idle worker < 1 % of a core",
            "%",
            med(lite, "idle_cpu"),
            "django-tasks-db",
            med(dt_lite, "idle_cpu"),
            "< abs",
            1.0,
        ),
        (
            "Database broker, PostgreSQL: one job wakes one of 4 idle children",
            "children",
            med(pg, "woken"),
            "",
            None,
            "< abs",
            1.5,
        ),
        (
            "Database broker, PostgreSQL: one `.delay()` ≥ 1.5× django-tasks-db's",
            "/s",
            med(pg, "enqueue"),
            "django-tasks-db",
            med(dt_pg, "enqueue"),
            "≥",
            1.5,
        ),
        (
            "Keep: bulk enqueue ≥ 4× RQ's `enqueue_many`",
            "/s",
            med(jq, "bulk"),
            "RQ",
            rq_bulk,
            "≥",
            4.0,
        ),
        (
            "Keep: database-broker drain ≥ 20× django-tasks-db, PostgreSQL",
            "/s",
            med(pg, "drain2"),
            "django-tasks-db",
            med(dt_pg, "drain2"),
            "≥",
            20.0,
        ),
        (
            "Keep: database-broker drain ≥ 20× django-tasks-db, SQLite",
            "/s",
            med(lite, "drain2"),
            "django-tasks-db",
            med(dt_lite, "drain2"),
            "≥",
            20.0,
        ),
        (
            f"Keep: drain flat from {min(g) if g else 1000:,} to "
            f"{max(g) if g else 1_000_000:,} queued (within 20 %)",
            "/s",
            g_last["median"] if g_last else None,
            f"{min(g) if g else 1000:,} queued",
            g_first["median"] if g_first else None,
            "≥",
            0.8,
        ),
    ]
    out = [
        "| Target | jobqueue | peer | jobqueue ÷ peer | goal | met |",
        "|---|--:|--:|--:|--:|:-:|",
    ]
    for text, unit, value, peer_name, peer, op, goal in rows:
        digits = 2 if unit in ("%", "children") else 1
        shown = f"{fmt(value, digits if (value or 0) < 100 else 0)} {unit}"
        peer_shown = (
            f"{fmt(peer, digits if (peer or 0) < 100 else 0)} ({peer_name})" if peer_name else "—"
        )
        r = value / peer if value is not None and peer else None
        if op.endswith("abs"):
            goal_text = f"{op.split()[0]} {goal:g} {unit}"
            subject = value
        else:
            goal_text = f"{op} {goal:g}×"
            subject = r
        if value is None or subject is None:
            met = "not measured"
        else:
            ok = {"≥": subject >= goal, "≤": subject <= goal, "<": subject < goal}[op.split()[0]]
            met = "**yes**" if ok else "no"
        out.append(
            f"| {text} | {shown if value is not None else '—'} | "
            f"{peer_shown if peer is not None or not peer_name else '—'} | "
            f"{f'{r:.2f}×' if r else '—'} | {goal_text} | {met} |"
        )
    if plan.get("growth") and max(plan["growth"]) < 1_000_000:
        out.append("")
        out.append(
            f"(The depth target is for 1 M queued; this run went to {max(plan['growth']):,}.)"
        )
    return out


def chart(summary: dict[str, Any], path: Path) -> None:
    """Drawn by bench/chart.py in the jobqueue environment (which has matplotlib)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({k: summary[k] for k in order(summary)}, f, default=str)
    subprocess.run(
        [venvs.python("jobqueue"), "-m", "bench.chart", f.name, str(path)], cwd=ROOT, check=True
    )
    Path(f.name).unlink()


START, END = "<!-- results:start -->", "<!-- results:end -->"


def block(md: list[str], title: str) -> list[str]:
    """The table that follows the line starting with ``title`` (the line itself excluded)."""
    begin = next(i for i, line in enumerate(md) if line.startswith(title))
    begin = next(i for i in range(begin, len(md)) if md[i].startswith("|"))
    end = next((i for i in range(begin, len(md)) if not md[i].startswith("|")), len(md))
    return md[begin:end]


def replace_between(text: str, lines: list[str]) -> str:
    body = "\n".join([START, *lines, END])
    if START in text and END in text:
        head, rest = text.split(START, 1)
        return head + body + rest.split(END, 1)[1]
    return text.rstrip("\n") + "\n\n## Last results\n\n" + body + "\n"


def quote_in_readme(text: str, summary: dict[str, Any], data: dict[str, Any]) -> str:
    """bench/README.md quotes the main table and the targets of the last run written to docs/,
    between markers."""
    md = markdown(summary, data).splitlines()
    m = data["machine"]
    return replace_between(
        text,
        [
            f"Last run: {data['date']}, {m['cpus']} CPUs, {m['memory_mb'] / 1024:.0f} GB RAM, "
            f"`{data['command']}`"
            + (" (quick mode)" if data["quick"] else "")
            + "; everything else (memory, django.tasks, ratios, tracking, queue depth) in "
            "[docs/benchmarks.md](../docs/benchmarks.md).",
            "",
            *block(md, "| Configuration | enqueue"),
            "",
            *block(md, "## Targets"),
        ],
    )


def quote_in_project_readme(text: str, summary: dict[str, Any], data: dict[str, Any]) -> str:
    """The project README's Performance section: the run's date and command, the main table's
    jobqueue rows and nearest peers, and the targets, between the same markers."""
    md = markdown(summary, data).splitlines()
    m = data["machine"]
    return replace_between(
        text,
        [
            f"Measured {data['date']} on {m['cpus']} CPUs, {m['memory_mb'] / 1024:.0f} GB RAM, "
            f"by `{data['command']}`"
            + (" (quick mode: indicative only)" if data["quick"] else "")
            + f" ({data['plan']['reps']} interleaved repetitions, medians).",
            "",
            *MAIN_HEADER,
            *(main_row(summary[key], spread=False) for key in order(summary)),
            "",
            "Targets of the performance work, measured in the same run:",
            "",
            *block(md, "## Targets"),
        ],
    )
