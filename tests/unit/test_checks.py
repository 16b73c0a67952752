import math

import pytest
from django.test import override_settings

from jobqueue import registry, task
from jobqueue.checks import check_settings, check_tasks
from jobqueue.conf import get_settings
from jobqueue.exceptions import ConfigurationError


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
        # ("default") is a string, not a tuple: it must not become queues d, e, f, a, u, l, t.
        ({"QUEUES": ("default")}, "jobqueue.E005", "'QUEUES': ['default']"),
        ({"QUEUES": ["default", "a|b"]}, "jobqueue.E005", "holds '|'"),
        ({"QUEUES": ["default", "a,b"]}, "jobqueue.E005", "holds ','"),
        ({"QUEUES": ["default", "two words"]}, "jobqueue.E005", "holds ' '"),
        ({"QUEUES": ["default", "q" * 101]}, "jobqueue.E005", "at most 100"),
        ({"QUEUES": ["default", *(f"{i:099}" for i in range(10))]}, "jobqueue.E005", "1000"),
        ({"QUEUES": ["default", 3]}, "jobqueue.E005", "non-empty string"),
        ({"QUEUES": {"default": 1}}, "jobqueue.E005", "highest priority first"),
        ({"DEFAULT_QUEUE": "a|b"}, "jobqueue.E006", "holds '|'"),
        ({"MAX_BATCH": 2.5}, "jobqueue.E007", "whole number of jobs"),
        ({"MAX_BATCH": 0}, "jobqueue.E007", "whole number of jobs"),
        ({"MAX_BATCH": True}, "jobqueue.E007", "whole number of jobs"),
        ({"LEASE_TIMEOUT": -1}, "jobqueue.E007", "e.g. 30"),
        ({"LEASE_TIMEOUT": math.inf}, "jobqueue.E007", "e.g. 30"),
        ({"LEASE_TIMEOUT": math.nan}, "jobqueue.E007", "e.g. 30"),
        ({"POLL_INTERVAL": 0}, "jobqueue.E007", "e.g. 0.2"),
        ({"RESULT_TTL": -1}, "jobqueue.E007", "or None"),
        ({"RETRY_BACKOFF_MAX": -1}, "jobqueue.E007", "e.g. 3600"),
        ({"TASK_MODULES": "myapp.jobs"}, "jobqueue.E008", "'TASK_MODULES': ['myapp.jobs']"),
        ({"TASK_MODULES": ["my app"]}, "jobqueue.E008", "dotted module paths"),
        ({"BROKER": {"BACKEND": 3}}, "jobqueue.E003", "JOBQUEUE['BROKER']['BACKEND'] must be"),
        ({"BROKER": {"OPTIONS": []}}, "jobqueue.E003", "JOBQUEUE['BROKER']['OPTIONS'] must be"),
        ({"BROKER": "redis://"}, "jobqueue.E003", "not 'redis://'"),
        ({"BROKER": {"OPTION": {}}}, "jobqueue.E003", "unknown keys 'OPTION'"),
        ({"QUEUS": ["default"]}, "jobqueue.E002", "unknown key 'QUEUS'"),
        # Leases are renewed every third of LEASE_TIMEOUT; Redis keeps them in milliseconds.
        ({"LEASE_TIMEOUT": 0.099}, "jobqueue.E007", "at least 0.1"),
        ({"POLL_INTERVAL": 0.0009}, "jobqueue.E007", "at least 0.001"),
        ({"MAX_BATCH": 10_001}, "jobqueue.E007", "<= 10_000"),
        ({"TASK_MODULES": ["myapp..jobs"]}, "jobqueue.E008", "dotted module paths"),
        ({"TASK_MODULES": ["myapp.2jobs"]}, "jobqueue.E008", "dotted module paths"),
        ({"TASK_MODULES": ["myapp.jobs-v2"]}, "jobqueue.E008", "dotted module paths"),
        ({"TASK_MODULES": ["myapp.jobs²"]}, "jobqueue.E008", "dotted module paths"),
        ({"TASK_MODULES": ["myapp.jobs\n"]}, "jobqueue.E008", "dotted module paths"),
    ],
)
def test_bad_settings_are_reported_with_a_fix(setting, expected_id, hint_fragment):
    with override_settings(JOBQUEUE=setting):
        messages = check_settings()
    assert expected_id in ids(messages)
    text = " ".join(f"{m.msg} {m.hint or ''}" for m in messages)
    assert hint_fragment in text


@pytest.mark.parametrize(
    "setting",
    [{"LEASE_TIMEOUT": 0.2, "MAX_BATCH": 1, "RESULT_TTL": None, "POLL_INTERVAL": 0.01},
     {"RESULT_TTL": 0, "RETRY_BACKOFF_MAX": 0, "QUEUES": ("a",), "DEFAULT_QUEUE": "a"},
     {"QUEUES": ["emails:high", "q" * 100, "default"], "TASK_MODULES": ("myapp.jobs",)},
     {"LEASE_TIMEOUT": 0.1, "POLL_INTERVAL": 0.001, "MAX_BATCH": 10_000},
     {"TASK_MODULES": ["myapp.tâches", "_private.jobs"]}],
)
def test_good_settings_pass_and_are_read(setting):
    with override_settings(JOBQUEUE=setting):
        assert check_settings() == []
        conf = get_settings()
    for key, value in setting.items():
        assert getattr(conf, key) == (tuple(value) if isinstance(value, list) else value)


def test_a_bad_setting_is_refused_when_read_not_misread():
    """Code that reads the settings without the system checks (a web server's process) gets
    the same message, instead of a worker serving queues 'd', 'e', 'f', ..."""
    with override_settings(JOBQUEUE={"QUEUES": "default", "MAX_BATCH": 2.5}), pytest.raises(
        ConfigurationError, match=r"not the string 'default'.*'MAX_BATCH'\] = 2.5"
    ):
        get_settings()
    with override_settings(JOBQUEUE={"QUEUES": "default"}):
        assert check_tasks() == []  # check_settings reports it once


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


def test_numbers_given_as_int_subclasses_are_read_as_plain_numbers():
    import enum

    class Size(enum.IntEnum):
        BATCH = 50

    with override_settings(JOBQUEUE={"MAX_BATCH": Size.BATCH, "LEASE_TIMEOUT": Size.BATCH}):
        assert check_settings() == []
        conf = get_settings()
    assert (type(conf.MAX_BATCH), conf.MAX_BATCH) == (int, 50)
    assert type(conf.LEASE_TIMEOUT) is int


def test_an_unknown_key_is_reported_by_the_checks_and_changes_nothing_else():
    with override_settings(JOBQUEUE={"QUEUES": ["default"], "MAX_BATH": 5}):
        messages = check_settings()
        conf = get_settings()  # read, not refused: the checks report it
    assert [(m.id, m.msg) for m in messages] == [
        ("jobqueue.E002", "JOBQUEUE has an unknown key 'MAX_BATH'.")]
    assert "MAX_BATCH" in messages[0].hint
    assert conf.MAX_BATCH == 100


def test_check_deploy_reports_a_bad_setting_once():
    """The durability check does not add a second, misleading warning about the broker."""
    from jobqueue.checks import check_broker_durability

    with override_settings(JOBQUEUE={"BROKER": {"BACKEND": 3}}):
        assert ids(check_settings()) == ["jobqueue.E003"]
        assert check_broker_durability() == []


@pytest.mark.parametrize(
    ("use_tz", "zone", "broker", "flagged"),
    [
        (False, "Asia/Tokyo", "jobqueue.brokers.database.DatabaseBroker", True),
        (False, "UTC", "jobqueue.brokers.database.DatabaseBroker", False),
        (True, "Asia/Tokyo", "jobqueue.brokers.database.DatabaseBroker", False),
        (False, "Asia/Tokyo", "jobqueue.brokers.redis.RedisBroker", False),
    ],
)
def test_local_times_with_the_database_broker_on_sqlite_are_an_error(
    use_tz, zone, broker, flagged
):
    """SQLite's clock is UTC; with USE_TZ = False Django writes local times, so leases and due
    times would be off by the zone's offset."""
    from django.db import connection

    from jobqueue.checks import check_database_clock

    with override_settings(USE_TZ=use_tz, TIME_ZONE=zone, JOBQUEUE={"BROKER": {"BACKEND": broker}}):
        found = check_database_clock()
    expected = ["jobqueue.E011"] if flagged and connection.vendor == "sqlite" else []
    assert ids(found) == expected
    if found:
        assert "'Asia/Tokyo'" in found[0].msg and "USE_TZ = True" in found[0].hint
