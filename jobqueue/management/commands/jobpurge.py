"""``jobpurge``: delete finished jobs older than an age, or every job waiting in a queue."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobqueue.brokers import get_broker
from jobqueue.conf import get_settings

UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)", re.IGNORECASE)


class Command(BaseCommand):
    help = (
        "Delete finished jobs older than an age (--finished-older-than 7d), "
        "or empty a queue of its waiting jobs (--queue NAME)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--finished-older-than",
            metavar="AGE",
            help="Delete succeeded, failed and canceled jobs that ended more than "
            "AGE ago: 7d, 12h, 30m, 90s, 2w or plain seconds.",
        )
        parser.add_argument(
            "--queue",
            action="append",
            default=[],
            metavar="NAME",
            help="Delete every job waiting (queued or scheduled) in the queue "
            "NAME; may be given more than once.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        age_text = options["finished_older_than"]
        queues = _as_list(options["queue"])
        if age_text is None and not queues:
            raise CommandError("give --finished-older-than AGE, --queue NAME, or both")
        known = get_settings().QUEUES
        unknown = [q for q in queues if q not in known]
        if unknown:
            raise CommandError(
                f"unknown queue {unknown[0]!r}; JOBQUEUE['QUEUES'] has {list(known)}"
            )
        # Every argument is checked before anything is deleted.
        age = parse_age(age_text) if age_text is not None else None
        broker = get_broker()
        if age is not None:
            count = broker.purge_finished(age)
            self.stdout.write(f"Deleted {_jobs(count)} finished more than {age_text} ago.")
        for queue in queues:
            count = broker.purge_queue(queue)
            self.stdout.write(f"Deleted {_jobs(count)} waiting in queue {queue!r}.")


def parse_age(text: Any) -> timedelta:
    """``7d``, ``12h``, ``30m``, ``90s``, ``2w`` or plain seconds; a timedelta passes through."""
    if isinstance(text, timedelta):
        return text
    match = AGE.fullmatch(str(text).strip())
    if match is None:
        raise CommandError(
            f"--finished-older-than: cannot read {text!r} as an age; use e.g. 7d, 12h, 30m, 90s "
            "or a number of seconds"
        )
    number, unit = match.groups()
    return timedelta(seconds=float(number) * UNITS[unit.lower()])


def _as_list(value: Any) -> list[str]:
    """``call_command(..., queue="low")`` passes a string where the command line gives a list."""
    if isinstance(value, str):
        return [value]
    return list(value or [])


def _jobs(n: int) -> str:
    return f"{n} job{'' if n == 1 else 's'}"
