"""The slot a worker child shares with its supervisor: what it tells of a child that died."""

import multiprocessing
from datetime import UTC, datetime

from jobqueue.brokers.base import Outcome
from jobqueue.message import Lease, Message
from jobqueue.slot import CLAIMED, RUNNING, Slot, decode_outcomes, encode_outcome
from jobqueue.states import JobStatus

CONTEXT = multiprocessing.get_context("fork")
WHEN = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def message(n: int, token: int = 7, timeout: float | None = None) -> Message:
    return Message(task="t", arguments="{}", queue="q", id=f"{n:08d}-0000-7000-8000-000000000000",
                   token=token, timeout=timeout)


def outcome(m: Message, **fields) -> Outcome:
    return Outcome(m.id, JobStatus.SUCCEEDED, WHEN, WHEN, result="1", token=m.token, **fields)


def test_outcomes_travel_as_json_lines_intact():
    original = [
        outcome(message(1)),
        Outcome("x", JobStatus.SCHEDULED, WHEN, WHEN, error="E: é\nx", traceback="tb",
                run_at=WHEN, token=2**40),
    ]
    data = b"".join(encode_outcome(o) for o in original)
    assert data.count(b"\n") == 2
    assert decode_outcomes(data) == original


def test_a_dead_childs_slot_tells_what_to_ack_release_and_count():
    slot = Slot(CONTEXT, 8)
    batch = [message(i, token=10 + i) for i in range(4)]
    slot.claimed(batch)
    for m in batch[:2]:
        assert slot.begin(m)
        slot.finished(m, encode_outcome(outcome(m)))
    assert slot.begin(batch[2])
    remains = slot.remains()
    assert [o.job_id for o in remains.outcomes] == [batch[0].id, batch[1].id]
    assert remains.ran == [batch[2].lease]
    assert remains.unstarted == [batch[3].lease]
    assert slot.jobs_done == 2


def test_acked_outcomes_are_forgotten_and_the_supervisor_renews_what_is_left():
    slot = Slot(CONTEXT, 8)
    batch = [message(i) for i in range(3)]
    slot.claimed(batch)
    slot.begin(batch[0])
    slot.finished(batch[0], encode_outcome(outcome(batch[0])))
    slot.acked()
    slot.begin(batch[1])
    held = slot.leases()
    assert held == {batch[1].id: (batch[1].lease, RUNNING), batch[2].id: (batch[2].lease, CLAIMED)}
    assert slot.remains().outcomes == []
    assert slot.header.buffered == 0


def test_a_dropped_job_is_not_started_and_is_given_back_unrun():
    slot = Slot(CONTEXT, 4)
    first, second = message(1), message(2)
    slot.claimed([first, second])
    slot.drop({second.id})
    assert slot.begin(first)
    assert not slot.begin(second)
    assert slot.current()["job_id"] == first.id


def test_an_outcome_too_big_for_the_buffer_is_not_buffered():
    slot = Slot(CONTEXT, 4, buffer_bytes=64)
    m = message(1)
    record = encode_outcome(outcome(m))
    assert not slot.fits(record)
    slot.claimed([m])
    slot.begin(m)
    slot.finished(m, None)
    remains = slot.remains()
    # Not acknowledged yet and not in the buffer: counted as a run that may have happened.
    assert (remains.outcomes, remains.ran) == ([], [Lease(m.id, m.token)])


def test_the_running_job_and_its_deadline_are_visible():
    slot = Slot(CONTEXT, 4)
    m = message(1, timeout=2.5)
    slot.claimed([m])
    slot.begin(m)
    current = slot.current()
    assert (current["job_id"], current["token"]) == (m.id, m.token)
    assert abs(current["deadline"] - current["started"] - 2.5) < 1e-6
    slot.finished(m, encode_outcome(outcome(m)))
    assert slot.current() is None


def test_a_long_non_ascii_task_name_is_cut_on_a_character_boundary():
    """200 bytes of the name are kept; a cut inside a character would not decode."""
    slot = Slot(CONTEXT, 2)
    name = "t.t\u00e2che." + "\u00e9" * 120
    m = Message(task=name, arguments="{}", queue="q", id=message(1).id, token=1)
    assert len(name.encode()[:200].decode(errors="ignore").encode()) < 200  # it is cut inside
    slot.claimed([m])
    assert slot.begin(m)
    current = slot.current()
    assert current is not None
    assert name.startswith(current["task"]) and len(current["task"].encode()) == 199
    slot.retire("recycled: " + "\u00e9" * 60)
    assert slot.remains().recycled.startswith("recycled: \u00e9")


def test_a_kill_decided_for_a_job_spares_the_child_once_it_has_moved_on():
    """The supervisor reads the running job, decides (a timeout; a cancel or a lost lease after
    a broker round trip), then kills: the kill hits only if the child still runs that job
    under that token, checked and sent under the lock the child needs to finish a job."""
    import signal
    import subprocess

    slot = Slot(CONTEXT, 4)
    first, second = message(1, token=5), message(2, token=6)
    slot.claimed([first, second])
    assert slot.begin(first)
    decided = slot.current()
    assert decided is not None
    # Meanwhile the child finishes the job and starts the next one.
    slot.finished(first, encode_outcome(outcome(first)))
    assert slot.begin(second)
    child = subprocess.Popen(["sleep", "60"])
    try:
        assert not slot.kill_if_running(child.pid, decided["job_id"], decided["token"])
        assert not slot.kill_if_running(child.pid, second.id, 99)  # same job, stale token
        assert child.poll() is None  # spared
        assert slot.kill_if_running(child.pid, second.id, 6)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()


def _child_finishes(slot: Slot, batch: list[Message]) -> None:
    slot.claimed(batch)
    assert slot.begin(batch[0])
    slot.finished(batch[0], encode_outcome(outcome(batch[0])))
    assert slot.begin(batch[1])


def test_what_a_forked_child_writes_is_what_its_supervisor_reads():
    """The slot's memory is shared with the child, not copied into it at the fork."""
    slot = Slot(CONTEXT, 4)
    batch = [message(i, token=20 + i) for i in range(3)]
    child = CONTEXT.Process(target=_child_finishes, args=(slot, batch))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    remains = slot.remains()
    assert remains.outcomes == [outcome(batch[0])]
    assert remains.ran == [batch[1].lease]
    assert remains.unstarted == [batch[2].lease]
    assert slot.jobs_done == 1
