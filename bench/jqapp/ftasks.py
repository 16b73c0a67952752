"""The benchmark's tasks written against Django's tasks framework (``django.tasks``, or the
``django-tasks`` backport on Django 5.2), sent through ``jobqueue.backend.JobQueueBackend``: the
same no-op and latency stamp as every peer's. Imported only with BENCH_FRAMEWORK=1."""

from bench.peers.common import count, stamp_start
from jobqueue.framework import task


@task()
def noop():
    count()


@task()
def stamp(i):
    stamp_start(i)
