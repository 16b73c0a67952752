"""Every request the browser makes is checked before it is made: redirect hops, images, frames.

A real headless Chromium loads pages from a site on 127.0.0.1 that the test allows, which lead to a
second server, also on 127.0.0.1 but on a port the guard must refuse. That server counts the
connections it accepts: zero proves it was never contacted, whatever the browser or the guard say.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from demo_project.shootr.models import Bundle, Screenshot
from demo_project.shootr.tasks import make_screenshot
from tests.demo.colours import RED, dominant
from tests.demo.conftest import CountingServer, PageHandler, serve

pytestmark = [pytest.mark.demo, pytest.mark.django_db]


class Answer(PageHandler):
    """A small page whatever the path; ``routes`` maps a path to a redirect target."""

    routes: dict[str, str] = {}
    body = "<!doctype html><title>Red</title><body style='margin:0;background:#f00'>{extra}</body>"
    extra = ""

    def do_GET(self) -> None:
        self.record()
        if self.path in self.routes:
            self.redirect(self.routes[self.path])
        else:
            body = self.body.format(extra=self.extra if self.path == "/embed.html" else "")
            self.page(body.encode(), "text/html" if self.path.endswith("html") else "image/png")


@pytest.fixture
def target() -> Iterator[CountingServer]:
    """The private host the pages try to reach."""
    yield from serve(Answer)


@pytest.fixture
def site(target: CountingServer) -> Iterator[CountingServer]:
    """The page under test, whose pages redirect to or embed ``target``."""
    port = target.server_address[1]

    class Site(Answer):
        routes = {
            "/redirect": f"{target.url}/secret",
            "/hop1": "/hop2",
            "/hop2": f"{target.url}/secret",
            "/by-name": f"http://localhost:{port}/secret",
            "/tls": f"https://127.0.0.1:{port}/secret",
            "/metadata": "http://169.254.169.254/latest/meta-data/",
        }
        extra = (f"<img src='{target.url}/pixel.png' width=10 height=10>"
                 f"<iframe src='{target.url}/frame.html' width=10 height=10></iframe>"
                 f"<link rel=stylesheet href='{target.url}/style.css'>"
                 f"<script>fetch('{target.url}/fetch').catch(() => null)</script>")

    yield from serve(Site)


@pytest.fixture
def only_the_site(settings: Any, site: CountingServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOOTR_ALLOW_PRIVATE_HOSTS", raising=False)
    settings.SHOOTR_ALLOW_PRIVATE_HOSTS = [f"127.0.0.1:{site.server_address[1]}"]


def new_shot(url: str) -> Screenshot:
    return Screenshot.objects.create(bundle=Bundle.objects.create(), position=1, url=url)


@pytest.mark.parametrize(("path", "refused"), [
    ("/redirect", "refused to open http://127.0.0.1:{port}/secret: 127.0.0.1 is a loopback"),
    ("/hop1", "refused to open http://127.0.0.1:{port}/secret: 127.0.0.1 is a loopback"),
    # Whichever of its addresses (127.0.0.1, ::1) the resolver lists first is named.
    ("/by-name", "refused to open http://localhost:{port}/secret: localhost ("),
    ("/tls", "refused to open 127.0.0.1:{port}: 127.0.0.1 is a loopback"),
    ("/metadata", "refused to open http://169.254.169.254/latest/meta-data/: 169.254.169.254 is "
                  "a cloud metadata address"),
])
def test_a_redirect_to_a_private_host_is_never_followed(
    kept_browser: Any, site: CountingServer, target: CountingServer, only_the_site: None,
    path: str, refused: str,
) -> None:
    shot = new_shot(f"{site.url}{path}")
    error = make_screenshot(shot)["error"]  # the page's fault: recorded, no retry
    assert target.connections == 0
    assert refused.format(port=target.server_address[1]) in error
    assert "address; Shootr only opens public hosts." in error
    assert site.paths[0] == path
    assert ("/hop2" in site.paths) == (path == "/hop1")
    shot.refresh_from_db()
    assert shot.status == "failed"
    assert not shot.image


def test_a_page_gets_none_of_its_private_images_frames_or_styles(
    kept_browser: Any, site: CountingServer, target: CountingServer, only_the_site: None,
    media_root: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    shot = new_shot(f"{site.url}/embed.html")
    with caplog.at_level(logging.WARNING, logger="demo_project.shootr.tasks"):
        make_screenshot(shot)
    shot.refresh_from_db()
    assert shot.status == "done"
    assert dominant(shot.image.path)[0] == RED
    assert target.connections == 0
    blocked = "\n".join(r.getMessage() for r in caplog.records)
    for name in ("pixel.png", "frame.html", "style.css"):
        assert f"blocked={target.url}/{name}: 127.0.0.1 is a loopback" in blocked


def test_what_is_allowed_is_reached(
    kept_browser: Any, site: CountingServer, target: CountingServer, settings: Any,
    media_root: Path,
) -> None:
    # The control: allowed, the same redirect reaches the target (so its counter counts).
    settings.SHOOTR_ALLOW_PRIVATE_HOSTS = [f"127.0.0.1:{site.server_address[1]}",
                                           f"127.0.0.1:{target.server_address[1]}"]
    shot = new_shot(f"{site.url}/redirect")
    make_screenshot(shot)
    shot.refresh_from_db()
    assert shot.status == "done", shot.error
    assert shot.final_url == f"{target.url}/secret"
    assert target.connections >= 1
    assert target.paths[0] == "/secret"


def test_the_proxy_connects_to_the_addresses_it_checked(
    kept_browser: Any, site: CountingServer,
) -> None:
    # A name nothing resolves: the page loads all the same, so the proxy used the check's
    # answer and never asked DNS again (a second answer, as in DNS rebinding, is never used).
    port = site.server_address[1]
    asked: list[tuple[str, int]] = []

    def check(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["127.0.0.1"]

    capture = kept_browser.capture(f"http://public.invalid:{port}/red.html", check)
    assert capture.title == "Red"
    assert ("public.invalid", port) in asked
    assert site.paths[0] == "/red.html"
