"""The demo as a visitor uses it: a real Chromium on the live site, real jobworker processes,
and local pages to photograph."""

from __future__ import annotations

import io
import os
import shutil
import signal
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from demo_project.shootr.models import Bundle
from jobqueue import JobResult
from jobqueue.models import Job
from tests.demo.colours import BLUE, RED, dominant

pytestmark = [pytest.mark.demo, pytest.mark.urls("tests.demo.urls"),
              pytest.mark.django_db(transaction=True)]

SETTLE_TIMEOUT = 60


@pytest.fixture
def visitor(new_browser: Callable[[str], webdriver.Chrome]) -> webdriver.Chrome:
    """A separate browser for the visitor, with its own throwaway profile."""
    return new_browser("1280,1000")


def submit(visitor: webdriver.Chrome, text: str) -> None:
    area = visitor.find_element(By.NAME, "urls")
    area.clear()
    area.send_keys(text)
    visitor.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def download(live_server: Any, path: str) -> bytes:
    with urllib.request.urlopen(f"{live_server.url}{path}", timeout=10) as response:
        return response.read()


def test_visitor_gets_screenshots_from_real_workers(
    live_server: Any, visitor: webdriver.Chrome, jobworker: Any, pages: str, closed_port: int,
    media_root: Path, allow_private: None, request: pytest.FixtureRequest,
) -> None:
    # Short: Chromium's socket paths under it must fit in 108 bytes.
    worker_tmp = Path(tempfile.mkdtemp(prefix="shootr-w-"))
    request.addfinalizer(lambda: shutil.rmtree(worker_tmp, ignore_errors=True))
    worker = jobworker("--concurrency", "2", env={
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE",
                                                 django_settings.SETTINGS_MODULE),
        "SHOOTR_ALLOW_PRIVATE_HOSTS": "1",
        "SHOOTR_MEDIA_ROOT": str(media_root),
        "TMPDIR": str(worker_tmp),  # where the worker's browser profiles go
    })
    wait = WebDriverWait(visitor, SETTLE_TIMEOUT)

    # Refused at the form: nothing is created, and the visitor is told which line and why.
    visitor.get(live_server.url)
    submit(visitor, f"{pages}/red.html\njavascript:alert(1)\nfile:///etc/passwd")
    errors = wait.until(lambda d: d.find_element(By.ID, "url-errors")).text
    assert "Line 2: 'javascript:' is not allowed" in errors
    assert "Line 3: 'file:' is not allowed" in errors
    assert not Bundle.objects.exists()
    assert not Job.objects.exists()

    unreachable = f"http://127.0.0.1:{closed_port}/"
    urls = [f"{pages}/red.html", f"{pages}/blue.html", unreachable, f"{pages}/article.html"]
    submit(visitor, "\n".join(urls))
    wait.until(lambda d: "/b/" in d.current_url)
    visitor.execute_script("window.notReloaded = true;")

    # The page follows the jobs by itself: no reload (the marker survives), no sleeps.
    settled = "[data-bundle][data-state=settled]"
    bundle = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, settled))
    assert visitor.execute_script("return window.notReloaded === true;")
    items = bundle.find_elements(By.CSS_SELECTOR, ".shot")
    statuses = [item.get_attribute("data-status") for item in items]
    assert statuses == ["done", "done", "failed", "done"], [
        i.find_element(By.CSS_SELECTOR, ".shot-frame").text for i in items]
    assert bundle.find_element(By.CSS_SELECTOR, ".progress").get_attribute("aria-valuenow") == "4"
    assert "width: 100%" in bundle.find_element(By.CSS_SELECTOR, ".progress-bar").get_attribute(
        "style")

    # Each thumbnail shows its own page, and links to the full screenshot.
    for item, colour in ((items[0], RED), (items[1], BLUE)):
        link = item.find_element(By.CSS_SELECTOR, "a.shot-link")
        thumbnail = link.find_element(By.TAG_NAME, "img").get_attribute("src")
        for url in (thumbnail, link.get_attribute("href")):
            found, share = dominant(io.BytesIO(download(live_server, _path(url))))
            assert found == colour and share > 0.9, (url, found, share)
    assert "ERR_CONNECTION_REFUSED" in items[2].find_element(By.CSS_SELECTOR, ".shot-error").text

    # The jobs tell the same story as the page.
    bundle_row = Bundle.objects.get()
    shots = {s.url: s for s in bundle_row.screenshots.all()}
    jobs = {str(j.id): j for j in Job.objects.all()}
    assert {jobs[u.job_id].status for u in shots.values()} == {"succeeded"}
    # The page's own fault ends its job at once, with the reason as its result: no retry.
    failed_job = jobs[shots[unreachable].job_id]
    assert failed_job.attempts == 1
    assert "ERR_CONNECTION_REFUSED" in JobResult(str(failed_job.id)).get()["error"]

    if os.environ.get("SHOOTR_DOCS_SCREENSHOT"):
        visitor.set_window_size(1280, 620)
        visitor.execute_script("document.activeElement.blur(); window.scrollTo(0, 0);")
        Path(os.environ["SHOOTR_DOCS_SCREENSHOT"]).write_bytes(visitor.get_screenshot_as_png())

    # SIGTERM: the worker finishes, closes its browsers and removes their profiles.
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, worker.output
    assert list(worker_tmp.iterdir()) == []


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3]

