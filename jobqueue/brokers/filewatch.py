"""Sleep until a file is written to, without polling it: inotify, on Linux.

An idle worker on SQLite waits on the database's write-ahead log: every commit of another
process writes to it. The file's directory is watched, not the file, so a log deleted and
created again (when the last connection to the database closes) is still followed.
"""

from __future__ import annotations

import ctypes
import math
import os
import select
import struct
import time
from collections.abc import Sequence

IN_MODIFY = 0x002
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_Q_OVERFLOW = 0x4000
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name


class FileWatch:
    """Writes to some files of one directory, as a descriptor to wait on."""

    def __init__(self, fd: int, names: set[bytes]) -> None:
        self.fd = fd
        self.names = names
        self.poller = select.poll()
        self.poller.register(fd, select.POLLIN)

    @classmethod
    def open(cls, path: str, files: Sequence[str]) -> FileWatch | None:
        """A watch of ``files``, all in the directory of ``path``; None where inotify is missing
        (not Linux) or refused."""
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            init, add = libc.inotify_init1, libc.inotify_add_watch
        except (OSError, AttributeError):
            return None
        fd = init(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            return None
        directory = os.path.dirname(os.path.abspath(path)).encode()
        if add(fd, directory, IN_MODIFY | IN_CREATE | IN_MOVED_TO) < 0:
            os.close(fd)
            return None
        return cls(fd, {os.path.basename(f).encode() for f in files})

    def wait(self, timeout: float) -> bool:
        """Block until the file is written to, or ``timeout`` seconds; True if it was."""
        deadline = time.monotonic() + timeout
        while True:
            milliseconds = math.ceil(max(0.0, deadline - time.monotonic()) * 1000)
            if self.poller.poll(milliseconds) and self.drain():
                return True
            if time.monotonic() >= deadline:
                return False

    def drain(self) -> bool:
        """Read the events waiting; True if one was a write to the file (or events were lost)."""
        written = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return written
            offset = 0
            while offset < len(data):
                _, mask, _, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size
                name = data[offset : offset + length].rstrip(b"\0")
                offset += length
                written = written or name in self.names or bool(mask & IN_Q_OVERFLOW)

    def close(self) -> None:
        os.close(self.fd)
