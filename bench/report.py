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

# metric key -> (sample key, field)
FIELDS = {
    "enqueue": ("enqueue", "rate"),
    "bulk": ("bulk", "rate"),
    "drain1": ("drain-1", "rate"),
    "drain2": ("drain-2", "rate"),
    "tracked2": ("drain-2", "tracked_rate"),
    "tracked1": ("drain-1", "tracked_rate"),
    "p50": ("latency", "p50"),
    "p95": ("latency", "p95"),
    "p99": ("latency", "p99"),
    "rss": ("drain-2", "rss_job_proc_mb"),
    "rss_max": ("drain-2", "rss_max_mb"),
    "mem": ("memory", "bytes_per_job"),
    "mem_synced": ("memory", "bytes_per_job_after_sync"),
}
HIGHER_BETTER = {"enqueue", "bulk", "drain1", "drain2", "tracked2", "tracked1"}


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
            if s:
                if name not in ("rss", "rss_max", "mem", "mem_synced"):
                    s["partial"] = any(x.get("partial") for x in samples)
                if sample_key == "latency":
                    s["samples"] = min(x.get("n", 0) for x in samples)
            row[name] = s
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
        "the median, with (min–max) when repeated. Enqueue: one producer, "
        f"{plan['enqueue_n']:,} jobs (at most {plan['enqueue_cap']:g} s). Drain: "
        f"{plan['drain_n']:,} no-op jobs pre-enqueued, rate from the first job taken to none "
        "left queued, prefetched or running, polled on the broker (worker start-up excluded; "
        f"a run is cut at {plan['drain_cap']:g} s and then counts the jobs done so far, marked "
        "\\*). Latency: enqueue → start on an idle worker (1 process). RSS: the largest peak "
        "(VmHWM) of the processes that run jobs, during the 2-process drain. Redis memory: "
        f"used_memory after enqueueing {plan['memory_n']:,} jobs, per job. How each is measured: "
        "[bench/README.md](../bench/README.md).",
        "",
        "| Configuration | enqueue /s | bulk enqueue /s | drain, 1 proc /s | drain, 2 procs /s "
        "| latency p50 / p95 / p99 ms | worker RSS MB | Redis B/job |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for key in order(summary):
        row = summary[key]
        lat = "—"
        if row.get("p50"):
            lat = " / ".join(
                fmt(med(row, x), 1 if med(row, x) < 100 else 0) for x in ("p50", "p95", "p99")
            )
            if row["p50"].get("partial"):
                lat += f" (n={row['p50']['samples']})"
        lines.append(
            f"| {row['label']} | {cell(row.get('enqueue'))} | {cell(row.get('bulk'))} | "
            f"{cell(row.get('drain1'))} | {cell(row.get('drain2'))} | {lat} | "
            f"{cell(row.get('rss'), 1, spread=False)} | {cell(row.get('mem'), 0, spread=False)} |"
        )
    lines += [
        "",
        "## Ratios to jobqueue",
        "",
        "How many times better jobqueue is (its figure ÷ the peer's for rates; the peer's ÷ "
        "jobqueue's for latency, RSS and memory): above 1× jobqueue wins. Redis peers are "
        "compared with jobqueue's Redis broker, django-tasks-db with jobqueue's database broker "
        "on the same database.",
        "",
        "| Configuration | compared with | enqueue | bulk | drain 1 proc | drain 2 procs "
        "| latency p50 | p99 | RSS | Redis B/job |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for key in order(summary):
        row = summary[key]
        ref_key = row.get("ref")
        if not ref_key:
            continue
        ref = summary.get(ref_key) or summary.get("jobqueue/redis-sqlite")
        cells = [
            ratio(med(ref, n), med(row, n), n in HIGHER_BETTER)
            for n in ("enqueue", "bulk", "drain1", "drain2", "p50", "p99", "rss", "mem")
        ]
        lines.append(f"| {row['label']} | {ref_key} | " + " | ".join(cells) + " |")

    jq = summary.get("jobqueue/redis") or summary.get("jobqueue/redis-sqlite")
    if jq:
        lines += [
            "",
            "## Job tracking (Redis broker)",
            "",
            "jobqueue's Redis broker records every job in the `Job` table, in batches from an "
            'event stream, unless `JOBQUEUE["TRACKING"]` is `False`. Below, the drain rate '
            "counted until the queue is empty, and counted until the `Job` table shows every job "
            "succeeded (the supervisor folds the stream in every 0.5 s; the harness calls "
            "`broker.sync()` once the queue is empty).",
            "",
            "| | 1 proc /s | 2 procs /s |",
            "|---|--:|--:|",
            f"| tracking on: queue empty (jobs done) | {cell(jq.get('drain1'))} | "
            f"{cell(jq.get('drain2'))} |",
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
            "smaller queue), 2 processes, with the queue this deep at start.",
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
    lines += ["", "## Targets", "", *targets(summary, plan), ""]
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
    if data.get("errors"):
        lines += ["## Errors during the run", ""] + [f"- {e}" for e in data["errors"]] + [""]
    lines += ["![Benchmarks chart](benchmarks.png)", ""]
    return "\n".join(lines)


def best(summary: dict[str, Any], prefix: str, metric: str) -> float | None:
    values = [med(r, metric) for k, r in summary.items() if k.startswith(prefix)]
    values = [v for v in values if v]
    return max(values) if values else None


def targets(summary: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    jq = summary.get("jobqueue/redis") or {}
    pg = summary.get("jobqueue/db-postgresql") or {}
    lite = summary.get("jobqueue/db-sqlite") or {}
    huey_drain = best(summary, "huey/", "drain2")
    huey_enq = best(summary, "huey/", "enqueue")
    rq_bulk = best(summary, "rq/", "bulk")
    dt_pg = best(summary, "django-tasks-db/postgresql", "drain2")
    dt_lite = best(summary, "django-tasks-db/sqlite", "drain2")
    g = jq.get("growth") or {}
    g_first = g.get(min(g)) if g else None
    g_last = g.get(max(g)) if g else None
    rows: list[tuple[str, str, float | None, float | None, bool]] = [
        # (target, measured text, value, goal, higher is better)
        (
            "Redis, 2 procs, tracking on: drain ≥ 2× Huey's best",
            "drain2",
            med(jq, "drain2"),
            2 * huey_drain if huey_drain else None,
            True,
        ),
        (
            "… the same, counted until the Job table is complete",
            "tracked2",
            med(jq, "tracked2"),
            2 * huey_drain if huey_drain else None,
            True,
        ),
        ("Enqueue, one call per job ≥ Huey's", "enqueue", med(jq, "enqueue"), huey_enq, True),
        (
            "Bulk enqueue ≥ 3× RQ's enqueue_many",
            "bulk",
            med(jq, "bulk"),
            3 * rq_bulk if rq_bulk else None,
            True,
        ),
        ("Latency p50 ≤ 0.5 ms", "p50", med(jq, "p50"), 0.5, False),
        ("Latency p99 ≤ 2 ms", "p99", med(jq, "p99"), 2.0, False),
        ("Worker RSS ≤ 45 MB (job process)", "rss", med(jq, "rss"), 45.0, False),
        ("… largest process (the supervisor)", "rss_max", med(jq, "rss_max"), 45.0, False),
        (
            "Database broker, PostgreSQL: drain ≥ 10× django-tasks-db",
            "drain2",
            med(pg, "drain2"),
            10 * dt_pg if dt_pg else None,
            True,
        ),
        (
            "Database broker, SQLite: drain ≥ 5× django-tasks-db",
            "drain2",
            med(lite, "drain2"),
            5 * dt_lite if dt_lite else None,
            True,
        ),
        ("Database broker, PostgreSQL: latency p50 ≤ 20 ms", "p50", med(pg, "p50"), 20.0, False),
        (
            f"Drain with {max(g) if g else 1_000_000:,} queued "
            f"within 20 % of {min(g) if g else 1000:,}",
            "growth",
            g_last["median"] if g_last else None,
            0.8 * g_first["median"] if g_first else None,
            True,
        ),
        ("Redis memory per queued no-op job ≤ 400 B", "mem", med(jq, "mem"), 400.0, False),
        ("… once the tracking stream is folded in", "mem", med(jq, "mem_synced"), 400.0, False),
    ]
    out = ["| Target | measured | goal | met |", "|---|--:|--:|:-:|"]
    for text, _, value, goal, higher in rows:
        if value is None or goal is None:
            out.append(f"| {text} | {fmt(value, 1)} | {fmt(goal, 1)} | not measured |")
            continue
        met = value >= goal if higher else value <= goal
        how = f"{value / goal:.2f}× the goal" if higher else f"{value / goal:.2f}× the limit"
        out.append(
            f"| {text} | {fmt(value, 1 if value < 100 else 0)} | "
            f"{fmt(goal, 1 if goal < 100 else 0)} | {'yes' if met else 'no'} ({how}) |"
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


def quote_in_readme(text: str, summary: dict[str, Any], data: dict[str, Any]) -> str:
    """bench/README.md quotes the main table of the last run written to docs/, between markers."""
    md = markdown(summary, data).splitlines()
    begin = next(i for i, line in enumerate(md) if line.startswith("| Configuration"))
    end = next(i for i in range(begin, len(md)) if not md[i].startswith("|"))
    m = data["machine"]
    block = [
        START,
        f"Last run: {data['date']}, {m['cpus']} CPUs, {m['memory_mb'] / 1024:.0f} GB RAM, "
        f"`{data['command']}`"
        + (" (quick mode)" if data["quick"] else "")
        + "; everything else (ratios, tracking, queue depth, targets) in "
        "[docs/benchmarks.md](../docs/benchmarks.md).",
        "",
        *md[begin:end],
        END,
    ]
    if START in text and END in text:
        head, rest = text.split(START, 1)
        return head + "\n".join(block) + rest.split(END, 1)[1]
    return text.rstrip("\n") + "\n\n## Last results\n\n" + "\n".join(block) + "\n"
