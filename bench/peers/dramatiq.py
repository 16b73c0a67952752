"""Dramatiq with its Redis broker and default middleware; ``-p P -t T`` (BENCH_DRAMATIQ_THREADS,
default 4: the best of 1/2/4/8 for a no-op on this machine)."""

from __future__ import annotations

import os
import sys
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.peers.common import BATCH, Adapter, client, count, redis_url, stamp_start

THREADS = int(os.environ.get("BENCH_DRAMATIQ_THREADS", "4"))

broker = RedisBroker(url=redis_url())
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="default", max_retries=0)
def noop():
    count()


@dramatiq.actor(queue_name="default", max_retries=0)
def stamp(i):
    stamp_start(i)


class DramatiqAdapter(Adapter):
    env = "dramatiq"
    configs = {"redis": f"-p P -t {THREADS}"}

    def enqueue_one(self) -> None:
        noop.send()

    def enqueue_bulk(self, n: int) -> None:
        for start in range(0, n, BATCH):
            dramatiq.group(noop.message() for _ in range(min(BATCH, n - start))).run()

    def send_stamp(self, i: int) -> None:
        stamp.send(i)

    def remaining(self) -> int:
        # Message bodies stay in the .msgs hash until acknowledged (after the run).
        return int(client().hlen("dramatiq:default.msgs"))

    def worker(self, procs: int) -> tuple[list[str], dict[str, Any]]:
        argv = [
            sys.executable,
            "-m",
            "dramatiq",
            "bench.peers.dramatiq",
            "-p",
            str(procs),
            "-t",
            str(THREADS),
            "-Q",
            "default",
        ]
        return argv, {}


ADAPTER = DramatiqAdapter
