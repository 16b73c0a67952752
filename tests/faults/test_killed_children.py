"""Issue 9, item 3: a child killed (for a timeout, a cancel, or by anyone's SIGKILL) must not take
the outcomes of the jobs it had already finished with it: they are acknowledged, never run again;
a run that may have happened is counted in ``attempts``.

The child runs quick jobs in a batch and then one that is stopped; outcomes of a batch wait a
little for one acknowledgement, which is the window this exercises.
"""

import os
import signal

import pytest

from jobqueue.states import FINISHED
from tests.conftest import wait_until
from tests.faults.conftest import job_row, settle
from tests.testapp.tasks import gated, overruns, tally

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE, AFTER = 40, 5  # 40: in mid-batch once batches have grown (1, 2, 4, ... 32)


@pytest.mark.parametrize("stop", ["timeout", "cancel", "sigkill"])
def test_killing_a_child_never_reruns_the_jobs_it_finished(broker, runs, start_worker, stop):
    gate = runs.gate()
    quick = [f"quick-{i}" for i in range(BEFORE + AFTER)]
    before = tally.map([(runs.counter, item) for item in quick[:BEFORE]])
    if stop == "timeout":
        stopped = overruns.delay(runs.counter, "stopped")
    else:
        stopped = gated.delay(runs.counter, "stopped", gate)
    after = tally.map([(runs.counter, item) for item in quick[BEFORE:]])
    worker = start_worker()
    runs.wait("stopped")
    if stop == "cancel":
        assert stopped.cancel()
    elif stop == "sigkill":
        os.kill(runs.pids("stopped")[0], signal.SIGKILL)
        wait_until(lambda: runs.pids("stopped")[0] not in worker.children(), message="the kill")
        runs.open(gate)  # its next run (the first loss is always retried) goes through
    jobs = [*before, stopped, *after]

    def quick_runs():
        return {i: n for i, n in runs.counts().items() if not i.startswith("stopped")}

    def settled():
        if not worker.alive or any(n > 1 for n in quick_runs().values()):
            return True  # a quick job ran twice, or the worker died: fail now
        return all(j.status in FINISHED for j in jobs)

    settle(settled, 20, "every job to finish", worker, jobs)
    assert quick_runs() == {item: 1 for item in quick}
    rows = [job_row(j) for j in before + after]
    assert {(r.status, r.attempts) for r in rows} == {("succeeded", 1)}
    row = job_row(stopped)
    if stop == "timeout":
        assert (row.status, runs.of("stopped")) == ("failed", 1)
        assert "TimeoutError" in row.error
    elif stop == "cancel":
        assert (row.status, runs.of("stopped")) == ("canceled", 1)
    else:
        assert (row.status, row.attempts, runs.of("stopped")) == ("succeeded", 2, 2)
    assert worker.alive, worker.tail()
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.tail()
