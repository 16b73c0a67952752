"""Options given as int subclasses (an ``(int, Enum)`` of priorities, say) are sent as plain
numbers: written as ``Prio.HIGH`` into a broker's message, the job would be stored and never
queued."""

import enum

import pytest
from django.conf import settings
from django.test import override_settings

from jobqueue import registry, task
from jobqueue.brokers.database import DatabaseBroker
from jobqueue.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


class Prio(int, enum.Enum):
    LOW = -5
    HIGH = 7


class Retries(enum.IntEnum):
    SOME = 3


@pytest.fixture
def sendable():
    """Tasks declared here are sendable: this module is a task module for these tests."""
    with override_settings(JOBQUEUE={**settings.JOBQUEUE, "TASK_MODULES": [__name__]}):
        yield
    for name in [n for n, t in registry.all_tasks().items() if t.module == __name__]:
        registry._tasks.pop(name)


def test_enum_priority_and_retries_travel_as_plain_ints_and_the_job_is_claimed(sendable):
    t = task(name=f"{__name__}.ranked", priority=Prio.LOW, max_retries=Retries.SOME,
             timeout=Retries.SOME)(lambda: None)
    assert (type(t.priority), type(t.max_retries), type(t.timeout)) == (int, int, float)
    message = t.message(priority=Prio.HIGH, countdown=Retries.SOME)
    assert (type(message.priority), type(message.max_retries)) == (int, int)
    assert (message.priority, message.max_retries, message.timeout) == (7, 3, 3.0)
    assert str(message.priority) == "7"  # what a text encoding of the message writes

    low = t.delay()
    high = t.apply_async(priority=Prio.HIGH)
    broker = DatabaseBroker()
    try:
        claimed = broker.claim(["default"], "w1", 10)
    finally:
        broker.close()
    assert [(m.id, m.priority) for m in claimed] == [(high.id, 7), (low.id, -5)]
    assert Job.objects.get(id=high.id).priority == 7
