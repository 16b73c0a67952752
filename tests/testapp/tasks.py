"""Tasks the tests send to real workers; they leave traces in files or rows to assert on."""

import ctypes
import os
import time
from pathlib import Path

from jobqueue import task
from tests.testapp.models import Note


@task
def add(x, y):
    return x + y


@task(queue="high")
def urgent(x):
    return x


@task
def record(path, value):
    """Append ``value`` and this process's pid to ``path``: how tests count runs."""
    with open(path, "a") as f:
        f.write(f"{value} {os.getpid()}\n")
    return value


@task
def fail(message):
    raise ValueError(message)


@task(max_retries=2, retry_backoff=0)
def flaky(path, succeed_on):
    """Fails until it has been tried ``succeed_on`` times (counted in ``path``)."""
    with open(path, "a") as f:
        f.write("try\n")
    tries = len(Path(path).read_text().splitlines())
    if tries < succeed_on:
        raise RuntimeError(f"try {tries} fails")
    return tries


@task(max_retries=1, retry_backoff=3600)
def fail_later(message):
    """Fails once, and its retry waits an hour."""
    raise ValueError(message)


@task
def wait_for_file(path, marker, timeout=30.0):
    """Write ``marker`` (so the test knows the job runs), then block until ``path`` exists."""
    Path(marker).write_text(str(os.getpid()))
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)
    return "released"


@task(timeout=1)
def stuck_in_c(marker):
    """Blocks inside C code (libc sleep), where no Python-level signal handler ever runs."""
    Path(marker).write_text(str(os.getpid()))
    ctypes.CDLL(None).sleep(3600)


@task
def note_text(note):
    return note.text


@task
def make_note(text):
    return Note.objects.create(text=text).pk


# -- For the fault suite (tests/faults): every run is counted on a Redis list of the test's own,
# outside the broker and the database under test, so a lost or a duplicate run shows.

_counters: dict = {}


def count_run(counter, item):
    """RPUSH ``"<item> <pid>"`` onto ``counter`` (``"redis://host:port/db|list key"``)."""
    import redis

    url, key = counter.split("|", 1)
    client = _counters.get(url)
    if client is None:
        client = _counters[url] = redis.Redis.from_url(url, socket_timeout=5)
    client.rpush(key, f"{item} {os.getpid()}")
    return client


@task
def tally(counter, item, pause=0.0):
    """Counted; then takes ``pause`` seconds."""
    count_run(counter, item)
    time.sleep(pause)
    return item


@task
def gated(counter, item, gate, timeout=30.0):
    """Counted when it starts; then waits until the key ``gate`` exists on the counter's Redis,
    and is counted again (as ``<item>:done``) when it returns."""
    client = count_run(counter, item)
    deadline = time.monotonic() + timeout
    while not client.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(gate)
        time.sleep(0.01)
    count_run(counter, f"{item}:done")
    return item


def _die(how):
    if how == "kill":
        os.kill(os.getpid(), 9)
    os._exit(int(how.removeprefix("exit")))


@task(max_retries=1)
def dies(counter, item, how):
    """Counted, then its process dies: ``how`` is ``exit<code>`` or ``kill`` (SIGKILL)."""
    count_run(counter, item)
    _die(how)


@task
def dies_no_retry(counter, item, how):
    count_run(counter, item)
    _die(how)


class LibraryAbort(BaseException):
    """What some libraries raise to unwind everything (like gevent's GreenletExit)."""


@task
def raises_base(counter, item, kind):
    """Counted, then raises a BaseException that is not an Exception."""
    count_run(counter, item)
    if kind == "sys.exit":
        import sys

        sys.exit()
    if kind == "KeyboardInterrupt":
        raise KeyboardInterrupt
    raise LibraryAbort("unwinding")


@task(timeout=1)
def overruns(counter, item):
    """Counted, then outlives its 1 s timeout."""
    count_run(counter, item)
    time.sleep(60)
