"""``jobinfo``: what waits in each queue and what each worker is doing, like ``rq info``."""

from __future__ import annotations

from datetime import timedelta
from time import sleep
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from jobqueue.brokers import get_broker
from jobqueue.conf import get_settings
from jobqueue.models import Job, Worker
from jobqueue.states import JobStatus

BAR_WIDTH = 40
COLUMNS = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED, JobStatus.FAILED)
CLEAR_SCREEN = "\033[H\033[2J"


class Command(BaseCommand):
    help = "Show each queue's jobs (queued, scheduled, started, failed) and each worker's job."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "-i",
            "--interval",
            metavar="S",
            help="Refresh every S seconds until interrupted (Ctrl-C).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        interval = _positive_seconds(options["interval"])
        if interval is None:
            self.stdout.write(self.render())
            return
        clear = self.stdout.isatty()
        try:
            while True:
                screen = self.render()
                if clear:
                    self.stdout.write(CLEAR_SCREEN, ending="")
                self.stdout.write(screen)
                sleep(interval)
        except KeyboardInterrupt:
            self.stdout.write("")

    def render(self) -> str:
        """The whole screen as one string, so a refresh replaces it without flicker."""
        return "\n".join(
            [*self.render_queues(), "", *self.render_workers(), "", *self.render_schedules()]
        )

    def render_queues(self) -> list[str]:
        counts = get_broker().counts()
        known = list(get_settings().QUEUES)
        # Jobs may linger in a queue that was since removed from settings: show it, marked.
        queues = known + sorted(set(counts) - set(known))
        name_width = max((len(q) for q in queues), default=0)
        largest = max((counts.get(q, {}).get(JobStatus.QUEUED, 0) for q in queues), default=0)
        glyph = _bar_glyph(self.stdout)
        lines = []
        for queue in queues:
            row = counts.get(queue, {})
            waiting = row.get(JobStatus.QUEUED, 0)
            bar = glyph * _bar_length(waiting, largest)
            numbers = "  ".join(self.count_cell(status, row.get(status, 0)) for status in COLUMNS)
            note = "" if queue in known else "  (not in JOBQUEUE['QUEUES'])"
            lines.append(f"{queue:<{name_width}} |{bar:<{BAR_WIDTH}}  {numbers}{note}")
        total = sum(sum(row.values()) for row in counts.values())
        lines.append(f"{len(queues)} queues, {total} jobs")
        resent = Job.objects.filter(resent__gt=0).count()
        if resent:
            lines.append(self.style.WARNING(f"{resent} jobs sent again after the broker lost them"))
        return lines

    def count_cell(self, status: str, n: int) -> str:
        cell = f"{status} {n}"
        return self.style.ERROR(cell) if status == JobStatus.FAILED and n else cell

    def render_workers(self) -> list[str]:
        stale_before = timezone.now() - timedelta(seconds=get_settings().LEASE_TIMEOUT * 2)
        workers = list(Worker.objects.order_by("name"))
        if not workers:
            return ["0 workers"]
        name_width = max(len(w.name) for w in workers)
        lines = []
        busy = 0
        for worker in workers:
            if worker.last_seen < stale_before:
                seen = worker.last_seen.isoformat(timespec="seconds")
                state, doing = self.style.WARNING("stale"), f"last seen {seen}"
            elif worker.current_job:
                busy += 1
                state, doing = (
                    self.style.SUCCESS("busy "),
                    (f"job {worker.current_job} {worker.current_task}"),
                )
            else:
                state, doing = "idle ", ""
            replaced = (
                f"  replaced {worker.replacements}x, last: {worker.replaced_because}"
                if worker.replacements
                else ""
            )
            lines.append(
                f"{worker.name:<{name_width}}  {state}  queues {worker.queues}  "
                f"done {worker.jobs_done}{replaced}  {doing}".rstrip()
            )
        lines.append(f"{len(workers)} workers, {busy} busy")
        return lines

    def render_schedules(self) -> list[str]:
        from jobqueue.management.commands.jobschedules import schedule_lines

        return schedule_lines(self.style)


def _positive_seconds(value: Any) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise CommandError(f"--interval: expected a number of seconds, got {value!r}") from None
    if seconds <= 0:
        raise CommandError(f"--interval: must be more than 0, got {value!r}")
    return seconds


def _bar_length(n: int, largest: int) -> int:
    """Bars are scaled to the longest queue; any waiting job shows at least one block."""
    if n <= 0 or largest <= 0:
        return 0
    return max(1, round(BAR_WIDTH * n / largest))


def _bar_glyph(stream: Any) -> str:
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        "\u2588".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "#"
    return "\u2588"
