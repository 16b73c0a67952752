"""What the supervisor tells the broker about a child that is gone, when the broker refuses part
of it for its data: the rest is stored, the refused job fails plainly, nothing is left pending and
nothing raises (a supervisor that crashed would take every running job with it)."""

import multiprocessing

import pytest
from django.db import connection
from django.utils import timezone

from jobqueue.brokers.base import Outcome
from jobqueue.brokers.database import DatabaseBroker
from jobqueue.consumer import Consumer
from jobqueue.models import Job
from jobqueue.slot import Remains, Slot
from jobqueue.states import JobStatus
from jobqueue.worker import Settlement, Supervisor
from tests.testapp.tasks import add

pytestmark = pytest.mark.django_db(transaction=True)

SURROGATE = b"caf\xe9".decode("utf-8", "surrogateescape")
REFUSED_TEXTS = [
    pytest.param(SURROGATE, id="surrogate"),
    pytest.param(
        "a\x00b",
        id="nul",
        marks=pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite stores NUL"),
    ),
]


def claimed(n):
    add.map([(i, i) for i in range(n)])
    return DatabaseBroker().claim(["default"], "w/1", n)


def outcome(message, error=""):
    now = timezone.now()
    if error:
        return Outcome(message.id, JobStatus.FAILED, now, now, error=error, token=message.token)
    return Outcome(message.id, JobStatus.SUCCEEDED, now, now, result="2", token=message.token)


def rows():
    return {str(k): v for k, v in Job.objects.values_list("id", "status")}


@pytest.mark.parametrize("text", REFUSED_TEXTS)
def test_a_child_batch_refused_for_one_outcome_is_finished_one_by_one(text):
    messages = claimed(3)
    context = multiprocessing.get_context("fork")
    slot = Slot(context, 8)
    consumer = Consumer(DatabaseBroker(), ["default"], "w/1", slot, context.RawValue("b", 0))
    consumer.pending = [outcome(messages[0]), outcome(messages[1], text), outcome(messages[2])]
    consumer.flush()  # raised, or refused the whole batch for ever, before
    assert consumer.pending == []
    status = rows()
    assert [status[m.id] for m in messages] == ["succeeded", "failed", "succeeded"]
    error = Job.objects.get(id=messages[1].id).error
    assert error.startswith("OutcomeRefused: the broker refused to store this job's outcome")


@pytest.mark.parametrize("text", REFUSED_TEXTS)
def test_a_settlement_refused_for_its_data_never_raises_and_fails_that_job_plainly(text):
    messages = claimed(4)
    supervisor = Supervisor(scheduler=False)
    supervisor.pending = [
        # The child's own outcomes: the refused one is finished alone, with a plain error.
        Settlement("w/1", Remains(outcomes=[outcome(messages[0], text), outcome(messages[1])]),
                   "exit code 1"),
        # An outcome the supervisor decided (a timeout's) and was refused: the same.
        Settlement("w/1", Remains(ran=[messages[3].lease]), "timeout",
                   decided=[outcome(messages[2], text)]),
    ]
    supervisor.settle()
    assert supervisor.pending == []
    status = rows()
    assert [status[m.id] for m in messages[:3]] == ["failed", "succeeded", "failed"]
    for m in (messages[0], messages[2]):
        assert Job.objects.get(id=m.id).error.startswith("OutcomeRefused:")
