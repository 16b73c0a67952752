"""``jobrequeue``: failed (and canceled) jobs back to their queues, attempts reset."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobqueue.brokers import get_broker


class Command(BaseCommand):
    help = "Put failed or canceled jobs back in their queues: all of them (--all) or by id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("job_ids", nargs="*", metavar="JOB_ID", help="Ids of jobs to requeue.")
        parser.add_argument(
            "--all", action="store_true", help="Requeue every failed or canceled job."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        given = list(options["job_ids"])
        if options["all"] and given:
            raise CommandError("give --all or job ids, not both")
        if not options["all"] and not given:
            raise CommandError("give --all, or the ids of the jobs to requeue")
        job_ids = None if options["all"] else [parse_job_id(value) for value in given]
        count = get_broker().requeue(job_ids)
        self.stdout.write(f"Requeued {count} job{'' if count == 1 else 's'}.")
        if job_ids is not None and count < len(set(job_ids)):
            skipped = len(set(job_ids)) - count
            self.stderr.write(
                f"{skipped} of the given jobs {'was' if skipped == 1 else 'were'} not failed or "
                "canceled (or no longer exist), and stayed as they were."
            )


def parse_job_id(value: str) -> str:
    """A job id in its canonical form, so ``requeue`` gets what the table holds."""
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        raise CommandError(f"not a job id: {value!r} (expected a UUID)") from None
