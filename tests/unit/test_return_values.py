"""A task's return value follows the rules of its arguments (JSON, depth, int size); one that
cannot be stored fails the job at once: a retry would run the task again for the same value."""

import re

import pytest
from django.conf import settings
from django.test import override_settings

from jobqueue import registry, task
from jobqueue.execution import execute
from jobqueue.states import JobStatus

pytestmark = pytest.mark.django_db  # execute() closes stale database connections


def deep(depth):
    value = {}
    for _ in range(depth):
        value = {"child": value}
    return value


@pytest.fixture
def returns():
    """Declare a task (retries left) that returns ``value``; this module is a task module."""
    declared = []

    def declare(value):
        t = task(name=f"{__name__}.returns_{len(declared)}", max_retries=3)(lambda: value)
        declared.append(t.name)
        return t

    with override_settings(JOBQUEUE={**settings.JOBQUEUE, "TASK_MODULES": [__name__]}):
        yield declare
    for name in declared:
        registry._tasks.pop(name)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({1, 2}, r"returns_0\(\) return value: a builtins.set cannot travel as JSON"),
        (deep(150), r"returns_0\(\) return value\['child'\]\['child'\].*\(100 levels\): nested"),
        (10**4001, r"returns_0\(\) return value: an int of more than 4000 digits"),
    ],
    ids=["set", "150-deep", "4002-digits"],
)
def test_a_return_value_that_cannot_be_stored_fails_the_job_without_retry(returns, value, error):
    message = returns(value).message()
    message.attempts = 1  # as claimed: three retries left
    outcome = execute(message)
    assert outcome.status == JobStatus.FAILED
    assert outcome.run_at is None
    assert outcome.error.startswith("jobqueue.exceptions.SerializationError: ")
    assert re.search(error, outcome.error)


def test_a_return_value_that_can_be_stored_succeeds(returns):
    message = returns(deep(99)).message()
    message.attempts = 1
    outcome = execute(message)
    assert outcome.status == JobStatus.SUCCEEDED
    assert outcome.result.count("child") == 99
