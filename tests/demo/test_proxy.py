"""The browser's filtering proxy on its own: what it relays, what it refuses, and that a refused
host is never connected to (counted by the host itself)."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from demo_project.shootr.proxy import FilteringProxy
from tests.demo.conftest import CountingServer, PageHandler, serve

pytestmark = pytest.mark.demo

# No answer at all: how a client sees a request the proxy did not make.
DISCONNECTED = (urllib.error.URLError, http.client.RemoteDisconnected)


class Echo(PageHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.record()
        answer = f"{self.command} {self.path} {self.headers.get('Proxy-Connection')} ".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer + body)))
        self.end_headers()
        self.wfile.write(answer + body)

    do_GET = do_POST


@pytest.fixture
def echo() -> Iterator[CountingServer]:
    yield from serve(Echo)


@pytest.fixture
def proxy() -> Iterator[FilteringProxy]:
    proxy = FilteringProxy(connect_timeout=5, idle_timeout=10)
    yield proxy
    proxy.close()


def fetch(proxy: FilteringProxy, url: str, data: bytes | None = None) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy.url}))
    with opener.open(url, data=data, timeout=10) as response:
        return response.read()


def allow_all(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


def test_relays_a_request_with_its_body_to_the_checked_address(proxy, echo):
    with proxy.checking(allow_all) as problems:
        answer = fetch(proxy, f"http://anything.invalid:{echo.server_address[1]}/form?a=1",
                       data=b"x" * 100_000)
    assert answer == b"POST /form?a=1 None " + b"x" * 100_000  # origin form, no proxy headers
    assert problems == []


def test_a_refused_request_gets_no_answer_and_reaches_no_one(proxy, echo):
    def refuse(host: str, port: int) -> list[str]:
        raise PermissionError(f"{host} is private")

    with proxy.checking(refuse) as problems, pytest.raises(DISCONNECTED):
        fetch(proxy, f"{echo.url}/secret")
    assert echo.connections == 0
    [problem] = problems
    assert (problem.target, problem.reason, problem.refused) == (
        f"{echo.url}/secret", "127.0.0.1 is private", True)


def test_a_refused_tunnel_gets_403(proxy, echo):
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    with proxy.checking(lambda host, port: (_ for _ in ()).throw(PermissionError("no"))):
        conn.request("CONNECT", f"127.0.0.1:{echo.server_address[1]}")
        assert conn.getresponse().status == 403
    conn.close()
    assert echo.connections == 0


def test_outside_a_capture_everything_is_refused(proxy, echo):
    with pytest.raises(DISCONNECTED):
        fetch(proxy, f"{echo.url}/between-pages")
    assert echo.connections == 0


def test_an_unreachable_host_is_reported_with_chromiums_name_for_it(proxy, closed_port):
    with proxy.checking(allow_all) as problems, pytest.raises(DISCONNECTED):
        fetch(proxy, f"http://127.0.0.1:{closed_port}/")
    assert [(p.code, p.refused) for p in problems] == [("ERR_CONNECTION_REFUSED", False)]


# Runs in a process of its own: it lowers that process's limit on open files.
OUT_OF_FILES = """
import logging, os, resource, socket, threading
from demo_project.shootr.proxy import FilteringProxy
failed = threading.Event()
class Seen(logging.Handler):
    def emit(self, record):
        if "accept failed" in record.getMessage():
            failed.set()
            print(record.getMessage())
logging.getLogger("demo_project.shootr.proxy").addHandler(Seen())
proxy = FilteringProxy(connect_timeout=2, idle_timeout=5)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 4, hard))
clients = []
try:
    for _ in range(20):  # until the proxy's accept fails with EMFILE (or this connect does)
        clients.append(socket.create_connection(("127.0.0.1", proxy.port), timeout=1))
    failed.wait(10)
except OSError:
    failed.wait(10)
finally:
    for client in clients:
        client.close()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
    sock.settimeout(10)
    sock.sendall(b"CONNECT 127.0.0.1:9 HTTP/1.1\\r\\n\\r\\n")  # refused between captures: 403
    print(sock.recv(100).split(b"\\r\\n")[0].decode(), proxy.alive(), failed.is_set())
"""


def test_the_proxy_keeps_accepting_after_running_out_of_file_descriptors(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent.parent
    done = subprocess.run([sys.executable, "-c", OUT_OF_FILES], cwd=root, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    failure, answer = done.stdout.splitlines()
    assert "proxy accept failed error=[Errno 24]" in failure  # it really ran out
    assert answer.split() == ["HTTP/1.1", "403", "Forbidden", "True", "True"]


def test_alive_until_closed():
    proxy = FilteringProxy()
    assert proxy.alive()
    proxy.close()
    assert not proxy.alive()


class KeepsAlive:
    """A server that answers every request on a connection and never closes it, whatever the
    request's ``Connection: close`` says; it records each request line it reads."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn: socket.socket) -> None:
        data = b""
        with conn, contextlib.suppress(OSError):
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                self.lines.append(head.split(b"\r\n")[0].decode())
                conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n"
                             b"Keep-Alive: timeout=60\r\nContent-Length: 2\r\n\r\nok")


@pytest.fixture
def keeps_alive() -> Iterator[KeepsAlive]:
    server = KeepsAlive()
    yield server
    server.sock.close()


def read_answer(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"ok"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_one_request_per_connection_whatever_the_server_says(proxy, keeps_alive):
    """A second request on the same connection would reach the host checked for the first one
    (another page's host, in a later capture): it never goes up."""
    base = f"http://127.0.0.1:{keeps_alive.port}"
    with proxy.checking(allow_all), socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.settimeout(10)
        sock.sendall(f"GET {base}/one HTTP/1.1\r\nHost: x\r\n\r\n"
                     f"GET {base}/pipelined HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answer = read_answer(sock)
        head = answer.partition(b"\r\n\r\n")[0].lower().split(b"\r\n")
        assert b"connection: close" in head
        assert b"connection: keep-alive" not in head and not any(
            line.startswith(b"keep-alive") for line in head)
        with contextlib.suppress(OSError):
            sock.sendall(f"GET {base}/later HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        try:
            more = sock.recv(65536)
        except ConnectionResetError:  # closed with the request unread
            more = b""
        assert more == b""  # the proxy ends the connection instead
    assert keeps_alive.lines == ["GET /one HTTP/1.1"]
