"""A filtering HTTP proxy between Chromium and the network: every connection passes a check first.

Chromium is started with this proxy for every scheme and host, loopback included, so a redirect
hop, an image, a frame, a fetch or a WebSocket is checked before anything is sent to its host; a
refused one is never connected to. The proxy connects to the very addresses the check returned, so
a name that resolves differently the second time (DNS rebinding) changes nothing. Like
``browser.py``, this module knows nothing of Django: the check is given by the caller.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

# host, port -> the addresses that may be connected to; raises (any exception) to refuse.
Check = Callable[[str, int], list[str]]

MAX_HEAD = 64 * 1024
ACCEPT_BACKOFF = 0.05  # seconds, doubled after each failed accept in a row
ACCEPT_BACKOFF_MAX = 2.0
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization",
              b"proxy-authenticate", b"te", b"trailer", b"upgrade"}


@dataclass(frozen=True)
class Problem:
    """A connection the proxy did not make: ``refused`` by the check, or failed with ``code``
    (Chromium's name for the error, e.g. ``ERR_CONNECTION_REFUSED``). ``target``: the URL of a
    plain http request, ``host:port`` of a tunnel (https, wss)."""

    target: str
    host: str
    port: int
    reason: str
    code: str
    refused: bool


def resolve_only(host: str, port: int) -> list[str]:
    """No filtering at all: for local measurements, never for visitors' URLs."""
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def refuse_everything(host: str, port: int) -> list[str]:
    raise PermissionError("no page is being captured")


class FilteringProxy:
    """Listens on 127.0.0.1 (a free port) in a thread of its own; one thread per connection."""

    def __init__(self, connect_timeout: float = 10.0, idle_timeout: float = 60.0) -> None:
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self._check: Check = refuse_everything
        self._problems: list[Problem] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="shootr-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @contextlib.contextmanager
    def checking(self, check: Check) -> Iterator[list[Problem]]:
        """Check connections with ``check`` inside the block (outside, everything is refused);
        yields the list of the block's problems, filled in as they happen."""
        problems: list[Problem] = []
        with self._lock:
            self._check, self._problems = check, problems
        try:
            yield problems
        finally:
            with self._lock:
                self._check, self._problems = refuse_everything, []

    def alive(self) -> bool:
        """Still accepting connections: not closed, and its accept loop still running."""
        return not self._closed.is_set() and self._thread.is_alive()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=5)

    # -- the connections ---------------------------------------------------------------------
    def _serve(self) -> None:
        """Accept until ``close()``: a failed accept (out of file descriptors) or a thread that
        cannot start costs that one connection, never the proxy."""
        backoff = ACCEPT_BACKOFF
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError as exc:
                if self._closed.is_set():
                    return
                logger.warning("proxy accept failed error=%s retry_in=%ss", exc, backoff)
                self._closed.wait(backoff)
                backoff = min(backoff * 2, ACCEPT_BACKOFF_MAX)
                continue
            try:
                threading.Thread(target=self._handle, args=(client,), daemon=True).start()
            except RuntimeError as exc:  # "can't start new thread"
                client.close()
                logger.warning("proxy thread failed error=%s retry_in=%ss", exc, backoff)
                self._closed.wait(backoff)
                backoff = min(backoff * 2, ACCEPT_BACKOFF_MAX)
                continue
            backoff = ACCEPT_BACKOFF

    def _handle(self, client: socket.socket) -> None:
        with client:
            client.settimeout(self.idle_timeout)
            try:
                head, rest = _read_head(client)
                if head:
                    self._relay(client, head, rest)
            except (OSError, ValueError) as exc:
                logger.debug("proxy connection ended: %s", exc)

    def _relay(self, client: socket.socket, head: bytes, rest: bytes) -> None:
        request_line, _, headers = head.partition(b"\r\n")
        method, target, version = request_line.decode("latin-1").split(" ", 2)
        if method == "CONNECT":  # https and wss: a tunnel to host:port
            host, _, port = target.rpartition(":")
            upstream = self._open(target, host.strip("[]"), int(port))
            if upstream is None:
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            client.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        else:  # plain http, the absolute URL in the request line
            parts = urlsplit(target)
            if parts.scheme != "http" or not parts.hostname:
                client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                return
            fields = _fields(headers)
            if b"transfer-encoding" in fields:  # a body of unknown length: Chromium sends none
                client.sendall(b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\n\r\n")
                return
            upstream = self._open(target, parts.hostname, parts.port or 80)
            if upstream is None:
                return  # no answer at all: a network error for the browser, never a page to show
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            kept = [line for line in headers.split(b"\r\n")
                    if line and line.split(b":", 1)[0].strip().lower() not in HOP_BY_HOP]
            request = b"\r\n".join([f"{method} {path} {version}".encode("latin-1"), *kept,
                                     b"Connection: close", b"", b""])
            with upstream:
                upstream.settimeout(self.idle_timeout)
                _one_exchange(client, upstream, request, rest,
                              int(fields.get(b"content-length", b"0") or 0), self.idle_timeout)
            return
        with upstream:
            upstream.settimeout(self.idle_timeout)
            if rest:
                upstream.sendall(rest)
            _pipe(client, upstream, self.idle_timeout)

    def _open(self, target: str, host: str, port: int) -> socket.socket | None:
        """Check, then connect to one of the checked addresses; None (and a problem recorded)
        when refused or unreachable."""
        with self._lock:
            check, problems = self._check, self._problems
        try:
            addresses = check(host, port)
        except Exception as exc:  # whatever the check raises is a refusal
            # Between pages, only the browser's own background requests come here.
            level = logging.DEBUG if check is refuse_everything else logging.INFO
            logger.log(level, "proxy refused target=%s reason=%s", target, exc)
            problems.append(Problem(target, host, port, str(exc), "ERR_BLOCKED_BY_CLIENT",
                                    refused=True))
            return None
        error: OSError = OSError("no address")
        for address in addresses:
            try:
                return socket.create_connection((address, port), timeout=self.connect_timeout)
            except OSError as exc:
                error = exc
        problems.append(Problem(target, host, port, str(error), _net_error(error),
                                refused=False))
        return None


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The request line and headers, and whatever came after them."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(8192)
        if not chunk:
            return b"", b""
        data += chunk
        if len(data) > MAX_HEAD:
            raise ValueError("request head too long")
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _fields(headers: bytes) -> dict[bytes, bytes]:
    """Header names (lower case) and values; a repeated name keeps its last value."""
    fields = {}
    for line in headers.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return fields


def _one_exchange(client: socket.socket, upstream: socket.socket, request: bytes, body: bytes,
                  length: int, idle_timeout: float) -> None:
    """Strictly one request per connection, so that every request is checked for its own host:
    the request and its ``length`` bytes of body go up; then only the answer comes down, its
    head saying ``Connection: close`` whatever the server said, and anything more the browser
    sends (a second request on a kept-alive connection) ends the connection instead of reaching
    a host checked for another request."""
    upstream.sendall(request + body[:length])
    length -= len(body[:length])
    while length > 0:
        data = client.recv(min(65536, length))
        if not data:
            return
        upstream.sendall(data)
        length -= len(data)
    head, rest = _read_answer_head(upstream)
    while head is not None:
        status = head.split(b" ", 2)[1] if head.count(b" ") else b""
        if status == b"101":  # no protocol switch on a connection made for one request
            return
        client.sendall(_close_head(head))
        if not (status.startswith(b"1") and len(status) == 3):
            break
        head, rest = _read_answer_head(upstream, rest)  # an interim answer: the final one next
    if head is None:
        return
    if rest:
        client.sendall(rest)
    while True:
        readable, _, _ = select.select([client, upstream], [], [], idle_timeout)
        if not readable or client in readable:  # done reading, or more than one request
            return
        data = upstream.recv(65536)
        if not data:
            return
        client.sendall(data)


def _read_answer_head(sock: socket.socket, data: bytes = b"") -> tuple[bytes | None, bytes]:
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD:
            raise ValueError("answer head too long")
        chunk = sock.recv(8192)
        if not chunk:
            return None, b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _close_head(head: bytes) -> bytes:
    status, *lines = head.split(b"\r\n")
    kept = [line for line in lines
            if line.split(b":", 1)[0].strip().lower() not in HOP_BY_HOP]
    return b"\r\n".join([status, *kept, b"Connection: close", b"Proxy-Connection: close",
                          b"", b""])


def _pipe(client: socket.socket, upstream: socket.socket, idle_timeout: float) -> None:
    """Copy both ways until either side closes (the answer is complete, or the browser has
    moved on) or nothing moves for ``idle_timeout``."""
    peers = {client: upstream, upstream: client}
    while True:
        readable, _, _ = select.select(list(peers), [], [], idle_timeout)
        if not readable:
            return
        for sock in readable:
            data = sock.recv(65536)
            if not data:
                return
            peers[sock].sendall(data)


def _net_error(error: OSError) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "ERR_CONNECTION_REFUSED"
    if isinstance(error, TimeoutError):
        return "ERR_CONNECTION_TIMED_OUT"
    if error.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "ERR_ADDRESS_UNREACHABLE"
    return "ERR_CONNECTION_FAILED"
