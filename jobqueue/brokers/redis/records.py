"""What operators do to Redis jobs: cancel, requeue, purge. Each goes through a script that
checks the job's state in Redis and raises its version; the Job table learns of it from the
event, like any other change (no row of a Redis job is updated here directly)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import redis
from django.utils import timezone

from jobqueue.brokers.base import announce, announcing
from jobqueue.brokers.redis import codec, results
from jobqueue.brokers.redis.client import text
from jobqueue.conf import get_settings
from jobqueue.exceptions import BrokerError
from jobqueue.states import FINISHED, JobStatus

if TYPE_CHECKING:
    from jobqueue.brokers.redis.broker import RedisBroker

logger = logging.getLogger(__name__)

CHUNK = 500
PURGE_CHUNK = 1000  # jobs one purge script call removes: Redis stays responsive meanwhile


def cancel(broker: RedisBroker, job_id: str) -> bool:
    """True if the job was waiting, scheduled, running, or still in the outbox; False if it has
    finished (tracked yet or not) or is unknown."""
    from jobqueue.models import Job, Outbox

    in_outbox = Outbox.objects.filter(job_id=job_id).exists()
    done = {
        "status": JobStatus.CANCELED.value,
        "error": "canceled",
        "ended_at": timezone.now().isoformat(),
    }
    canceled = bool(broker.run("CANCEL", job_id, results.ttl(), json.dumps(done), int(in_outbox)))
    if canceled and in_outbox:
        Outbox.objects.filter(job_id=job_id).delete()
        if not get_settings().TRACKING:
            Job.objects.filter(id=job_id).delete()  # untracked: no record to keep
    if canceled and announcing(type(broker)):  # named as the table knows it, once up to date
        broker.sync()
        task = Job.objects.filter(id=job_id).values_list("task", flat=True).first() or ""
        announce(type(broker), [(job_id, task, JobStatus.CANCELED)], broker.db_alias())
    return canceled


def requeue(broker: RedisBroker, job_ids: Sequence[str] | None = None) -> int:
    """Failed or canceled jobs back to the back of their queues, from the signed bodies the
    tracker stored (never from the row's columns): a job Redis shows live, or finished since
    with success, is left alone."""
    from jobqueue.models import Job

    broker.sync()
    rows = Job.objects.filter(status__in=(JobStatus.FAILED, JobStatus.CANCELED))
    if job_ids is not None:
        rows = rows.filter(id__in=list(job_ids))
    args: list[object] = []
    for pk, body in rows.values_list("id", "body").iterator():
        job_id = str(pk)
        if not body or not codec.verified(job_id, body):
            logger.warning(
                "job=%s state=requeue-refused reason=%s",
                job_id,
                "no signed body recorded" if not body else "its body does not verify",
            )
            continue
        args += [job_id, body]
    requeued = 0
    for start in range(0, len(args), CHUNK * 2):
        requeued += len(broker.run("REQUEUE", *args[start : start + CHUNK * 2]))
    if requeued:
        broker.sync()
    return requeued


def purge_queue(broker: RedisBroker, queue: str) -> int:
    """Every job waiting or scheduled in ``queue``, a chunk per script call. The calls are
    bounded by what the queue held when the purge began: under producers sending all along, the
    purge ends (jobs sent meanwhile may be left waiting)."""
    client = broker.client
    try:
        levels = [text(v) for v in client.zrange(broker.key("levels", queue), 0, -1)]
        pipe = client.pipeline(transaction=False)
        for level in levels:
            pipe.llen(broker.key("q", queue, level))
        pipe.zcard(broker.key("scheduled"))
        held = sum(int(n) for n in pipe.execute())
    except redis.RedisError as exc:
        raise BrokerError(f"Redis: {exc}") from exc
    calls = held // PURGE_CHUNK + 2
    removed, cursor, more = 0, 0, 1
    while (more or cursor >= 0) and calls > 0:
        count, cursor, more = (int(v) for v in broker.run("PURGE", queue, PURGE_CHUNK, cursor))
        removed += count
        calls -= 1
    broker.sync()
    return removed


def forget_results(broker: RedisBroker, older_than: timedelta) -> None:
    """The results in Redis of the finished jobs about to be purged from the table."""
    from jobqueue.models import Job

    cutoff = timezone.now() - older_than
    old = Job.objects.filter(status__in=FINISHED, ended_at__lt=cutoff)
    ids = [str(i) for i in old.values_list("id", flat=True)]
    for start in range(0, len(ids), CHUNK):
        broker.client.delete(*[broker.key("r", i) for i in ids[start : start + CHUNK]])
