"""Bad schedules are refused at declaration (system checks), and the commands that show them."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from jobqueue import Cron, task
from jobqueue.exceptions import ConfigurationError
from jobqueue.models import Schedule
from jobqueue.schedule_sync import check_schedules
from tests.integration import schedule_tasks  # noqa: F401 (registers the tasks)

TASKS = "tests.integration.schedule_tasks"


def problems(**schedules: Any) -> list[tuple[str, str]]:
    with override_settings(JOBQUEUE={**settings.JOBQUEUE, "TASK_MODULES": [TASKS],
                                     "SCHEDULES": schedules}):
        return [(m.id, m.msg) for m in check_schedules()]


def test_good_declarations_pass():
    assert problems(fr={"task": f"{TASKS}.greet", "cron": "0 6 * * 1",
                        "timezone": "Europe/Paris", "kwargs": {"name": "fr"}},
                    ping={"task": f"{TASKS}.greet", "every": 60, "args": ["x"],
                          "catch_up": "all", "max_delay": 600}) == []


@pytest.mark.parametrize(("entry", "message"), [
    ({"task": f"{TASKS}.greet", "cron": "0 3 * *", "args": ["x"]}, "expected 5 fields"),
    ({"task": f"{TASKS}.greet", "cron": "0 3 * * *", "timezone": "Paris", "args": ["x"]},
     "unknown time zone 'Paris'"),
    ({"task": f"{TASKS}.greet", "every": 60}, "missing a required argument: 'name'"),
    ({"task": f"{TASKS}.greet", "every": 60, "kwargs": {"name": "x", "loud": True}},
     "unexpected keyword argument 'loud'"),
    ({"task": "nowhere.build", "every": 60}, "no task named 'nowhere.build'"),
    ({"task": f"{TASKS}.greet", "every": 60, "args": ["x"], "catch_up": "replay"},
     "catch_up 'replay'"),
    ({"task": f"{TASKS}.greet", "every": 60, "args": ["x"], "queue": "urgent"},
     "unknown queue 'urgent'"),
    ({"task": f"{TASKS}.greet", "evry": 60}, "unknown keys ['evry']"),
    ({"task": f"{TASKS}.greet", "every": 60, "args": [timedelta(1)]}, "stored as plain JSON"),
])
def test_bad_declarations_are_reported_with_the_reason(entry, message):
    [(_, text)] = problems(bad=entry)
    assert "'bad'" in text and message in text


def test_a_task_workers_do_not_import_is_reported():
    @task(name="tests.unimported.job", schedule=timedelta(minutes=5))
    def job():
        pass

    try:
        found = problems()
        assert any("workers do not import" in text for _, text in found), found
    finally:
        from jobqueue import registry

        registry._tasks.pop("tests.unimported.job")


def test_task_schedule_is_checked_at_declaration():
    with pytest.raises(ConfigurationError, match="Bad minute"):
        task(schedule="99 * * * *")(lambda: None)
    with pytest.raises(ConfigurationError, match="unknown time zone"):
        Cron("0 3 * * *", timezone="Nowhere/Land")


@pytest.mark.django_db
def test_jobschedules_syncs_and_lists():
    entry = {"task": f"{TASKS}.greet", "every": 60, "args": ["x"]}
    out = StringIO()
    with override_settings(JOBQUEUE={**settings.JOBQUEUE, "TASK_MODULES": [TASKS],
                                     "SCHEDULES": {"ping": entry}}):
        call_command("jobschedules", "--sync", stdout=out)
    text = out.getvalue()
    assert "1 created" in text and "ping  every 0:01:00  next " in text
    assert "1 schedules, 1 enabled" in text
    # behind: ticks due long ago and not sent show as lag, in jobinfo too
    Schedule.objects.update(since=timezone.now() - timedelta(minutes=10))
    out = StringIO()
    call_command("jobinfo", stdout=out)
    lag = out.getvalue().split("lag ")[1].split("s")[0]
    assert 530 <= int(lag) <= 600
