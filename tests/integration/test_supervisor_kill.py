"""A kill the supervisor decided for one job (timeout, cancel, lost lease) never hits the child
once it has moved on to another: the race made deterministic by moving the slot on between the
decision and the kill, with a real child process."""

import time

import pytest

from jobqueue.message import Message
from jobqueue.slot import Slot, encode_outcome
from jobqueue.worker import Child, Supervisor
from tests.unit.test_slot import message, outcome

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_kill_decided_for_a_finished_job_spares_the_child_running_the_next():
    supervisor = Supervisor(scheduler=False)
    supervisor.stopping.value = 1  # no replacement is started for the killed child
    child = Child("w/1", slot=Slot(supervisor.context, 4))
    child.process = supervisor.context.Process(target=time.sleep, args=(60,), daemon=True)
    child.process.start()
    try:
        first: Message = message(1, token=5)
        second = message(2, token=6)
        child.slot.claimed([first, second])
        child.slot.begin(first)
        decided = child.slot.current()  # the supervisor reads the running job...
        child.slot.finished(first, encode_outcome(outcome(first)))  # ...the child moves on
        child.slot.begin(second)
        job = (decided["job_id"], decided["token"])
        assert not supervisor.kill(child, f"cancel: job {job[0]}", "canceled", job=job)
        assert child.process.is_alive() and child.kill_reason == ""
        assert supervisor.kill(child, "cancel: job 2", "canceled", job=(second.id, 6))
        assert child.process is None  # killed and collected
        assert child.kill_reason == "cancel: job 2"
    finally:
        if child.process is not None:
            child.process.kill()
            child.process.join()
