"""Tasks for the schedule tests (in ``TASK_MODULES`` of ``schedule_settings``)."""

from __future__ import annotations

import os

from jobqueue import task


@task
def tick(path, scheduled_at=None, fail_every=0):
    """Append the tick this run belongs to (one line per run), then fail on every
    ``fail_every``-th second if asked: a failing job keeps its schedule."""
    with open(path, "a") as f:
        f.write(f"{scheduled_at.isoformat()} {os.getpid()}\n")
    if fail_every and scheduled_at.second % fail_every == 0:
        raise ValueError(f"tick {scheduled_at} fails on purpose")


@task
def greet(name, punctuation="!"):
    return f"hello {name}{punctuation}"
