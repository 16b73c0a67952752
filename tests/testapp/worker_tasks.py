"""Tasks for the worker's fault tests: each run leaves a ``Run`` row when it starts, so a run
lost or made twice shows whatever jobqueue recorded."""

import os
import subprocess
import sys
import time
from pathlib import Path

from jobqueue import task
from tests.testapp.models import Run


def counted(key: str) -> None:
    Run.objects.create(key=key, pid=os.getpid())


@task
def count(key):
    counted(key)
    return os.getpid()


@task(max_retries=1)
def die(key, code):
    """Its process dies mid-job, as from a segfault or an OOM kill."""
    counted(key)
    os._exit(code)


@task
def raise_base(key, kind):
    """Raises what is not an Exception: ``sys.exit()``, KeyboardInterrupt, GeneratorExit."""
    counted(key)
    if kind == "exit":
        sys.exit(3)
    raise {"interrupt": KeyboardInterrupt, "generator": GeneratorExit}[kind]()


@task(timeout=1)
def hang(key):
    counted(key)
    time.sleep(3600)


@task
def hold(key, release, timeout=30.0):
    """Counted, then waits until the file ``release`` exists; returns this process's pid."""
    counted(key)
    deadline = time.monotonic() + timeout
    while not Path(release).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(release)
        time.sleep(0.01)
    return os.getpid()


@task
def terminate_a_child():
    """Starts a program and stops it with SIGTERM; its exit status (-15 when it worked)."""
    child = subprocess.Popen(["sleep", "60"])
    cmdline = Path(f"/proc/{child.pid}/cmdline")
    deadline = time.monotonic() + 10
    while not cmdline.read_bytes().startswith(b"sleep") and time.monotonic() < deadline:
        time.sleep(0.01)  # until it has exec'd: a signal before that would hit this copy
    child.terminate()
    try:
        return child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        return "ignored SIGTERM"


@task(max_retries=0)
def refused_text(key, kind):
    """Fails with text a database refuses as it stands: a NUL (PostgreSQL), or a lone surrogate
    such as ``surrogateescape`` leaves (any UTF-8 encoder)."""
    counted(key)
    bad = {"nul": "a\x00b", "surrogate": b"caf\xe9".decode("utf-8", "surrogateescape")}[kind]
    raise ValueError(bad)


@task(name="tests.t\u00e2che." + "\u00e9" * 120 + "x")
def long_unicode_name(key, seconds):
    """A name whose UTF-8 bytes are longer than the slot keeps, cut inside a character; runs
    for ``seconds`` so that the supervisor reads it."""
    counted(key)
    time.sleep(seconds)
    return 1


@task
def fork_and_return(key, path):
    """Forks; both copies return from the task, as a careless library's fork would. The copy
    writes its pid to ``path`` (a database connection is not to be shared across a fork)."""
    pid = os.fork()
    if pid == 0:
        Path(path).write_text(str(os.getpid()))
    else:
        counted(key)
    return os.getpid()


@task
def close_raw_connection(key):
    """Closes the driver's connection under Django's feet."""
    from django.db import connection

    counted(key)
    connection.ensure_connection()
    connection.connection.close()


@task
def leave_transaction_open(key):
    """Starts a transaction on Django's connection and never ends it."""
    from django.db import connection

    counted(key)
    with connection.cursor() as cursor:
        cursor.execute("BEGIN")
