"""The outbox: jobs sent inside a transaction, or while Redis could not be reached, wait in the
database (their row, with the signed body, and an ``Outbox`` entry) until they are delivered:
after commit, or by a worker's relay once Redis is back.

A delivery sends the stored signed body. It is safe against every other party: the send skips a
job Redis holds or has an outcome for (a cancel of an undelivered job leaves one), the relay runs
under a lock, and a job whose row tracking has already recorded from Redis (version > 0: a send
whose reply was lost did land) is not sent again.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from django.utils import timezone

from jobqueue.brokers.redis import codec
from jobqueue.conf import get_settings
from jobqueue.exceptions import BrokerError
from jobqueue.message import Message
from jobqueue.states import WAITING

if TYPE_CHECKING:
    from jobqueue.brokers.redis.broker import RedisBroker

logger = logging.getLogger(__name__)

GRACE = timedelta(seconds=2)  # an outbox entry younger than this is left to its on_commit
CHUNK = 500
LOCK_MS = 30_000


def write(messages: Sequence[Message], bodies: Sequence[str]) -> None:
    from jobqueue.models import Job, Outbox

    now = timezone.now()
    rows = [Job.from_message(m, body=b) for m, b in zip(messages, bodies, strict=True)]
    # ignore_conflicts: a job of a chunk that did land may be tracked already.
    Job.objects.bulk_create(rows, ignore_conflicts=True)
    Outbox.objects.bulk_create(
        [Outbox(job_id=m.id, created_at=now) for m in messages], ignore_conflicts=True
    )


def deliver(broker: RedisBroker, job_ids: Sequence[str]) -> int:
    """Send the outbox's jobs among ``job_ids`` that are still waiting; returns how many."""
    from jobqueue.models import Job, Outbox

    rows = Job.objects.filter(id__in=list(job_ids), status__in=WAITING, version=0)
    messages, bodies = [], []
    for job_id, body, run_at in rows.values_list("id", "body", "run_at"):
        message = codec.decode(str(job_id), body)
        message.run_at = run_at
        messages.append(message)
        bodies.append(body)
    try:
        sent = broker.push(messages, bodies) if messages else []
    except (BrokerError, ValueError) as exc:
        logger.warning("state=outbox-kept jobs=%s error=%s", len(job_ids), exc)
        return 0
    Outbox.objects.filter(job_id__in=list(job_ids)).delete()
    if not get_settings().TRACKING:
        # The rows only carried the jobs to Redis; untracked jobs leave no record.
        Job.objects.filter(id__in=list(job_ids), version=0).delete()
    return len(sent)


def relay(broker: RedisBroker) -> int:
    """Deliver what is left in the outbox (a chunk), one relay at a time."""
    from jobqueue.models import Outbox

    cutoff = timezone.now() - GRACE
    ids = [
        str(i)
        for i in Outbox.objects.filter(created_at__lt=cutoff)
        .order_by("created_at")
        .values_list("job_id", flat=True)[:CHUNK]
    ]
    if not ids:
        return 0
    lock, token = broker.key("relay"), uuid.uuid4().hex
    client = broker.client
    if not client.set(lock, token, nx=True, px=LOCK_MS):
        return 0
    try:
        return deliver(broker, ids)
    finally:
        broker.run("UNLOCK", "relay", token)
