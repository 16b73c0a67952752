"""Headless Chromium that takes screenshots, and the one browser each worker process keeps.

Starting Chromium costs about a second, more than taking most screenshots, so a worker process
starts its browser on first use and keeps it between jobs (``bench/screenshots.py`` measures the
difference). Every request the browser makes goes through its own filtering proxy (``proxy.py``),
which asks the caller's check before connecting. This module knows nothing of Django, so the
benchmark can use it as it is.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from multiprocessing import util as mp_util
from urllib.parse import urlsplit

import urllib3
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver as RemoteWebDriver

from demo_project.shootr.devtools import BrowserDevTools, DevToolsError
from demo_project.shootr.proxy import Check, FilteringProxy, Problem, resolve_only

logger = logging.getLogger(__name__)

CHROMIUM = os.environ.get("SHOOTR_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SHOOTR_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-crash-reporter",
    "--disable-breakpad",
    "--hide-scrollbars",
    "--mute-audio",
)
# No way around the proxy: not for loopback (bypassed by default), not for WebRTC's UDP.
PREFS = {
    "webrtc.ip_handling_policy": "disable_non_proxied_udp",
    "webrtc.multiple_routes_enabled": False,
    "webrtc.nonproxied_udp_enabled": False,
}
# Reads the net error code off Chromium's own error page ("This site can't be reached").
ERROR_PAGE_JS = """
if (!location.href.startsWith("chrome-error://")) return null;
const code = document.querySelector(".error-code");
return (code && code.textContent.trim()) || "ERR_FAILED";
"""
PAGE_HEIGHT_JS = """
const d = document.documentElement, b = document.body;
return Math.max(d ? d.scrollHeight : 0, b ? b.scrollHeight : 0);
"""
# Kills the browser's process group when the worker process dies, even by SIGKILL (a job
# timeout): it waits for the end of a pipe that only the worker process holds open.
COMMAND_MARGIN = 10.0  # seconds a command may take beyond the page-load limit
REAPER = 'cat >/dev/null; kill -KILL -"$1" 2>/dev/null'


@dataclass(frozen=True)
class Limits:
    """What one page may cost: its load time and the size of its screenshot."""

    page_load_timeout: float = 20.0
    width: int = 1280
    height: int = 800
    max_height: int = 4000


@dataclass(frozen=True)
class Capture:
    png: bytes
    final_url: str
    title: str
    page_height: int
    height: int
    blocked: tuple[str, ...] = ()  # requests of the page the check refused: "target: reason"

    @property
    def truncated(self) -> bool:
        return self.page_height > self.height


class PageLoadError(Exception):
    """The page did not load (refused, unknown host, timeout); the page's fault, not ours."""


class RequestRefused(PageLoadError):
    """The page, or a redirect on the way to it, is somewhere the check does not let us go."""


class BrowserBroken(Exception):
    """Our fault, not the page's: the browser cannot reach its own proxy. Replace the browser
    and try again."""


class Browser:
    """One headless Chromium with a throwaway profile, driven through chromedriver."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.profile = tempfile.mkdtemp(prefix="shootr-chromium-")
        self.proxy = FilteringProxy(connect_timeout=self.limits.page_load_timeout)
        os.environ.setdefault("SE_OFFLINE", "true")  # explicit paths below; never download
        # A session of its own: terminal signals stay with the worker, and the reaper can kill
        # chromedriver and Chromium together as one process group.
        # TMPDIR inside the profile: Chromium's own temporary files go where close() removes
        # them, even after a SIGKILL.
        service = Service(
            executable_path=CHROMEDRIVER,
            env={**os.environ, "TMPDIR": self.profile},
            popen_kw={"start_new_session": True},
        )
        try:
            self.driver = webdriver.Chrome(service=service, options=self._options())
        except BaseException:
            self.proxy.close()
            shutil.rmtree(self.profile, ignore_errors=True)
            raise
        self.service = service
        self.reaper = subprocess.Popen(
            ["/bin/sh", "-c", REAPER, "shootr-reaper", str(service.process.pid)],
            stdin=subprocess.PIPE, start_new_session=True,
        )
        self.driver.set_page_load_timeout(self.limits.page_load_timeout)
        self.driver.set_script_timeout(5)
        # A page that keeps its renderer busy (``while(true){}``) holds every command until
        # this runs out: the page-load limit and a little, not Selenium's two minutes.
        self.command_timeout = self.limits.page_load_timeout + COMMAND_MARGIN
        executor = self.driver.command_executor
        assert not isinstance(executor, str)  # chromedriver's connection, never a bare URL
        executor.client_config.timeout = self.command_timeout
        self.home = self.driver.current_window_handle
        self.spent = False  # a command ran out of time, or a capture was not cleared away
        self.devtools: BrowserDevTools | None = None
        try:
            self.devtools = BrowserDevTools(
                self.driver.capabilities["goog:chromeOptions"]["debuggerAddress"],
                timeout=self.command_timeout,
            )
        except BaseException:
            self.close()
            raise

    def _options(self) -> webdriver.ChromeOptions:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile}")
        options.add_argument(f"--window-size={self.limits.width},{self.limits.height}")
        options.add_argument(f"--proxy-server={self.proxy.url}")
        options.add_argument("--proxy-bypass-list=<-loopback>")
        options.add_experimental_option("prefs", PREFS)
        # chromedriver turns the popup blocker off by default; a screenshot needs no popups.
        options.add_experimental_option("excludeSwitches", ["disable-popup-blocking"])
        options.unhandled_prompt_behavior = "dismiss"
        return options

    def alive(self) -> bool:
        """Chromium, chromedriver and the proxy all still work."""
        if self.spent or not self.proxy.alive() or self.service.process.poll() is not None:
            return False
        try:
            self.driver.window_handles  # noqa: B018 - a round trip to the browser
        except WebDriverException:
            return False
        return True

    def capture(self, url: str, check: Check | None = None) -> Capture:
        """Load ``url`` and take a PNG of the top of the page, at most ``max_height`` tall.

        ``check(host, port)`` decides every connection the page makes (see ``proxy.Check``);
        None opens everything, which only local measurements should ask for.
        """
        context = self._open_context()
        try:
            with self.proxy.checking(check or resolve_only) as problems:
                return self._capture(url, problems)
        except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.MaxRetryError) as exc:
            if not isinstance(getattr(exc, "reason", exc), urllib3.exceptions.ReadTimeoutError):
                raise
            self.spent = True
            raise PageLoadError(
                f"the page did not respond within {self.command_timeout:g} s"
            ) from None
        finally:
            if not self.spent:
                self.forget(context)

    def _open_context(self) -> str:
        """A browser context of the capture's own (like a private window: its own cookies,
        cache and site storage, for every site the page reaches) and a tab in it."""
        driver, devtools = self.driver, self._devtools()
        try:
            context = devtools.call("Target.createBrowserContext")["browserContextId"]
        except DevToolsError as exc:
            self.spent = True
            raise BrowserBroken(str(exc)) from exc
        try:
            devtools.call("Browser.setDownloadBehavior", behavior="deny",
                          browserContextId=context)
            tab = devtools.call("Target.createTarget", url="about:blank",
                                browserContextId=context, width=self.limits.width,
                                height=self.limits.height)["targetId"]
            driver.switch_to.window(tab)
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": self.limits.width, "height": self.limits.height,
                "deviceScaleFactor": 1, "mobile": False,
            })
        except DevToolsError as exc:
            self.forget(context)
            self.spent = True
            raise BrowserBroken(str(exc)) from exc
        except BaseException:
            self.forget(context)
            raise
        return context

    def _devtools(self) -> BrowserDevTools:
        if self.devtools is None:
            raise BrowserBroken("the browser has no DevTools connection")
        return self.devtools

    def _capture(self, url: str, problems: list[Problem]) -> Capture:
        driver = self.driver
        try:
            driver.get(url)
        except TimeoutException:
            raise PageLoadError(
                f"the page did not load within {self.limits.page_load_timeout:g} s"
            ) from None
        except WebDriverException as exc:
            code = _net_error(exc.msg or "")
            if code is None:
                raise
            raise _load_error(code, driver.current_url, problems) from None
        error = driver.execute_script(ERROR_PAGE_JS)
        if error:
            raise _load_error(error, driver.current_url, problems)
        page_height = int(driver.execute_script(PAGE_HEIGHT_JS) or 0)
        height = max(1, min(page_height or self.limits.height, self.limits.max_height))
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": self.limits.width, "height": height,
                     "scale": 1},
        })
        return Capture(
            png=base64.b64decode(shot["data"]),
            final_url=driver.current_url,
            title=driver.title[:300],
            page_height=page_height,
            height=height,
            blocked=tuple(f"{p.target}: {p.reason}" for p in problems if p.refused),
        )

    def forget(self, context: str) -> None:
        """Leave nothing for the next job: the capture's browser context goes, with its tabs
        (popups included), cookies, cache and site storage; the blank home tab stays."""
        try:
            self.driver.switch_to.window(self.home)
            self._devtools().call("Target.disposeBrowserContext", browserContextId=context)
        except (WebDriverException, DevToolsError, BrowserBroken) as exc:
            # Left behind for the next job, were this browser kept: it is not.
            logger.warning("browser context not disposed of context=%s error=%s", context, exc)
            self.spent = True

    def close(self) -> None:
        """End the session, then kill what is left of the process group, then reap."""
        try:
            # The base class's quit ends the session and leaves chromedriver running: it must
            # stay unreaped until the reaper has killed its group, so that the group id cannot
            # have been reused by an unrelated process. The browser may be dead already.
            if not self.spent:  # a hung browser would hold this up too: the reaper ends it
                with contextlib.suppress(Exception):
                    RemoteWebDriver.quit(self.driver)
            if self.reaper.stdin is not None:
                self.reaper.stdin.close()
            self.reaper.wait()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.service.process.wait(timeout=10)
            self.service.stop()
        finally:
            if self.devtools is not None:
                self.devtools.close()
            self.proxy.close()
            shutil.rmtree(self.profile, ignore_errors=True)


def _load_error(code: str, failed_url: str, problems: list[Problem]) -> PageLoadError:
    """Why the page did not load. Chromium calls the proxy's refusals ``ERR_EMPTY_RESPONSE`` or
    ``ERR_TUNNEL_CONNECTION_FAILED``; the proxy knows what happened to the URL that failed (the
    error page's URL: the last hop of the redirects). ``ERR_PROXY_CONNECTION_*`` means the
    browser could not reach its own proxy: BrowserBroken, ours and not the page's."""
    if code.startswith("ERR_PROXY_CONNECTION"):
        raise BrowserBroken(f"the browser could not reach its proxy: net::{code}")
    parts = urlsplit(failed_url)
    port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    mine = [p for p in problems if p.host == parts.hostname and p.port == port]
    if not mine:
        return PageLoadError(f"the page could not be loaded: net::{code}")
    last = mine[-1]
    if last.refused:
        return RequestRefused(f"refused to open {last.target}: {last.reason}")
    return PageLoadError(f"the page could not be loaded: net::{last.code}")


def _net_error(message: str) -> str | None:
    """``ERR_NAME_NOT_RESOLVED`` out of chromedriver's "unknown error: net::ERR_..." message."""
    marker = "net::"
    if marker not in message:
        return None
    return message.split(marker, 1)[1].split()[0].strip(".,;:")


class KeptBrowser:
    """The browser of this process: started on first use, replaced when it has died, closed
    when the process exits."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits
        self._browser: Browser | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def capture(self, url: str, check: Check | None = None) -> Capture:
        """Take a screenshot; a browser that crashes under the page, or loses its proxy, is
        replaced and the page tried once more. One the page hung is thrown away, and the page
        fails."""
        with self._lock:
            try:
                return self._get().capture(url, check)
            except PageLoadError:
                if self._browser is not None and self._browser.spent:
                    self._discard()
                raise
            except BrowserBroken:
                self._discard()
                return self._get().capture(url, check)
            except WebDriverException:
                if self._browser is not None and self._browser.alive():
                    raise
                self._discard()
                return self._get().capture(url, check)

    def close(self) -> None:
        with self._lock:
            self._discard()

    def _get(self) -> Browser:
        if self._pid != os.getpid():
            # Inherited through fork: that browser belongs to the parent; never touch it.
            self._browser = None
            self._pid = os.getpid()
            self._close_at_exit()
        if self._browser is not None and not self._browser.alive():
            self._discard()
        if self._browser is None:
            self._browser = Browser(self.limits)
        return self._browser

    def _discard(self) -> None:
        browser, self._browser = self._browser, None
        if browser is not None and self._pid == os.getpid():
            browser.close()

    def _close_at_exit(self) -> None:
        # A multiprocessing child (each jobworker process is one) leaves through os._exit, which
        # skips atexit; multiprocessing's own exit finalizers do run there.
        atexit.register(self.close)
        mp_util.Finalize(None, self.close, exitpriority=10)


kept_browser = KeptBrowser()
