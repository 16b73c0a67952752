"""What ``.delay()`` refuses never reaches the database broker: no row, no outbox entry."""

import math

import pytest
from django.db import transaction
from django.test import override_settings

from jobqueue.exceptions import ConfigurationError, JobQueueError
from jobqueue.models import Job, Outbox
from tests.testapp.tasks import add

pytestmark = pytest.mark.django_db(transaction=True)


def nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


def nested_dicts(depth):
    value = {}
    for _ in range(depth):
        value = {"child": value}
    return value


@pytest.mark.parametrize(
    ("send", "message"),
    [
        (lambda: add.delay(1, nested(500)), "nested deeper than 100"),
        (lambda: add.delay(1, nested_dicts(500)), "nested deeper than 100"),
        # Only a queue of QUEUES is accepted; QUEUES holding "a|b" is refused with the settings
        # (test_a_send_under_unusable_settings_writes_nothing).
        (lambda: add.apply_async((1, 2), queue="a|b"), "unknown queue 'a|b'"),
        (lambda: add.apply_async((1, 2), priority=101), "priority must be an int from -100"),
        (lambda: add.apply_async((1, 2), countdown=math.nan), "countdown must be a number"),
        (lambda: add.apply_async((1, 2), countdown=1e12), "countdown must be a number"),
        (lambda: add.apply_async("12"), "args must be a list or tuple"),
        (lambda: add.map([(1, 2), (3, nested(500))]), "nested deeper than 100"),
    ],
    ids=["nested-500", "nested-dicts-500", "queue-not-in-QUEUES", "priority", "countdown-nan",
         "countdown-too-far", "args-str", "map-one-bad"],
)
def test_a_refused_send_writes_nothing(send, message):
    with pytest.raises((JobQueueError, ValueError, TypeError), match=message) as info:
        send()
    with pytest.raises(type(info.value)), transaction.atomic():
        send()
    assert not Job.objects.exists()
    assert not Outbox.objects.exists()
    add.delay(1, 2)  # the broker itself is fine
    assert Job.objects.count() == 1


def test_a_send_under_unusable_settings_writes_nothing():
    """A web process runs no system checks: a queue named with '|' is refused at send, not
    stored for ever as a job no worker can claim."""
    with override_settings(JOBQUEUE={"QUEUES": ["default", "a|b"]}), pytest.raises(
        ConfigurationError, match=r"JOBQUEUE\['QUEUES'\]: queue name 'a\|b' holds '\|'"
    ):
        add.apply_async((1, 2), queue="default")
    assert not Job.objects.exists()
