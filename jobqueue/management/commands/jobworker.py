import logging
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobqueue import names
from jobqueue.conf import get_settings
from jobqueue.worker import Supervisor


class Command(BaseCommand):
    help = "Run jobs: serve the named queues (default: all of JOBQUEUE['QUEUES']) in order."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "queues", nargs="*", metavar="QUEUE", help="Queues to serve, highest priority first."
        )
        parser.add_argument(
            "--burst", action="store_true", help="Run every job that is runnable now, then exit 0."
        )
        parser.add_argument(
            "-c",
            "--concurrency",
            type=int,
            default=1,
            help="Number of worker processes (default 1).",
        )
        parser.add_argument("--name", help="Worker name (default: host.pid).")
        parser.add_argument(
            "--no-scheduler",
            action="store_true",
            help="Do not send the jobs of periodic schedules from this worker.",
        )
        parser.add_argument(
            "--max-jobs",
            type=int,
            metavar="N",
            help="Replace a process after it has run N jobs (its jobs acknowledged first).",
        )
        parser.add_argument(
            "--max-memory",
            type=float,
            metavar="MB",
            help="Replace a process whose resident memory passed MB after a job.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        logger = logging.getLogger("jobqueue")
        if not logger.handlers and not logging.getLogger().handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO if options["verbosity"] < 2 else logging.DEBUG)
        if options["name"] is not None:
            problem = names.worker_name_problem(options["name"], options["concurrency"])
            if problem:
                raise CommandError(problem)
        try:
            supervisor = Supervisor(
                queues=options["queues"] or get_settings().QUEUES,
                concurrency=options["concurrency"],
                burst=options["burst"],
                name=options["name"],
                scheduler=not options["no_scheduler"],
                max_jobs=options["max_jobs"],
                max_memory=options["max_memory"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        code = supervisor.run()
        if code:
            sys.exit(code)
