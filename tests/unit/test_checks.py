import pytest
from django.test import override_settings

from jobqueue import registry, task
from jobqueue.checks import check_settings, check_tasks


def ids(messages):
    return [m.id for m in messages]


def test_default_settings_pass():
    assert check_settings() == []
    assert check_tasks() == []


@pytest.mark.parametrize(
    ("setting", "expected_id", "hint_fragment"),
    [
        ({"BROKER": {"BACKEND": "nope.Broker"}}, "jobqueue.E004", "jobqueue.brokers.database"),
        ({"BROKER": {"BACKEND": "jobqueue.models.Job"}}, "jobqueue.E004", "not a Broker"),
        ({"QUEUES": []}, "jobqueue.E005", "highest priority first"),
        ({"QUEUES": ["a", "a"]}, "jobqueue.E005", "twice"),
        ({"QUEUES": ["a"]}, "jobqueue.E006", "'DEFAULT_QUEUE': 'a'"),
        ({"LEASE_TIMEOUT": 0}, "jobqueue.E007", "e.g. 30"),
        ({"RESULT_TTL": "500"}, "jobqueue.E007", "or None"),
        ({"QUEUE": ["default"]}, "jobqueue.E002", "QUEUES"),
        ({"TRACKING": "no"}, "jobqueue.E009", "'TRACKING': False"),
        ({"EAGER": 1}, "jobqueue.E009", "'EAGER': True"),
    ],
)
def test_bad_settings_are_reported_with_a_fix(setting, expected_id, hint_fragment):
    with override_settings(JOBQUEUE=setting):
        messages = check_settings()
    assert expected_id in ids(messages)
    text = " ".join(f"{m.msg} {m.hint or ''}" for m in messages)
    assert hint_fragment in text


def test_task_on_unknown_queue_is_reported():
    t = task(queue="nowhere", name="tests.unit.test_checks.nowhere")(lambda: None)
    try:
        messages = check_tasks()
        assert ids(messages) == ["jobqueue.E010"]
        assert "Add 'nowhere' to JOBQUEUE['QUEUES']" in messages[0].hint
    finally:
        registry._tasks.pop(t.name)


def test_unknown_broker_options_fail_with_the_setting_named():
    from jobqueue.brokers import get_broker
    from jobqueue.exceptions import ConfigurationError

    bad = {"BROKER": {"BACKEND": "jobqueue.brokers.database.DatabaseBroker",
                      "OPTIONS": {"urll": "x"}}}
    with override_settings(JOBQUEUE=bad), pytest.raises(ConfigurationError, match="OPTIONS"):
        get_broker()
