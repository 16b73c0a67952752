"""Celery with the Redis transport: its best no-op configuration.

``task_acks_late`` off (acknowledged when taken), results ignored, no gossip, mingle or
heartbeat, events off; the prefetch multiplier raised from 4 (BENCH_CELERY_PREFETCH, default 64)
so a process never waits for the broker between no-op jobs.
Configs: ``prefork`` (``--pool=prefork -c P``) and ``solo`` (P workers with ``--pool=solo``).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from celery import Celery, group

from bench.peers.common import BATCH, Adapter, client, count, redis_url, stamp_start

PREFETCH = int(os.environ.get("BENCH_CELERY_PREFETCH", "64"))

app = Celery("bench", broker=redis_url())
app.conf.update(
    task_acks_late=False,
    task_ignore_result=True,
    worker_prefetch_multiplier=PREFETCH,
    worker_send_task_events=False,
    task_send_sent_event=False,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    task_default_queue="celery",
)


@app.task(name="bench.noop")
def noop():
    count()


@app.task(name="bench.stamp")
def stamp(i):
    stamp_start(i)


class CeleryAdapter(Adapter):
    env = "celery"
    configs = {"prefork": "--pool=prefork -c P", "solo": "P x --pool=solo"}

    # group() sends one message at a time (about 1,500/s), and a drain is cut at a few seconds
    # anyway: a deeper queue would only lengthen the fill.
    max_drain_n = 5_000

    def enqueue_one(self) -> None:
        noop.delay()

    def enqueue_bulk(self, n: int) -> None:
        for start in range(0, n, BATCH):
            group(noop.s() for _ in range(min(BATCH, n - start))).apply_async()

    def send_stamp(self, i: int) -> None:
        stamp.delay(i)

    def remaining(self) -> int:
        # Queued, plus prefetched but not yet started (kombu's unacked hash).
        pipe = client().pipeline(transaction=False)
        pipe.llen("celery")
        pipe.hlen("unacked")
        return sum(pipe.execute())

    def worker(self, procs: int) -> tuple[list[str], dict[str, Any]]:
        pool = (
            ["--pool=prefork", f"--concurrency={procs}"]
            if self.config == "prefork"
            else ["--pool=solo"]
        )
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.peers.celery",
            "worker",
            *pool,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=WARNING",
            "-Q",
            "celery",
            "-n",
            f"bench{os.getpid()}-%i@%h",
        ]
        return argv, {}

    def worker_instances(self, procs: int) -> int:
        return 1 if self.config == "prefork" else procs


ADAPTER = CeleryAdapter
