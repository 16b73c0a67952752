"""Headless Chromium for the tests that drive pages as a person would (the demo's visitor, an
operator in the admin). A pytest plugin (``tests/conftest.py`` loads it): ``chromium`` skips a test
where Chromium is not installed (in CI its absence is a failure), and ``new_browser`` opens one."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def chromium() -> None:
    """Skip where Chromium is not installed; in CI its absence is a failure."""
    from demo_project.shootr.browser import CHROMEDRIVER, CHROMIUM

    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        message = f"{', '.join(missing)} not found: apt-get install chromium chromium-driver"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def new_browser(chromium: None) -> Iterator[Callable[[str], Any]]:
    """``new_browser("1280,1000")``: a Chromium (Selenium) with that window size and a throwaway
    profile of its own, apart from the browser the demo's tasks keep; quit at the end of the
    test."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from demo_project.shootr.browser import CHROMEDRIVER, CHROMIUM, FLAGS

    drivers: list[webdriver.Chrome] = []
    with tempfile.TemporaryDirectory(prefix="tests-browser-") as profiles:

        def new(window_size: str) -> webdriver.Chrome:
            options = webdriver.ChromeOptions()
            options.binary_location = CHROMIUM
            for flag in FLAGS:
                options.add_argument(flag)
            options.add_argument(f"--user-data-dir={profiles}/{len(drivers)}")
            options.add_argument(f"--window-size={window_size}")
            service = Service(executable_path=CHROMEDRIVER)
            drivers.append(webdriver.Chrome(service=service, options=options))
            return drivers[-1]

        try:
            yield new
        finally:
            for driver in drivers:
                driver.quit()
