"""EAGER mode, for users' own tests: jobs run inline, as a worker would run them.

Arguments still round-trip through JSON, the job still waits for the transaction to commit, and
the outcome is recorded in the Job table, so ``JobResult`` behaves as it does with a worker.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction
from django.utils import timezone

from jobqueue.execution import execute
from jobqueue.message import Message
from jobqueue.states import JobStatus


def run_eagerly(messages: Sequence[Message]) -> None:
    from jobqueue.models import Job

    def run() -> None:
        for message in messages:
            while True:
                message.attempts += 1
                outcome = execute(message)
                if outcome.status != JobStatus.SCHEDULED:
                    break
            Job.from_message(
                message,
                status=outcome.status,
                result=outcome.result,
                error=outcome.error,
                traceback=outcome.traceback,
                attempts=message.attempts,
                worker="eager",
                started_at=outcome.started_at,
                ended_at=timezone.now(),
            ).save(force_insert=True)

    transaction.on_commit(run, using=Job.objects.db)
