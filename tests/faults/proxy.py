"""A TCP proxy between worker processes and Redis or PostgreSQL that injects network faults.

Real clients talk to it as to the server; nothing in them is mocked. Controls, all immediate:

- ``pass_()``: forward everything (the default); resumes stalled connections.
- ``stall()``: keep every connection (and accept new ones) but forward nothing: a server that
  hangs, a full network buffer, a failover in progress.
- ``cut()``: close both sides of every connection now (FIN); ``reset()``: the same with RST
  (``SO_LINGER`` 0), as a crashed host or a firewall sends.
- ``down()``: cut everything and close each new connection at once, until ``pass_()``.
- ``arm(action, after=N, request=..., reply=...)``: once, on the first reply to a request
  containing ``request`` (if given; the last request sent on that connection) and that
  contains ``reply`` (if given), forward
  ``after`` bytes of it, then ``cut``, ``reset`` or ``stall`` that connection. The server has
  done the work; the client never sees the whole answer, and may retry.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field

ACTIONS = ("cut", "reset", "stall")


@dataclass
class Trigger:
    action: str
    after: int = 0
    request: bytes | None = None
    reply: bytes | None = None
    fired: threading.Event = field(default_factory=threading.Event)


class Link:
    """One client connection and its upstream connection, pumped by two threads."""

    def __init__(
        self, proxy: Proxy, client: socket.socket, upstream: socket.socket, flowing: bool
    ) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.flowing = threading.Event()
        if flowing:
            self.flowing.set()
        self.closed = False
        self.matched = False  # the last request up this link held the trigger's pattern
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self.pump, args=(client, upstream, False), daemon=True),
            threading.Thread(target=self.pump, args=(upstream, client, True), daemon=True),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def pump(self, source: socket.socket, target: socket.socket, is_reply: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if not self.wait_flowing():
                    break
                if is_reply:
                    data = self.proxy.on_reply(self, data)
                    if data is None or not self.wait_flowing():  # a trigger may stall it
                        break
                else:
                    self.proxy.on_request(self, data)
                if data:
                    target.sendall(data)
                    self.proxy.count(len(data), is_reply)
        except OSError:
            pass
        self.close()

    def wait_flowing(self) -> bool:
        """Block while stalled; False once the link is closed."""
        while not self.flowing.wait(0.05):
            if self.closed:
                return False
        return not self.closed

    def send_part(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self.client.sendall(data)

    def close(self, rst: bool = False) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                if rst:  # close() then aborts: RST. SHUT_RD sends nothing; it wakes the pumps.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.shutdown(socket.SHUT_RD)
                else:
                    sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        self.flowing.set()
        self.proxy.forget(self)


class Proxy:
    """Listens on 127.0.0.1:``port`` and forwards to ``upstream_port`` (on ``upstream_host``)."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)  # so that close() stops the accepting thread
        self.port = self.listener.getsockname()[1]
        self.mode = "pass"
        self.links: set[Link] = set()
        self.trigger: Trigger | None = None
        self.accepted = 0
        self.refused = 0  # connections closed at once while down: a client trying to get back
        self.bytes_up = 0
        self.bytes_down = 0
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.running = True
        self.thread = threading.Thread(target=self.accept_loop, daemon=True)
        self.thread.start()

    # -- controls ------------------------------------------------------------------------------
    def pass_(self) -> None:
        with self.lock:
            self.mode = "pass"
            links = list(self.links)
        for link in links:
            link.flowing.set()

    def stall(self) -> None:
        with self.lock:
            self.mode = "stall"
            links = list(self.links)
        for link in links:
            link.flowing.clear()

    def cut(self) -> None:
        for link in self.snapshot():
            link.close()

    def reset(self) -> None:
        for link in self.snapshot():
            link.close(rst=True)

    def down(self, rst: bool = False) -> None:
        with self.lock:
            self.mode = "down"
        for link in self.snapshot():
            link.close(rst=rst)

    def arm(
        self,
        action: str,
        after: int = 0,
        request: bytes | None = None,
        reply: bytes | None = None,
    ) -> Trigger:
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}")
        trigger = Trigger(action, after, request, reply)
        with self.lock:
            self.trigger = trigger
            for link in self.links:
                link.matched = False
        return trigger

    def snapshot(self) -> list[Link]:
        with self.lock:
            return list(self.links)

    # -- the pumps' callbacks ------------------------------------------------------------------
    def on_request(self, link: Link, data: bytes) -> None:
        trigger = self.trigger
        if trigger is not None and trigger.request is not None:
            link.matched = trigger.request in data  # the reply to come answers this request

    def on_reply(self, link: Link, data: bytes) -> bytes | None:
        """The bytes to forward; None when the trigger closed the link."""
        with self.lock:
            trigger = self.trigger
            fire = (
                trigger is not None
                and (trigger.request is None or link.matched)
                and (trigger.reply is None or trigger.reply in data)
            )
            if fire:
                self.trigger = None
        if not fire:
            return data
        assert trigger is not None
        head, rest = data[: trigger.after], data[trigger.after :]
        if head:
            link.send_part(head)
        trigger.fired.set()
        self.notify()
        if trigger.action == "stall":
            link.flowing.clear()
            return rest  # forwarded once the link flows again
        link.close(rst=trigger.action == "reset")
        return None

    def count(self, n: int, is_reply: bool) -> None:
        with self.lock:
            if is_reply:
                self.bytes_down += n
            else:
                self.bytes_up += n

    def forget(self, link: Link) -> None:
        with self.changed:
            self.links.discard(link)
            self.changed.notify_all()

    def notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    # -- accepting -----------------------------------------------------------------------------
    def accept_loop(self) -> None:
        while self.running:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            if self.mode == "down":
                with contextlib.suppress(OSError):
                    client.close()
                with self.changed:
                    self.refused += 1
                    self.changed.notify_all()
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                with self.changed:
                    self.refused += 1
                    self.changed.notify_all()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.changed:
                link = Link(self, client, upstream, flowing=self.mode != "stall")
                self.links.add(link)
                self.accepted += 1
                self.changed.notify_all()
            link.start()

    def close(self) -> None:
        self.running = False
        with contextlib.suppress(OSError):
            self.listener.close()
        for link in self.snapshot():
            link.close()
        self.thread.join(timeout=5)
