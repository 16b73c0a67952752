"""The Job table, written in batches from a broker's event stream.

A broker that keeps its queues elsewhere (Redis) appends an event for every change of a job's
state; whoever calls ``Tracker.sync`` (workers, every half second; the admin, before it lists)
folds a batch of events into one SELECT and one upsert, so tracking costs the database a few
statements per thousand jobs, not several per job. Replaying an event is harmless.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from django.db import transaction

from jobqueue.message import Message
from jobqueue.models import Job
from jobqueue.states import JobStatus

logger = logging.getLogger(__name__)

FIELDS = [f.name for f in Job._meta.concrete_fields if not f.primary_key]


def from_ms(value: Any) -> datetime | None:
    ms = int(value or 0)
    return datetime.fromtimestamp(ms / 1000, UTC) if ms else None


def from_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class Tracker:
    """Applies events ``{"k": kind, "i": job id, ...}`` (see jobqueue.brokers.redis_scripts)."""

    def __init__(self, decode: Callable[[str, str], Message]) -> None:
        self.decode = decode  # (job id, message body) -> Message

    def apply(self, events: Iterable[dict[str, str]]) -> int:
        changes: dict[str, list[dict[str, str]]] = {}
        for event in events:
            try:
                job_id = str(uuid.UUID(event["i"]))
            except (KeyError, ValueError):
                logger.warning("state=untrackable event=%r", event)
                continue
            changes.setdefault(job_id, []).append(event)
        if not changes:
            return 0
        with transaction.atomic():
            rows = Job.objects.in_bulk(list(changes))
            updated = []
            for job_id, job_events in changes.items():
                row = rows.get(uuid.UUID(job_id))
                for event in job_events:
                    row = self.fold(job_id, row, event)
                if row is not None:
                    updated.append(row)
            Job.objects.bulk_create(
                updated, update_conflicts=True, unique_fields=["id"], update_fields=FIELDS
            )
        return len(updated)

    def fold(self, job_id: str, row: Job | None, event: dict[str, str]) -> Job | None:
        """The row after ``event``; a job first seen without its enqueue event is made from the
        message body the event carries, so even a malformed message leaves a record."""
        kind = event.get("k")
        if kind == "e" or (row is None and event.get("b")):
            message = self.decode(job_id, event.get("b", ""))
            run_at = from_ms(event.get("r")) if kind == "e" else None
            fresh = Job.from_message(message, status=event.get("s", JobStatus.QUEUED))
            fresh.run_at = run_at or fresh.run_at
            if row is None or kind == "e":
                if row is not None:  # a requeue: the old row takes the new message's state
                    fresh.attempts = 0
                row = fresh
        if row is None:
            return None
        if kind == "s":
            row.status = JobStatus.STARTED
            row.worker = event["w"]
            row.attempts = int(event["a"])
            row.started_at = from_ms(event["t"])
        elif kind == "q":
            row.status = JobStatus.QUEUED
            row.worker = ""
            if "a" in event:
                row.attempts = int(event["a"])
        elif kind in ("f", "c"):
            payload = json.loads(event["p"])
            row.status = event.get("s", payload["status"])
            row.result = payload.get("result")
            row.error = payload.get("error", "")
            row.traceback = payload.get("traceback", "")
            row.started_at = from_iso(payload.get("started_at")) or row.started_at
            row.ended_at = from_iso(payload.get("ended_at"))
            row.run_at = from_iso(payload.get("run_at")) or row.run_at
            if row.status in (JobStatus.SCHEDULED, JobStatus.QUEUED):
                row.ended_at = None
        return row
