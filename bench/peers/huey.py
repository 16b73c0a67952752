"""Huey with its Redis storage (blocking pops): ``huey_consumer -k process -w P``, periodic
tasks off."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from huey import RedisHuey

from bench.peers.common import BATCH, Adapter, count, redis_url, stamp_start

huey = RedisHuey("bench", url=redis_url())


@huey.task()
def noop():
    count()


@huey.task()
def stamp(i):
    stamp_start(i)


class HueyAdapter(Adapter):
    env = "huey"
    configs = {"process": "-k process -w P"}

    def enqueue_one(self) -> None:
        noop()

    def enqueue_bulk(self, n: int) -> None:
        # Task.map enqueues one at a time: Huey has no batched enqueue.
        for start in range(0, n, BATCH):
            noop.map([()] * min(BATCH, n - start))

    def send_stamp(self, i: int) -> None:
        stamp(i)

    def remaining(self) -> int:
        # Queued only: a Huey worker pops one job and runs it, so at most P are in flight.
        return int(huey.pending_count())

    def worker(self, procs: int) -> tuple[list[str], dict[str, Any]]:
        consumer = [str(Path(sys.executable).parent / "huey_consumer")]
        argv = [*consumer, "bench.peers.huey.huey", "-k", "process", "-w", str(procs), "-n", "-q"]
        return argv, {}


ADAPTER = HueyAdapter
