"""django-tasks-db's tasks for the benchmark: the same no-op, and the latency stamp."""

from django_tasks import task

from bench.peers.common import count, stamp_start


@task()
def noop():
    count()


@task()
def stamp(i):
    stamp_start(i)
