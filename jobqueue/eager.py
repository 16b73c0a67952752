"""EAGER mode, for users' own tests: jobs run inline, as a worker would run them.

Arguments still round-trip through JSON, the job still waits for the transaction to commit, and
the outcome is recorded in the Job table, so ``JobResult`` behaves as it does with a worker.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import router, transaction
from django.utils import timezone

from jobqueue.brokers.base import announce
from jobqueue.execution import execute
from jobqueue.message import Message
from jobqueue.states import JobStatus

WORKER = "eager"  # the worker name of a job run inline


def run_eagerly(messages: Sequence[Message]) -> None:
    from jobqueue.models import Job, JobAttempt

    def run() -> None:
        for message in messages:
            failed: list[JobAttempt] = []
            while True:
                message.attempts += 1
                outcome = execute(message)
                if outcome.status != JobStatus.SUCCEEDED:
                    failed.append(
                        JobAttempt(
                            job_id=message.id,
                            number=message.attempts,
                            version=message.attempts,
                            worker=WORKER,
                            error=outcome.error,
                            traceback=outcome.traceback,
                            started_at=outcome.started_at,
                            ended_at=outcome.ended_at,
                        )
                    )
                if outcome.status != JobStatus.SCHEDULED:
                    break
            with transaction.atomic(using=alias):
                Job.from_message(
                    message,
                    status=outcome.status,
                    result=outcome.result,
                    error=outcome.error,
                    traceback=outcome.traceback,
                    attempts=message.attempts,
                    worker=WORKER,
                    started_at=outcome.started_at,
                    ended_at=timezone.now(),
                ).save(force_insert=True)
                JobAttempt.objects.bulk_create(failed)
            announce(Job, [(message.id, message.task, outcome.status)], alias)

    alias = router.db_for_write(Job)
    transaction.on_commit(run, using=alias)
