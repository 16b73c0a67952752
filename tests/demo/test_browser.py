"""The kept browser between jobs: what one visitor's page leaves behind reaches no later job, a
browser that lost its proxy is replaced, and a page that hangs its renderer costs that page only.
A real headless Chromium; pages served on 127.0.0.1."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator
from functools import partial

import pytest

from demo_project.shootr.browser import KeptBrowser, Limits, PageLoadError
from demo_project.shootr.proxy import Check
from demo_project.shootr.urlsafety import PrivateAccess, check_endpoint
from tests.demo.conftest import CountingServer, PageHandler, serve

pytestmark = pytest.mark.demo


class Pages(PageHandler):
    """``/go`` redirects to ``/set.html`` on the server in ``Location``'s query; the rest are
    pages whose title is what the script in them finds."""

    pages = {
        "/set.html": "<title>set</title><script>localStorage.v='left by visitor 1';"
                     "document.cookie='c=1; max-age=3600'</script>",
        "/get.html": "<title>get</title><script>document.title="
                     "'storage='+localStorage.v+' cookie='+document.cookie</script>",
        "/hang.html": "<title>hang</title><script>onload=()=>setTimeout(()=>{while(true){}})"
                      "</script>",
    }

    def do_GET(self) -> None:
        self.record()
        path, _, query = self.path.partition("?")
        if path == "/go":
            self.redirect(query)
        else:
            self.page(self.pages.get(path, "<title>ok</title>").encode())


@pytest.fixture
def site_a() -> Iterator[CountingServer]:
    yield from serve(Pages)


@pytest.fixture
def site_b() -> Iterator[CountingServer]:
    yield from serve(Pages)


def only(*servers: CountingServer) -> Check:
    """The guard as visitors meet it, with these servers as the only exceptions."""
    endpoints = frozenset((ipaddress.ip_address("127.0.0.1"), server.server_address[1])
                          for server in servers)
    return partial(check_endpoint, allow_private=PrivateAccess(endpoints=endpoints))


def test_storage_set_after_a_redirect_is_gone_for_the_next_job(kept_browser, site_a, site_b):
    """Job 1 opens A, which sends it on to B, where the page stores things; job 2 opens B."""
    first = kept_browser.capture(f"{site_a.url}/go?{site_b.url}/set.html", only(site_a, site_b))
    assert first.final_url == f"{site_b.url}/set.html"
    second = kept_browser.capture(f"{site_b.url}/get.html", only(site_b))
    assert second.title == "storage=undefined cookie="


def test_a_browser_whose_proxy_stopped_is_replaced(kept_browser, site_a):
    browser = kept_browser._get()
    # It no longer listens (connections to it are refused); its accept loop lives on.
    browser.proxy._listener.shutdown(socket.SHUT_RDWR)
    capture = kept_browser.capture(f"{site_a.url}/page.html", only(site_a))
    assert capture.title == "ok"
    assert kept_browser._browser is not browser
    assert "/page.html" in site_a.paths
    assert not browser.proxy.alive()  # closed with its browser


def test_a_closed_proxy_makes_the_browser_dead(kept_browser):
    browser = kept_browser._get()
    assert browser.alive()
    browser.proxy.close()
    assert not browser.alive()


def test_a_page_that_hangs_its_renderer_fails_at_its_limit_and_spares_the_next(chromium, site_a):
    limits = Limits(page_load_timeout=3)
    kept = KeptBrowser(limits)
    try:
        kept.capture(f"{site_a.url}/start.html", only(site_a))  # Chromium started, untimed
        hung = kept._browser
        started = time.monotonic()
        with pytest.raises(PageLoadError, match="did not respond within 13 s"):
            kept.capture(f"{site_a.url}/hang.html", only(site_a))
        assert time.monotonic() - started < 3 + 10 + 10  # not Selenium's own two minutes
        assert kept._browser is None and hung is not None and not hung.alive()
        assert kept.capture(f"{site_a.url}/next.html", only(site_a)).title == "ok"
    finally:
        kept.close()
