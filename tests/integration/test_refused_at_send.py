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


@pytest.mark.parametrize(
    "send",
    [
        lambda: add.delay(1, nested(500)),
        lambda: add.apply_async((1, 2), queue="a|b"),
        lambda: add.apply_async((1, 2), queue="q" * 101),
        lambda: add.apply_async((1, 2), priority=101),
        lambda: add.apply_async((1, 2), countdown=math.nan),
        lambda: add.apply_async("12"),
        lambda: add.map([(1, 2), (3, nested(500))]),
    ],
    ids=["nested-500", "queue-pipe", "queue-too-long", "priority", "countdown-nan", "args-str",
         "map-one-bad"],
)
def test_a_refused_send_writes_nothing(send):
    with pytest.raises((JobQueueError, ValueError, TypeError)) as info:
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
