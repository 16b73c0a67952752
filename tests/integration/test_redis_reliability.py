"""The Redis broker and the Job table under what goes wrong: bounded tracking, values the table
cannot hold, old or concurrent events, forged entries, strays, a Redis that stops answering or
loses its data, and operators racing the outbox. Real Redis servers, the real database."""

from __future__ import annotations

import logging
import os
import signal
import time
from datetime import timedelta
from uuid import UUID, uuid4

import pytest
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from jobqueue import signing
from jobqueue.brokers import get_broker
from jobqueue.brokers.base import Outcome
from jobqueue.brokers.redis import RedisBroker, codec, outbox
from jobqueue.message import Message, new_job_id
from jobqueue.models import Job, Outbox
from jobqueue.states import JobStatus
from tests.conftest import wait_until
from tests.redis_server import delete_prefix, redis_broker_settings
from tests.testapp.tasks import add

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.brokers("redis")]

ADD = "tests.testapp.tasks.add"


def message(*args, **options) -> Message:
    return Message(task=ADD, arguments=f'{{"args": {list(args)}, "kwargs": {{}}}}',
                   queue="default", **options)


def done(m: Message, status: JobStatus = JobStatus.SUCCEEDED, **fields) -> Outcome:
    now = timezone.now()
    return Outcome(m.id, status, now, now, token=m.token, **fields)


def synced(broker: RedisBroker) -> None:
    wait_until(lambda: broker.tracking.sync(budget=5), message="tracking to catch up")


# -- tracking: bounded, never losing events, never blocked by one ---------------------------------
def test_a_sync_stops_at_its_budget_and_keeps_what_it_has_not_recorded(broker, redis_server):
    add.map([(i, i) for i in range(6000)])  # 12 stream entries of 500 jobs
    events = broker.key("events")
    assert redis_server.client().xlen(events) == 12
    assert broker.tracking.sync(budget=0) is False  # one batch, then time is up
    recorded = Job.objects.count()
    assert 2000 <= recorded < 6000
    assert redis_server.client().xlen(events) >= 12 - recorded // 500  # only recorded: trimmed
    synced(broker)
    assert Job.objects.count() == 6000


def test_a_value_the_table_cannot_hold_is_recorded_with_the_reason_and_blocks_no_one(broker):
    bad = message(1, 1, max_retries=40000)
    long_name = Message(task="x" * 250, arguments='{"args": [], "kwargs": {}}', queue="default")
    good = message(2, 2)
    broker.enqueue([bad, long_name, good])
    synced(broker)
    assert Job.objects.get(id=good.id).status == "queued"
    row = Job.objects.get(id=bad.id)
    assert row.max_retries == 32767
    assert "untrackable: max_retries 40000 out of range" in row.error
    row = Job.objects.get(id=long_name.id)
    assert row.task == "x" * 200
    assert "task longer than 200 characters" in row.error
    # the jobs themselves are untouched in Redis
    assert {m.id for m in broker.claim(["default"], "w", 5)} == {bad.id, long_name.id, good.id}


def test_an_older_event_never_overwrites_a_newer_row(broker, redis_server):
    job = add.delay(1, 1)
    [m] = broker.claim(["default"], "w", 1)
    broker.finish("w", [done(m, result="2")])
    synced(broker)
    row = Job.objects.get(id=job.id)
    finished = row.version
    assert row.status == "succeeded" and finished > m.token
    client = redis_server.client()
    late = f"s|{job.id}:1:{m.token}|{int(time.time() * 1000)}|late"
    client.xadd(broker.key("events"), {"d": late})
    client.xadd(broker.key("events"), {"d": f"q|{job.id}|0|{m.token}"})
    synced(broker)
    row = Job.objects.get(id=job.id)
    assert (row.status, row.worker, row.version) == ("succeeded", "w", finished)


def test_the_tracker_lock_is_fenced(broker, redis_server):
    client = redis_server.client()
    add.delay(1, 1)
    client.set(broker.key("tracker"), "someone-else", px=60_000)
    assert broker.tracking.sync(budget=1) is False  # held by another: nothing folded
    assert not Job.objects.exists()
    assert client.get(broker.key("tracker")) == b"someone-else"  # and not freed by us
    assert broker.run("TRACK_COMMIT", "my-token", 1000, "99999999999999-0") == 0
    assert client.get(broker.key("tracked")) is None
    client.delete(broker.key("tracker"))
    synced(broker)
    assert Job.objects.count() == 1
    assert client.get(broker.key("tracker")) is None


# -- operators go through Redis -------------------------------------------------------------------
def test_requeue_checks_redis_and_clears_an_old_cancel_mark(broker):
    job = add.delay(1, 1)
    [m] = broker.claim(["default"], "w", 1)
    assert broker.cancel(job.id)
    assert broker.canceled([job.id]) == {job.id}
    assert broker.renew("w", [m.lease]) == {job.id}  # its supervisor stops the run
    assert broker.requeue([job.id]) == 1
    assert broker.requeue([job.id]) == 0  # live again in Redis: left alone
    [again] = broker.claim(["default"], "w2", 1)
    assert again.id == job.id and again.attempts == 1
    assert broker.canceled([job.id]) == set()  # not killed by the old mark
    assert broker.renew("w2", [again.lease]) == set()
    assert broker.finish("w", [done(m)]) == 0
    assert broker.finish("w2", [done(again, result="2")]) == 1
    synced(broker)
    row = Job.objects.get(id=job.id)
    assert (row.status, row.worker, row.attempts) == ("succeeded", "w2", 1)


def test_requeue_does_not_wipe_a_newer_outcome(broker):
    job = add.delay(1, 1)
    [m] = broker.claim(["default"], "w", 1)
    broker.finish("w", [done(m, JobStatus.FAILED, error="boom")])
    synced(broker)
    assert broker.requeue() == 1
    [m] = broker.claim(["default"], "w", 1)
    broker.finish("w", [done(m, result="2")])  # succeeded; the table does not know yet
    assert broker.requeue([job.id]) == 0
    synced(broker)
    assert Job.objects.get(id=job.id).status == "succeeded"


def test_cancel_answers_false_for_a_job_finished_but_not_yet_recorded(broker):
    job = add.delay(1, 1)
    [m] = broker.claim(["default"], "w", 1)
    broker.finish("w", [done(m, result="2")])
    assert not Job.objects.filter(id=job.id).exists()
    assert broker.cancel(job.id) is False
    synced(broker)
    assert Job.objects.get(id=job.id).status == "succeeded"


def test_purge_works_in_chunks_and_spares_other_queues(broker):
    broker.enqueue([Message(task=ADD, arguments="{}", queue="low") for _ in range(2500)])
    later = timezone.now() + timedelta(hours=1)
    broker.enqueue([Message(task=ADD, arguments="{}", queue="low", run_at=later)
                    for _ in range(1200)])
    kept = add.delay(1, 1)
    synced(broker)
    assert broker.purge_queue("low") == 3700
    assert broker.claim(["low"], "w", 10) == []
    assert not Job.objects.filter(queue="low").exists()
    assert Job.objects.get(id=kept.id).status == "queued"


# -- what Redis forges never runs -----------------------------------------------------------------
def test_a_forged_entry_never_becomes_a_runnable_job_even_through_requeue(broker, redis_server):
    client = redis_server.client()
    honest = message(1, 1)
    forged_body = codec.encode(honest)
    with override_settings(SECRET_KEY="attacker-" + "k" * 40):
        wrong_key = codec.encode(message(6, 6))
    forged_id = new_job_id()
    # a finish event of a job that never existed, with a body signed by another key
    client.xadd(broker.key("events"), {
        "d": f"f|{forged_id}|failed|1|w|9", "p": '{"status": "failed", "error": "x"}',
        "b": wrong_key,
    })
    # a genuine body replayed under another id
    replayed = new_job_id()
    client.xadd(broker.key("events"), {
        "d": f"f|{replayed}|failed|1|w|9", "p": '{"status": "failed", "error": "x"}',
        "b": forged_body,
    })
    synced(broker)
    for job_id in (forged_id, replayed):
        row = Job.objects.get(id=job_id)
        assert row.status == "failed"
        assert "failed signature verification" in row.error
        assert row.body == ""
    assert broker.requeue() == 0
    assert broker.claim(["default"], "w", 10) == []
    assert not signing.verify(f"{forged_id}|x", "0" * 32)


def test_the_stored_body_is_the_one_sent_and_requeue_sends_it_again(broker):
    job = add.delay(3, 4)
    [m] = broker.claim(["default"], "w", 1)
    sent = broker.client.hget(broker.key("ver"), job.id)
    assert sent is not None
    broker.finish("w", [done(m, JobStatus.FAILED, error="boom")])
    synced(broker)
    row = Job.objects.get(id=job.id)
    assert codec.verified(job.id, row.body)
    Job.objects.filter(id=job.id).update(arguments='{"args": [666], "kwargs": {}}')
    assert broker.requeue() == 1
    [again] = broker.claim(["default"], "w", 1)
    assert again.arguments == m.arguments  # the signed body, not the row's columns
    assert broker.client.hget(broker.key("msg"), job.id).decode() == row.body


# -- stray entries ---------------------------------------------------------------------------------
def test_stray_entries_never_stop_a_queue_and_are_logged(broker, redis_server, caplog):
    client = redis_server.client()
    queue = broker.key("q", "default", "0")
    client.rpush(queue, "junk")  # into an empty list: no level indexed for it
    client.rpush(queue, str(uuid4()))  # a bare id with no body
    client.rpush(queue, '{"task": "tests.testapp.tasks.add", "args": [1, 2]}')
    job = add.delay(1, 1)
    with caplog.at_level(logging.WARNING):
        [m] = broker.claim(["default"], "w", 5)
    assert m.id == job.id
    strays = [r.getMessage() for r in caplog.records if "state=stray-entry" in r.getMessage()]
    assert len(strays) == 3
    assert client.llen(broker.key("strays")) == 3


# -- bounded waits and the outbox -----------------------------------------------------------------
@pytest.mark.parametrize("through", ["url", "cache"])
def test_delay_gives_up_within_about_a_second_on_a_redis_that_does_not_answer(
    volatile_redis, through
):
    prefix = f"stop{uuid4().hex[:6]}"
    caches = {"jobs": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": volatile_redis.url}}
    options = {"url": volatile_redis.url} if through == "url" else {"cache": "jobs"}
    conf = {"BROKER": {"BACKEND": "jobqueue.brokers.redis.RedisBroker",
                       "OPTIONS": {**options, "prefix": prefix}}}
    with override_settings(CACHES=caches, JOBQUEUE=conf):
        broker = get_broker()
        assert add.delay(0, 0).status == "queued"  # connected
        os.kill(volatile_redis.process.pid, signal.SIGSTOP)
        try:
            began = time.monotonic()
            job = add.delay(1, 1)
            elapsed = time.monotonic() - began
        finally:
            os.kill(volatile_redis.process.pid, signal.SIGCONT)
        assert elapsed < 1.6
        assert Outbox.objects.filter(job_id=job.id).exists()
        Outbox.objects.update(created_at=timezone.now() - timedelta(minutes=1))
        wait_until(lambda: (broker.upkeep(5), not Outbox.objects.exists())[1],
                   message="the relay to deliver it")
        claimed = [m.id for m in broker.claim(["default"], "w", 5)]
        assert sorted(claimed) == sorted({claimed[0], job.id})  # each once
        assert job.id in claimed


def test_a_cancel_of_a_job_still_in_the_outbox_is_respected_by_the_relay(broker):
    m = message(1, 1)
    outbox.write([m], [codec.encode(m)])  # as while Redis was unreachable
    assert broker.cancel(m.id) is True
    assert outbox.deliver(broker, [m.id]) == 0
    Outbox.objects.create(job_id=m.id, created_at=timezone.now() - timedelta(minutes=1))
    assert outbox.relay(broker) == 0  # the cancel's outcome keeps it out
    assert broker.claim(["default"], "w", 5) == []
    synced(broker)
    assert Job.objects.get(id=m.id).status == "canceled"


@override_settings()
def test_an_unanswered_send_that_landed_is_not_sent_again_after_its_result_expired(redis_server):
    prefix = f"dedup{uuid4().hex[:6]}"
    conf = {"BROKER": redis_broker_settings(redis_server.url, prefix), "RESULT_TTL": 0}
    try:
        with override_settings(JOBQUEUE=conf):
            broker = get_broker()
            m = message(1, 1)
            body = codec.encode(m)
            broker.push([m], [body])  # it landed, but the reply was lost:
            with transaction.atomic():
                outbox.write([m], [body])  # so it went to the outbox too
            [claimed] = broker.claim(["default"], "w", 1)
            broker.finish("w", [done(claimed, result="2")])
            wait_until(lambda: not broker.client.exists(broker.key("r", m.id)),
                       message="the result to expire")
            Outbox.objects.update(created_at=timezone.now() - timedelta(minutes=1))
            broker.upkeep(5)
            assert not Outbox.objects.exists()
            assert broker.claim(["default"], "w", 1) == []
            assert Job.objects.get(id=m.id).status == "succeeded"
    finally:
        delete_prefix(redis_server, prefix)


# -- reconciliation after Redis lost its data -----------------------------------------------------
def test_jobs_redis_lost_are_sent_again_once_from_their_signed_bodies(volatile_redis, caplog):
    prefix = f"lost{uuid4().hex[:6]}"
    with override_settings(JOBQUEUE={"BROKER": redis_broker_settings(volatile_redis.url, prefix)}):
        broker = get_broker()
        jobs = add.map([(i, i) for i in range(1000)])
        later = add.apply_async((0, 0), countdown=3600)
        [running] = broker.claim(["default"], "w", 1)
        synced(broker)
        volatile_redis.restart()  # no persistence: everything is gone
        broker.close()
        with caplog.at_level(logging.WARNING):
            wait_until(lambda: (broker.upkeep(5), Job.objects.filter(resent=1).count() == 1001)[1],
                       message="the lost jobs to be sent again")
        assert len([r for r in caplog.records
                    if "state=resent-after-broker-loss" in r.getMessage()]) == 1001
        for _ in range(3):
            broker.reconciler.next_sweep = 0
            broker.upkeep(5)  # later sweeps find them in Redis: nothing sent twice
        assert not Job.objects.filter(resent__gt=1).exists()
        assert broker.state(later.id).status == "scheduled"
        claimed = broker.claim(["default"], "w", 2000)
        assert sorted(m.id for m in claimed) == sorted(j.id for j in jobs)
        again = next(m for m in claimed if m.id == running.id)
        assert again.attempts == 2  # the run it had may have happened


def test_a_bare_id_queued_before_versions_is_still_claimed(broker, redis_server):
    """Jobs left in Redis by a release without versions run after the upgrade."""
    m = message(1, 1)
    client = redis_server.client()
    client.hset(broker.key("msg"), m.id, codec.encode(m))
    client.rpush(broker.key("q", "default", "0"), m.id)
    client.zadd(broker.key("levels", "default"), {"0": 0})
    [claimed] = broker.claim(["default"], "w", 5)
    assert claimed.id == m.id and claimed.token > 1
    assert broker.finish("w", [done(claimed, result="2")]) == 1


def test_an_outcome_the_database_cannot_store_as_is_is_still_recorded(broker):
    job = add.delay(1, 1)
    other = add.delay(2, 2)
    claimed = broker.claim(["default"], "w", 2)
    broker.finish("w", [done(claimed[0], JobStatus.FAILED, error="ValueError: a\x00b"),
                        done(claimed[1], result="4")])
    synced(broker)
    row = Job.objects.get(id=job.id)
    assert row.status == "failed"
    assert "a\\x00b" in row.error and "untrackable: NUL character in error" in row.error
    assert Job.objects.get(id=other.id).status == "succeeded"


def test_a_row_the_database_refuses_is_logged_and_skipped_and_blocks_no_one(broker, caplog):
    from jobqueue.brokers.redis import table

    job, other = add.delay(1, 1), add.delay(2, 2)
    claimed = broker.claim(["default"], "w", 2)
    broker.finish("w", [done(claimed[0], JobStatus.FAILED, error="ValueError: a\x00b"),
                        done(claimed[1], result="4")])
    fit = table.fit
    table.fit = lambda job_id, columns: columns  # as if a value got past the checks
    try:
        with caplog.at_level(logging.WARNING):
            synced(broker)
    finally:
        table.fit = fit
    assert Job.objects.get(id=other.id).status == "succeeded"
    if Job.objects.filter(id=job.id).exists():  # SQLite stores NUL; PostgreSQL refuses it
        assert Job.objects.get(id=job.id).status == "failed"
    else:
        assert any(f"job={job.id} state=untrackable" in r.getMessage() for r in caplog.records)


def test_events_wait_in_the_stream_while_the_table_cannot_be_written(broker, redis_server):
    from django.db import DatabaseError, connection

    jobs = add.map([(i, i) for i in range(10)])
    client = redis_server.client()
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE jobqueue_job RENAME TO jobqueue_job_away")
    try:
        with pytest.raises(DatabaseError):
            broker.tracking.sync(budget=1)
        [m] = broker.claim(["default"], "w", 1)
        broker.finish("w", [done(m, result="2")])
        assert client.xlen(broker.key("events")) == 3  # nothing trimmed: nothing recorded
        assert client.get(broker.key("tracker")) is None  # and the lock was freed
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE jobqueue_job_away RENAME TO jobqueue_job")
    synced(broker)
    statuses = dict(Job.objects.values_list("id", "status"))
    assert len(statuses) == 10
    assert statuses[UUID(jobs[0].id)] == "succeeded"


def test_an_outcome_kept_before_versions_is_still_read(broker, redis_server):
    job_id = new_job_id()
    outcome = '{"status": "succeeded", "result": "5", "ended_at": "2026-01-01T00:00:00+00:00"}'
    redis_server.client().set(broker.key("r", job_id), outcome)
    assert broker.state(job_id).status == "succeeded"
