"""Fixtures for the demo's tests: local web pages to photograph, the kept browser of the tasks
run in the test process, and the settings that let the demo open pages on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

PAGES = {
    "red.html": "<title>Red</title><body style='margin:0;background:#f00'></body>",
    "blue.html": "<title>Blue</title><body style='margin:0;background:#00f'></body>",
    "article.html": (
        "<title>A page with words</title><body style='margin:0;font-family:sans-serif;"
        "background:linear-gradient(#fdf6e3,#eee8d5)'><header style='background:#268bd2;"
        "color:#fff;padding:40px 60px'><h1 style='margin:0;font-size:56px'>Hello, worker</h1>"
        "</header><p style='padding:20px 60px;font-size:28px;color:#586e75'>This page was "
        "photographed by a background job.</p></body>"
    ),
}


@pytest.fixture(scope="session")
def kept_browser(chromium: None) -> Iterator[Any]:
    """The browser tasks run inline in this process use; closed once, at the end."""
    from demo_project.shootr.browser import kept_browser

    yield kept_browser
    kept_browser.close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a web server on 127.0.0.1 serving ``PAGES``."""
    root = tmp_path_factory.mktemp("pages")
    for name, html in PAGES.items():
        (root / name).write_text(f"<!doctype html>{html}", encoding="utf-8")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


class CountingServer(ThreadingHTTPServer):
    """Counts the connections it accepts: independent of the browser's and the guard's word."""

    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections = 0
        self.paths: list[str] = []

    def get_request(self) -> tuple[socket.socket, Any]:
        request = super().get_request()
        self.connections += 1
        return request

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[CountingServer]:
    server = CountingServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class PageHandler(BaseHTTPRequestHandler):
    """The test sites' requests: each path is kept on the ``CountingServer``, the answer is a page
    or a redirect, and nothing is logged."""

    def record(self) -> None:
        self.server.paths.append(self.path)  # type: ignore[attr-defined]

    def redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def page(self, body: bytes, content_type: str = "text/html") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class HangingHandler(PageHandler):
    """Reads the request, then never answers: a page that loads for ever."""

    timeout = 120

    def do_GET(self) -> None:
        self.record()
        self.rfile.read()  # until the browser (or its killed process) hangs up


@pytest.fixture
def hanging_page() -> Iterator[CountingServer]:
    yield from serve(HangingHandler)


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: one the kernel handed out and took back."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def media_root(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


@pytest.fixture
def allow_private(settings: Any) -> None:
    settings.SHOOTR_ALLOW_PRIVATE_HOSTS = True


@pytest.fixture
def forbid_private(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.SHOOTR_ALLOW_PRIVATE_HOSTS = False
    settings.DEBUG = False
    monkeypatch.delenv("SHOOTR_ALLOW_PRIVATE_HOSTS", raising=False)
