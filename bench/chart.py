# ruff: noqa: RUF001
"""docs/benchmarks.png from a summary (bench.report): python -m bench.chart SUMMARY.json OUT.png"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter

JQ = "#c0392b"
PEER = "#7f8c8d"


def panel(ax, summary, metric, title, log=True, unit=""):
    rows = [(r["label"], r[metric]) for r in summary.values() if r.get(metric)]
    if not rows:
        ax.set_visible(False)
        return
    labels = [label for label, _ in rows][::-1]
    medians = [s["median"] for _, s in rows][::-1]
    low = [s["median"] - s["min"] for _, s in rows][::-1]
    high = [s["max"] - s["median"] for _, s in rows][::-1]
    colours = [JQ if label.startswith("jobqueue") else PEER for label in labels]
    ax.barh(labels, medians, xerr=[low, high], color=colours, capsize=2)
    for y, value in enumerate(medians):
        ax.text(
            value, y, f" {value:,.0f}" if value >= 10 else f" {value:.2f}", va="center", fontsize=7
        )
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel(unit, fontsize=8)


def main() -> None:
    with open(sys.argv[1]) as f:
        summary = json.load(f)
    fig, axes = plt.subplots(3, 2, figsize=(14, 13))
    panel(axes[0][0], summary, "drain2", "Drain, 2 worker processes", unit="jobs/s (log)")
    panel(axes[0][1], summary, "drain1", "Drain, 1 worker process", unit="jobs/s (log)")
    panel(axes[1][0], summary, "enqueue", "Enqueue, one call per job", unit="jobs/s (log)")
    panel(axes[1][1], summary, "bulk", "Enqueue, bulk API", unit="jobs/s (log)")
    panel(axes[2][0], summary, "p50", "Latency enqueue → start at 10 jobs/s, p50", unit="ms (log)")
    panel(axes[2][1], summary, "tree_pss", "2-process worker, tree PSS", log=False, unit="MB")
    fig.suptitle("jobqueue (red) against its peers: median, min–max", fontsize=12)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
