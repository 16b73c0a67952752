"""The Redis broker against what someone who can write to Redis forges, and against a Redis that
comes back from an older snapshot: no forged value stops tracking or loses another job, no
version goes backwards, and no lease token of a lost life becomes valid again. Real Redis
servers, the real database."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from uuid import uuid4

import pytest
from django.test import override_settings

from jobqueue.brokers import get_broker
from jobqueue.brokers.redis import RedisBroker, codec
from jobqueue.exceptions import BrokerError
from jobqueue.message import Lease
from jobqueue.models import Job
from jobqueue.states import JobStatus
from tests.conftest import wait_until
from tests.integration.test_redis_reliability import done, message, synced
from tests.redis_server import redis_broker_settings

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.brokers("redis")]


def later_job_recorded(broker) -> bool:
    """A job sent after a forged entry is still recorded (tracking did not stall on it)."""
    later = message(2, 2)
    broker.enqueue([later])
    synced(broker)
    return Job.objects.filter(id=later.id, status="queued").exists()


# -- free text never shifts the other fields -----------------------------------------------------
def test_a_bar_in_a_worker_name_is_refused_and_one_forged_into_an_event_shifts_nothing(
    broker, redis_server
):
    m = message(1, 1)
    broker.enqueue([m])
    with pytest.raises(ValueError, match="may not contain"):
        broker.claim(["default"], "host|1", 1)
    with pytest.raises(BrokerError, match="may not contain"):  # the script refuses it too
        broker.run("CLAIM", "host|1", 1, 60_000, uuid4().hex, "default")
    [c] = broker.claim(["default"], "host", 1)
    with pytest.raises(ValueError, match="may not contain"):
        broker.finish("host|1", [done(c)])
    assert broker.finish("host", [done(c)]) == 1
    # A finish event whose worker holds a '|' (written by hand, or by an older release).
    client = redis_server.client()
    finished = int(client.get(broker.key("r", m.id)).split(b"|", 1)[0])
    payload = json.dumps({"status": "succeeded", "result": "2", "error": "", "traceback": ""})
    client.xadd(
        broker.key("events"),
        {"d": f"f|{m.id}|succeeded|1|host|1|{finished + 1}", "p": payload, "b": codec.encode(m)},
    )
    synced(broker)
    row = Job.objects.get(id=m.id)
    assert (row.status, row.worker, row.version) == ("succeeded", "host|1", finished + 1)
    client.delete(broker.key("r", m.id))  # its result expires
    broker.reconciler.next_sweep = 0
    assert broker.reconciler.step(broker) == 0  # a finished job is never run again


# -- versions only rise, whatever the table has recorded -----------------------------------------
def test_a_requeue_while_tracking_lags_never_takes_the_version_back(broker, redis_server):
    client = redis_server.client()
    m = message(1, 1)
    broker.enqueue([m])
    [c] = broker.claim(["default"], "w", 1)
    broker.finish("w", [done(c, JobStatus.FAILED, error="boom")])
    synced(broker)
    # Another process holds the tracker's lock: the table lags from here on.
    client.set(broker.key("tracker"), "someone-else", px=60_000)
    assert broker.requeue() == 1
    [c] = broker.claim(["default"], "w", 1)
    broker.finish("w", [done(c, JobStatus.FAILED, error="boom again")])
    high = int(client.get(broker.key("r", m.id)).split(b"|", 1)[0])
    client.delete(broker.key("r", m.id))  # its outcome expires before the table has it
    assert broker.requeue() == 1  # from the row, which still says the first failure
    assert int(client.hget(broker.key("ver"), m.id)) > high
    client.delete(broker.key("tracker"))
    broker.tracking.BATCH = 1  # batches end anywhere
    synced(broker)
    [c] = broker.claim(["default"], "w", 1)
    broker.finish("w", [done(c, result="3")])
    synced(broker)
    row = Job.objects.get(id=m.id)
    assert (row.status, row.result) == ("succeeded", "3")


def test_after_redis_comes_back_from_an_older_snapshot_an_old_lease_token_is_refused(
    volatile_redis,
):
    prefix = f"snap{uuid4().hex[:6]}"
    with override_settings(JOBQUEUE={"BROKER": redis_broker_settings(volatile_redis.url, prefix)}):
        b = get_broker()
        m = message(1, 1)
        b.enqueue([m])
        volatile_redis.client().save()  # the last snapshot: the job waiting
        [old] = b.claim(["default"], "w1", 1)
        volatile_redis.kill()
        volatile_redis.restart()  # back to the snapshot (a crash, or a lagging replica promoted)
        b.close()
        [new] = b.claim(["default"], "w2", 1)
        assert new.id == m.id and new.token > old.token
        # The run of the lost life can neither hold nor end the new claim's lease.
        assert b.renew("w1", [Lease(m.id, old.token)]) == {m.id}
        assert b.finish("w1", [done(old)]) == 0
        assert b.finish("w2", [done(new)]) == 1
        b.close()


# -- a forged stream entry is skipped with its reason; tracking goes on -----------------------
@pytest.mark.parametrize(
    "forged",
    [
        pytest.param(lambda j: {"d": f"s|{j}:1:5|99999999999999999|w"}, id="time-past-year-9999"),
        pytest.param(lambda j: {"d": f"s|{j}:1:5|{'9' * 25}|w"}, id="time-overflowing"),
        pytest.param(lambda j: {"d": f"x|{j}:{2**64}"}, id="version-past-bigint"),
        pytest.param(lambda j: {"d": f"e|{j}:1:-4"}, id="negative-attempts"),
        pytest.param(
            lambda j: {
                "d": f"f|{j}|failed|1|w|9",
                "p": '{"status": "failed", "error": 5}',
                "b": codec.encode(message(1, 1, id=j)),
            },
            id="number-for-a-text",
        ),
        pytest.param(
            lambda j: {"d": f"c|{j}|1|9", "p": "[1, 2]", "b": ""}, id="outcome-not-an-object"
        ),
        pytest.param(
            lambda j: {
                "d": f"f|{j}|failed|1|w|9",
                "p": '{"status": "failed", "ended_ms": 99999999999999999999}',
                "b": codec.encode(message(1, 1, id=j)),
            },
            id="outcome-time-overflowing",
        ),
    ],
)
def test_a_forged_event_is_skipped_with_its_reason_and_stalls_no_one(
    broker, redis_server, caplog, forged
):
    redis_server.client().xadd(broker.key("events"), forged(str(uuid4())))
    with caplog.at_level(logging.WARNING):
        assert later_job_recorded(broker)
    assert "state=untrackable" in caplog.text


def test_the_outbox_relay_runs_while_tracking_has_not_caught_up(broker, redis_server):
    from datetime import timedelta

    from django.utils import timezone

    from jobqueue.brokers.redis import outbox
    from jobqueue.models import Outbox

    m = message(1, 1)
    outbox.write([m], [codec.encode(m)])
    Outbox.objects.update(created_at=timezone.now() - timedelta(minutes=1))
    # Another process is busy tracking (a drain faster than tracking: it never catches up).
    redis_server.client().set(broker.key("tracker"), "someone-else", px=60_000)
    assert broker.upkeep(0.1) is False
    assert not Outbox.objects.exists()
    assert redis_server.client().hexists(broker.key("msg"), m.id)


# -- forged numbers in a job's record lose no other job --------------------------------------
def swept(broker) -> None:
    """A whole sweep of the jobs Redis holds."""
    broker.reconciler.redis_cursor = "0"
    while broker.reconciler.redis_cursor is not None:
        broker.reconciler.sweep_redis()


def test_a_forged_attempts_count_loses_no_job_claimed_with_it(broker, redis_server, caplog):
    client = redis_server.client()
    ms = [message(i, i) for i in range(5)]
    broker.enqueue(ms)
    client.hset(broker.key("attempts"), ms[1].id, "junk")
    with caplog.at_level(logging.WARNING):
        claimed = broker.claim(["default"], "w", 10)
    assert {m.id for m in claimed} == {m.id for i, m in enumerate(ms) if i != 1}
    assert "state=stray-entry" in caplog.text
    # The forged job waits for the sweep, which repairs it and puts it back.
    with caplog.at_level(logging.WARNING):
        swept(broker)
    assert f"job={ms[1].id} state=requeued-stray" in caplog.text
    [again] = broker.claim(["default"], "w", 10)
    assert (again.id, again.attempts) == (ms[1].id, 1)


def test_a_forged_version_loses_no_job(broker, redis_server):
    client = redis_server.client()
    ms = [message(i, i) for i in range(3)]
    broker.enqueue(ms)
    client.hset(broker.key("ver"), ms[0].id, "junk")
    assert {m.id for m in broker.claim(["default"], "w", 10)} == {ms[1].id, ms[2].id}
    swept(broker)
    assert [m.id for m in broker.claim(["default"], "w", 10)] == [ms[0].id]


def test_a_forged_attempts_count_stops_no_recovery_of_expired_leases(broker, redis_server):
    client = redis_server.client()
    ms = [message(i, i) for i in range(3)]
    broker.enqueue(ms)
    assert len(broker.claim(["default"], "w", 10)) == 3
    for m in ms:
        client.zadd(broker.key("running"), {m.id: 0})  # every lease expired
    client.hset(broker.key("attempts"), ms[0].id, "junk")
    assert broker.recover() == 3
    assert {m.id for m in broker.claim(["default"], "w", 10)} == {m.id for m in ms}


def test_the_sweep_puts_back_a_job_whose_entry_is_gone_and_leaves_the_others(
    broker, redis_server, caplog
):
    client = redis_server.client()
    ms = [message(i, i) for i in range(3)]
    broker.enqueue(ms)
    queue = broker.key("q", "default", "0")
    entry = next(e for e in client.lrange(queue, 0, -1) if e.decode().startswith(ms[0].id))
    client.lrem(queue, 1, entry)
    [running] = broker.claim(["default"], "w", 1)
    with caplog.at_level(logging.WARNING):
        swept(broker)
    assert caplog.text.count("state=requeued-stray") == 1
    assert [m.id for m in broker.claim(["default"], "w", 10)] == [ms[2].id, ms[0].id]
    assert running.id == ms[1].id


# -- the supervisor is never stalled by its upkeep thread -------------------------------------
@contextlib.contextmanager
def upkeep_blocked_on_a_locked_row(broker) -> Iterator[None]:
    """The broker's upkeep thread waiting on a row another session has locked (PostgreSQL)."""
    from django.db import connection, connections

    if connection.vendor != "postgresql":
        pytest.skip("row locks held by another session: PostgreSQL")
    import psycopg

    m = message(1, 1)
    broker.enqueue([m])
    synced(broker)
    s = connection.settings_dict
    other = psycopg.connect(
        host=s["HOST"] or "127.0.0.1", port=s["PORT"] or 5432, user=s["USER"], dbname=s["NAME"]
    )

    def blocked() -> bool:
        with connection.cursor() as cursor:  # outside ``other``'s transaction: fresh stats
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = %s",
                [s["NAME"]],
            )
            return bool(cursor.fetchone()[0])

    try:
        other.execute("BEGIN")
        other.execute("SELECT 1 FROM jobqueue_job WHERE id = %s FOR UPDATE", [m.id])
        broker.claim(["default"], "w", 1)  # a 'started' event for the locked row
        broker.tick()  # the upkeep thread starts, and blocks on the row
        wait_until(blocked, message="the upkeep thread to wait on the row lock")
        yield
    finally:
        other.rollback()
        other.close()
        connections.close_all()
    synced(broker)  # once the lock is gone, the event is recorded
    assert Job.objects.get(id=m.id).status == "started"


def test_close_returns_promptly_while_the_upkeep_thread_waits_on_a_locked_row(broker):
    took: list[float] = []

    def close() -> None:
        start = time.monotonic()
        broker.close()
        took.append(time.monotonic() - start)

    with upkeep_blocked_on_a_locked_row(broker):
        closer = threading.Thread(target=close)
        closer.start()
        closer.join(10)
        assert took and took[0] < 2.5  # its lock wait is bounded (1 s)
        assert broker.ready_to_fork()


def test_a_fork_waits_while_the_upkeep_thread_has_not_stopped(broker, monkeypatch):
    from jobqueue.brokers.redis import upkeep

    monkeypatch.setattr(upkeep, "STOP_WAIT", 0.1)  # shorter than its lock wait
    with upkeep_blocked_on_a_locked_row(broker):
        start = time.monotonic()
        broker.close()
        assert time.monotonic() - start < 0.5
        assert not broker.ready_to_fork()  # the supervisor postpones its fork
        broker.tick()  # no second thread meanwhile
        upkeeps = [t for t in threading.enumerate() if t.name == "jobqueue-redis-upkeep"]
        assert len(upkeeps) == 1

        def stopped() -> bool:
            broker.close()  # what the supervisor's next tick does
            return broker.ready_to_fork()

        wait_until(stopped, message="the thread to stop (its lock wait ends)")


def upkeep_waiting(broker: RedisBroker):
    """The broker's upkeep thread, once it waits on the events stream (caught up)."""
    broker.tick()
    thread = broker._upkeep
    wait_until(lambda: thread.waiting is not None, message="the thread to wait on the stream")
    return thread


def test_an_idle_upkeep_thread_records_a_new_event_at_once(broker, monkeypatch):
    from jobqueue.brokers.redis import upkeep

    monkeypatch.setattr(upkeep, "WAIT", 60.0)  # its fallback round would come far too late
    try:
        upkeep_waiting(broker)
        m = message(1, 2)
        broker.enqueue([m])
        wait_until(lambda: Job.objects.filter(id=m.id).exists(), timeout=10,
                   message="the new job's row, recorded by the woken thread")
        got = broker.claim(["default"], "w", 1)
        broker.finish("w", [done(got[0])])
        wait_until(lambda: Job.objects.get(id=m.id).status == "succeeded", timeout=10,
                   message="the outcome, recorded by the woken thread")
    finally:
        broker.close()


def test_a_stop_ends_the_upkeep_threads_wait_on_the_stream(broker, monkeypatch):
    from jobqueue.brokers.redis import upkeep

    monkeypatch.setattr(upkeep, "WAIT", 60.0)
    thread = upkeep_waiting(broker)
    start = time.monotonic()
    broker.close()
    assert time.monotonic() - start < 10  # not the 60 s of its wait
    assert not thread.is_alive()
    assert broker.ready_to_fork()


# -- a forged outcome, a stale entry, a purge under producers ------------------------------------
def test_a_forged_outcome_leaves_the_other_jobs_requeued(broker, redis_server, caplog):
    client = redis_server.client()
    ms = [message(i, i) for i in range(3)]
    broker.enqueue(ms)
    got = broker.claim(["default"], "w", 10)
    broker.finish("w", [done(m, JobStatus.FAILED, error="boom") for m in got])
    synced(broker)
    client.set(broker.key("r", ms[0].id), "1|not json")
    assert broker.requeue() == 2  # the forged one is left alone
    assert {m.id for m in broker.claim(["default"], "w", 10)} == {ms[1].id, ms[2].id}
    # ... and a producer asking about it is told what the table knows, logged.
    with caplog.at_level(logging.WARNING):
        assert broker.state(ms[0].id).status == "failed"
    assert "state=unreadable-outcome" in caplog.text
    client.set(broker.key("r", ms[1].id), '1|{"status": "succeeded", "ended_ms": ' + "9" * 20 + "}")
    assert broker.state(ms[1].id).status in ("queued", "started")


def test_a_canceled_waiting_job_s_entry_is_no_stray_once_its_outcome_expires(
    broker, redis_server, caplog
):
    m = message(1, 1)
    broker.enqueue([m])
    assert broker.cancel(m.id)
    redis_server.client().delete(broker.key("r", m.id))  # RESULT_TTL passes
    with caplog.at_level(logging.WARNING):
        assert broker.claim(["default"], "w", 10) == []
    assert "stray-entry" not in caplog.text


def test_a_purge_ends_while_producers_keep_sending(broker, redis_server, monkeypatch):
    from django.db import connections

    from jobqueue.brokers.redis import records

    monkeypatch.setattr(records, "PURGE_CHUNK", 1)  # producers outpace the purge
    client = redis_server.client()
    stop = threading.Event()

    def produce() -> None:
        while not stop.is_set():
            batch = [message(i, i) for i in range(20)]
            broker.push(batch, [codec.encode(m) for m in batch])

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        wait_until(lambda: client.llen(broker.key("q", "default", "0")) >= 100, message="a backlog")
        purged: list[int] = []

        def purge() -> None:
            try:
                purged.append(broker.purge_queue("default"))
            finally:
                connections.close_all()  # this thread's own

        purger = threading.Thread(target=purge)
        purger.start()
        purger.join(20)
        assert purged and purged[0] >= 100
    finally:
        stop.set()
        producer.join()


# -- Redis at maxmemory (noeviction): running work goes on, the stream is still trimmed ----------
def test_at_maxmemory_renewals_finishes_and_tracking_go_on_and_sends_go_to_the_outbox(
    volatile_redis,
):
    from jobqueue.models import Outbox

    prefix = f"oom{uuid4().hex[:6]}"
    with override_settings(JOBQUEUE={"BROKER": redis_broker_settings(volatile_redis.url, prefix)}):
        b = get_broker()
        ms = [message(i, i) for i in range(2)]
        b.enqueue(ms)
        claimed = b.claim(["default"], "w", 2)
        client = volatile_redis.client()
        client.set("ballast", "x" * 1_000_000)
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", client.info("memory")["used_memory"] - 100_000)
        with pytest.raises(BrokerError, match="maxmemory"):
            b.run("ENQUEUE", str(uuid4()), codec.encode(message(9, 9)), 0, 0)
        assert b.renew("w", [m.lease for m in claimed]) == set()
        assert b.finish("w", [done(claimed[0])]) == 1
        assert b.tracking.sync(budget=5) is True  # the tracker's lock is taken at maxmemory
        assert Job.objects.get(id=ms[0].id).status == "succeeded"
        assert client.xlen(b.key("events")) <= 1  # trimmed to what is recorded
        # Trimming freed memory: hold Redis at its limit again before the next send.
        client.config_set("maxmemory", client.info("memory")["used_memory"] - 100_000)
        late = message(3, 3)
        b.enqueue([late])  # refused by Redis: kept in the outbox
        assert Outbox.objects.filter(job_id=late.id).exists()
        b.close()
