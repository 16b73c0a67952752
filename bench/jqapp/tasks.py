"""The benchmark's tasks for jobqueue: the same no-op as every peer's, and a latency stamp."""

from bench.peers.common import count, stamp_start
from jobqueue import task


@task
def noop():
    count()


@task
def stamp(i):
    stamp_start(i)
