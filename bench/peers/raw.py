"""The floor under every library's latency: a plain redis-py consumer blocked in ``BLPOP``, woken by
the producer's ``LPUSH``, whose first act is the same stamp as every task's. No library, no
serialization, no acknowledgement: what one wake through this Redis costs at all.

    python -m bench.peers.raw          # the consumer (started by the driver)
"""

from __future__ import annotations

import sys
from typing import Any

import redis

from bench.peers.common import Adapter, client, redis_url, stamp_start

QUEUE = "bench:raw"


class RawAdapter(Adapter):
    env = "jobqueue"  # any environment with redis-py
    configs = {"blpop": "LPUSH -> BLPOP, one plain redis-py consumer"}

    def enqueue_one(self) -> None:
        client().lpush(QUEUE, "-")

    def send_stamp(self, i: int) -> None:
        client().lpush(QUEUE, str(i))

    def remaining(self) -> int:
        return int(client().llen(QUEUE))

    def worker(self, procs: int) -> tuple[list[str], dict[str, Any]]:
        return [sys.executable, "-m", "bench.peers.raw"], {}


ADAPTER = RawAdapter


def consume() -> None:
    # Blocks for as long as it is idle: no socket timeout (redis-py's default would end it).
    r = redis.Redis.from_url(redis_url(), socket_timeout=None)
    while True:
        _, item = r.blpop([QUEUE], timeout=0)
        stamp_start(item.decode())


if __name__ == "__main__":
    consume()
