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
