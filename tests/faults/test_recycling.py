"""Issue 9, "children's life cycle": a child that has run ``--max-jobs`` jobs, or whose memory
passed ``--max-memory`` after a job, is replaced cleanly: its jobs are finished and acknowledged
first, so none runs twice or is lost."""

import signal

import pytest

from jobqueue.states import FINISHED
from tests.faults.conftest import job_row, settle
from tests.testapp.tasks import tally

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(("option", "jobs", "children"), [
    pytest.param(("--max-jobs", "5"), 30, 6, id="max-jobs"),
    pytest.param(("--max-memory", "1"), 6, 6, id="max-memory"),  # every child is past 1 MB
])  # fmt: skip
def test_recycled_children_lose_and_repeat_nothing(broker, runs, start_worker, option, jobs,
                                                   children):
    items = [f"job-{i}" for i in range(jobs)]
    sent = tally.map([(runs.counter, item) for item in items])
    worker = start_worker(*option)
    settle(lambda: all(j.status in FINISHED for j in sent) or not worker.alive, 20,
           "every job to run", worker, sent)
    assert worker.alive, worker.tail()
    assert runs.counts() == {item: 1 for item in items}
    assert {(r.status, r.attempts) for r in map(job_row, sent)} == {("succeeded", 1)}
    pids = {pid for _, pid in runs.entries()}
    assert len(pids) >= children, pids  # one process per N jobs (per job, past the memory cap)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.tail()
