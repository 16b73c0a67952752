"""An operator edits a schedule in the admin with a real headless Chromium: the next runs follow
the typing, a bad cron is flagged before saving, and the saved schedule is what was typed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from jobqueue.models import Schedule
from tests.integration import schedule_tasks  # noqa: F401 (registers the tasks)

TASKS = "tests.integration.schedule_tasks"
pytestmark = [pytest.mark.demo, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def browser(new_browser: Callable[[str], webdriver.Chrome]) -> webdriver.Chrome:
    return new_browser("1280,1400")


def replace(field: Any, text: str) -> None:
    field.clear()
    field.send_keys(text)


def test_an_operator_edits_a_schedule(settings, live_server, browser, django_user_model):
    settings.JOBQUEUE = {**settings.JOBQUEUE, "TASK_MODULES": [TASKS]}
    django_user_model.objects.create_superuser("ops", password="a-long-password")
    schedule = Schedule.objects.create(name="nightly", task=f"{TASKS}.greet", cron="0 3 * * *",
                                       timezone="Europe/Paris", kwargs={"name": "ada"})
    # A page being replaced by the next one leaves stale elements: look again.
    wait = WebDriverWait(browser, 20, ignored_exceptions=(StaleElementReferenceException,))
    browser.get(f"{live_server.url}/admin/login/?next=/admin/jobqueue/schedule/{schedule.pk}/"
                "change/")
    replace(browser.find_element(By.NAME, "username"), "ops")
    replace(browser.find_element(By.NAME, "password"), "a-long-password")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    preview = wait.until(lambda d: d.find_element(By.ID, "schedule-preview"))
    assert [li.text[15:20] for li in preview.find_elements(By.TAG_NAME, "li")] == ["03:00"] * 5

    # The preview follows the cron being typed, and flags a bad one before any save.
    cron = browser.find_element(By.ID, "id_cron")
    replace(cron, "0 27 * * *")
    error = browser.find_element(By.ID, "schedule-preview-error")
    wait.until(lambda d: error.is_displayed() and "Bad hour" in error.text)
    replace(cron, "15 4 * * 1-5")
    wait.until(lambda d: preview.get_attribute("data-state") == "fresh"
               and "04:15" in preview.text)
    runs = preview.find_elements(By.TAG_NAME, "li")
    assert len(runs) == 5 and all(r.text[:3] in ("Mon", "Tue", "Wed", "Thu", "Fri") for r in runs)
    assert not error.is_displayed()

    # Arguments that the task would refuse are refused at save, with the reason.
    kwargs = browser.find_element(By.ID, "id_kwargs")
    replace(kwargs, '{"name": "ada", "shout": true}')
    browser.find_element(By.NAME, "_continue").click()
    wait.until(lambda d: "Please correct" in d.find_element(By.ID, "content").text)
    assert "unexpected keyword argument 'shout'" in browser.find_element(By.ID, "content").text
    replace(browser.find_element(By.ID, "id_kwargs"), '{"name": "grace", "punctuation": "?"}')
    browser.find_element(By.NAME, "_continue").click()
    wait.until(lambda d: "was changed successfully" in d.find_element(By.TAG_NAME, "body").text)

    schedule.refresh_from_db()
    assert (schedule.cron, schedule.kwargs) == ("15 4 * * 1-5",
                                                {"name": "grace", "punctuation": "?"})
