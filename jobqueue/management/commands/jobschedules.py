"""``jobschedules``: the periodic schedules with their next run and lag; ``--sync`` first brings
the Schedule table in line with the schedules declared in code (as every worker does at start)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from jobqueue.schedule_sync import overview, sync

LATE = timedelta(seconds=10)  # a lag past this is shown as a warning


def _when(moment: Any) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S %Z") if moment else "-"


def schedule_lines(style: Any) -> list[str]:
    rows = overview()
    if not rows:
        return ["0 schedules"]
    width = max(len(r["schedule"].name) for r in rows)
    lines = []
    for row in rows:
        schedule = row["schedule"]
        if not schedule.enabled:
            state = style.WARNING("paused")
            timing = "next -"
        else:
            lag = row["lag"]
            state = "lag " + (f"{lag.total_seconds():.0f}s" if lag is not None else "-")
            if lag is not None and lag > LATE:
                state = style.ERROR(state)
            timing = f"next {_when(row['next'])}"
        last = _when(schedule.last_run_at)
        lines.append(
            f"{schedule.name:<{width}}  {row['when']}  {timing}  {state}  last {last}  "
            f"{schedule.task}"
        )
    enabled = sum(1 for r in rows if r["schedule"].enabled)
    lines.append(f"{len(rows)} schedules, {enabled} enabled")
    return lines


class Command(BaseCommand):
    help = "List the periodic schedules (next run, lag, last run); --sync them from code first."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--sync",
            action="store_true",
            help="Create, update and disable schedules to match those declared in code.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["sync"]:
            counts = sync()
            self.stdout.write(", ".join(f"{n} {what}" for what, n in counts.items()))
        self.stdout.write("\n".join(schedule_lines(self.style)))
