"""Issue 9, items 1 and 2: a job whose process dies, or that raises what is not an Exception.

Every lost run counts as an attempt; after ``max_retries + 1`` lost runs (at least two: the first
loss always gets another try) the job fails with ``WorkerLost``; other jobs of its queue keep
running meanwhile; the worker replaces its child and never exits by itself.
"""

import signal

import pytest

from jobqueue.states import FINISHED
from tests.conftest import wait_until
from tests.faults.conftest import job_row
from tests.testapp.tasks import dies, dies_no_retry, raises_base, tally

pytestmark = pytest.mark.django_db(transaction=True)

LOSSES = [
    pytest.param(dies, "exit3", "exit code 3", 2, id="exit3-max_retries1"),
    pytest.param(dies_no_retry, "exit3", "exit code 3", 2, id="exit3-max_retries0"),
    pytest.param(dies, "kill", "signal 9", 2, id="sigkill-max_retries1"),
    pytest.param(dies, "exit0", "exit code 0", 2, id="exit0-max_retries1"),
]


@pytest.mark.parametrize(("task", "how", "lost", "expected_runs"), LOSSES)
def test_a_job_whose_process_dies_fails_after_its_retries_and_others_run(
    broker, runs, start_worker, task, how, lost, expected_runs
):
    doomed = task.delay(runs.counter, "doomed", how)
    others = tally.map([(runs.counter, f"other-{i}") for i in range(20)])
    worker = start_worker()

    def settled():
        if runs.of("doomed") > expected_runs or not worker.alive:
            return True  # looping (or the worker gave up): fail now, not at the deadline
        return doomed.status in FINISHED and all(j.status in FINISHED for j in others)

    wait_until(settled, timeout=30, message="the doomed job to fail and the others to run")
    assert worker.alive, worker.tail()
    assert runs.of("doomed") == expected_runs, runs.counts()
    row = job_row(doomed)
    assert (row.status, row.attempts) == ("failed", expected_runs)
    assert "WorkerLost" in row.error and f"its worker process died ({lost})" in row.error
    assert [j.status for j in others] == ["succeeded"] * 20
    assert all(runs.of(f"other-{i}") == 1 for i in range(20)), runs.counts()
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.tail()


@pytest.mark.parametrize("kind", ["sys.exit", "KeyboardInterrupt", "LibraryAbort"])
def test_a_base_exception_fails_the_job_and_the_worker_carries_on(
    broker, runs, start_worker, kind
):
    bad = raises_base.delay(runs.counter, "bad", kind)
    after = tally.delay(runs.counter, "after")
    worker = start_worker()

    def settled():
        if runs.of("bad") > 1 or not worker.alive:
            return True
        return bad.status in FINISHED and after.status in FINISHED

    wait_until(settled, timeout=20, message="the job to fail and the next to run")
    assert worker.alive, worker.tail()  # a one-process worker must not exit 0 (nor at all)
    assert runs.of("bad") == 1
    row = job_row(bad)
    assert row.status == "failed"
    assert kind.split(".")[-1].replace("exit", "SystemExit") in row.error
    assert "Traceback" in row.traceback
    assert after.get(timeout=0) == "after"
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.tail()
