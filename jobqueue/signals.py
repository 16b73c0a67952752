"""Shutdown signals for the worker supervisor, kept apart from the loop that reacts to them.

Handlers only count signals and poke a pipe, so the supervisor can wait on its children and the
pipe at once; the previous handlers are restored on exit.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass
class ShutdownRequests:
    count: int = 0
    wakeup_fd: int = -1
    _write_fd: int = field(default=-1, repr=False)

    def drain(self) -> None:
        try:
            while os.read(self.wakeup_fd, 512):
                pass
        except BlockingIOError:
            pass


@contextmanager
def shutdown_requests() -> Iterator[ShutdownRequests]:
    """Count SIGTERM/SIGINT while the block runs; ``wakeup_fd`` becomes readable on each."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    requests = ShutdownRequests(wakeup_fd=read_fd, _write_fd=write_fd)

    def handler(signum: int, frame: FrameType | None) -> None:
        requests.count += 1
        with suppress(BlockingIOError):  # a full pipe has woken the supervisor already
            os.write(write_fd, b"\0")

    previous: dict[int, Any] = {sig: signal.signal(sig, handler) for sig in SHUTDOWN_SIGNALS}
    try:
        yield requests
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        os.close(read_fd)
        os.close(write_fd)


def _ignore(signum: int, frame: FrameType | None) -> None:
    """Does nothing: the supervisor decides when a child stops."""


def ignore_shutdown_signals() -> None:
    """For worker children: SIGTERM/SIGINT do nothing (only the supervisor decides when they
    stop), through a handler rather than SIG_IGN: a handler is reset at ``exec``, so programs a
    task starts get the default dispositions back and ``Popen.terminate()`` still stops them."""
    for sig in SHUTDOWN_SIGNALS:
        signal.signal(sig, _ignore)
        signal.siginterrupt(sig, False)  # and system calls it interrupts are restarted


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies, so an orphan never runs on."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
