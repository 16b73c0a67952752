"""RQ: ``SimpleWorker`` (runs jobs in the worker process) and the default ``Worker`` (forks a
work horse per job). P processes are P worker instances on the queue. Results kept as by
default (500 s), like jobqueue's."""

from __future__ import annotations

import sys
from typing import Any

from redis import Redis
from rq import Queue
from rq.registry import StartedJobRegistry

from bench.peers.common import BATCH, Adapter, client, count, redis_url, stamp_start


def noop():
    count()


def stamp(i):
    stamp_start(i)


class RQAdapter(Adapter):
    env = "rq"
    configs = {"simple": "SimpleWorker", "fork": "Worker (fork per job)"}

    def setup(self) -> None:
        self.connection = Redis.from_url(redis_url())
        self.queue = Queue("default", connection=self.connection)
        self.started = StartedJobRegistry(queue=self.queue)

    def enqueue_one(self) -> None:
        self.queue.enqueue(noop)

    def enqueue_bulk(self, n: int) -> None:
        for start in range(0, n, BATCH):
            self.queue.enqueue_many(
                [Queue.prepare_data(noop) for _ in range(min(BATCH, n - start))]
            )

    def send_stamp(self, i: int) -> None:
        self.queue.enqueue(stamp, i)

    def remaining(self) -> int:
        pipe = client().pipeline(transaction=False)
        pipe.llen(self.queue.key)
        pipe.zcard(self.started.key)
        return sum(pipe.execute())

    def worker(self, procs: int) -> tuple[list[str], dict[str, Any]]:
        cls = "rq.worker.SimpleWorker" if self.config == "simple" else "rq.worker.Worker"
        argv = [
            sys.executable,
            "-m",
            "rq.cli",
            "worker",
            "--url",
            redis_url(),
            "-w",
            cls,
            "--logging_level",
            "WARNING",
            "-q",
            "default",
        ]
        return argv, {}

    def worker_instances(self, procs: int) -> int:
        return procs


ADAPTER = RQAdapter
