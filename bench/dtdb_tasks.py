"""django-tasks-db's tasks for the benchmark: the same no-op, and the latency stamp."""

from django_tasks import task

from bench.peers.common import stamp_start


@task()
def noop():
    pass


@task()
def stamp(i):
    stamp_start(i)
