"""What only the Redis broker does (the shared contract: test_broker_contract.py)."""

import os
import time
from uuid import uuid4

import pytest
from django.contrib.auth.models import User
from django.core.checks import run_checks
from django.test import override_settings
from django.utils import timezone

from jobqueue import signing
from jobqueue.brokers import get_broker
from jobqueue.brokers.base import Outcome
from jobqueue.brokers.redis import RedisBroker
from jobqueue.exceptions import ConfigurationError
from jobqueue.models import Job
from jobqueue.states import JobStatus
from tests.redis_server import delete_prefix, redis_broker_settings, require_redis_broker
from tests.testapp.tasks import add

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _redis_available():
    require_redis_broker()


def test_options_must_name_a_server():
    with pytest.raises(ConfigurationError, match="needs OPTIONS"):
        RedisBroker()
    with pytest.raises(ConfigurationError, match="bare"):
        RedisBroker(url="redis://127.0.0.1:1/0", prefix="{x}")


def test_a_django_redis_cache_can_name_the_server(redis_server):
    caches = {"jobs": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": redis_server.url}}
    broker_settings = {"BACKEND": "jobqueue.brokers.redis.RedisBroker",
                       "OPTIONS": {"cache": "jobs", "prefix": "cachetest"}}
    with override_settings(CACHES=caches, JOBQUEUE={"BROKER": broker_settings}):
        broker = get_broker()
        job = add.delay(2, 3)
        [message] = broker.claim(["default"], "w", 5)
        assert message.id == job.id
        assert redis_server.client().hexists("{cachetest}:msg", job.id)
        assert broker.release("w", [message.lease]) == 1


def test_signatures_made_with_a_retired_key_still_verify():
    with override_settings(SECRET_KEY="old-key-" + "x" * 40):
        signature = signing.sign("payload")
    with override_settings(SECRET_KEY="new-key-" + "y" * 40,
                           SECRET_KEY_FALLBACKS=["old-key-" + "x" * 40]):
        assert signing.verify("payload", signature)
        assert not signing.verify("payload altered", signature)
    with override_settings(SECRET_KEY="new-key-" + "y" * 40, SECRET_KEY_FALLBACKS=[]):
        assert not signing.verify("payload", signature)


def test_check_deploy_warns_when_redis_keeps_nothing_on_disk(redis_server, durable_redis):
    with override_settings(JOBQUEUE={"BROKER": redis_broker_settings(redis_server.url, "c1")}):
        ids = [m.id for m in run_checks(include_deployment_checks=True)]
        assert "jobqueue.W001" in ids
    with override_settings(JOBQUEUE={"BROKER": redis_broker_settings(durable_redis.url, "c2")}):
        assert "jobqueue.W001" not in [m.id for m in run_checks(include_deployment_checks=True)]
        durable_redis.client().config_set("maxmemory-policy", "allkeys-lru")
        [warning] = [m for m in run_checks(include_deployment_checks=True)
                     if m.id == "jobqueue.W001"]
        assert "noeviction" in warning.msg


def test_the_admin_list_shows_jobs_not_yet_tracked(redis_server, client):
    with override_settings(JOBQUEUE={"BROKER": redis_broker_settings(redis_server.url, "adm")}):
        job = add.delay(1, 1)
        assert not Job.objects.filter(id=job.id).exists()  # recorded in the background
        client.force_login(User.objects.create_superuser("admin", "a@example.com", "pw"))
        page = client.get("/admin/jobqueue/job/").content.decode()
        assert job.id in page


def test_a_worker_waiting_after_redis_lost_its_scripts_claims_once_reloaded(redis_server):
    with override_settings(JOBQUEUE={"BROKER": redis_broker_settings(redis_server.url, "nos")}):
        broker = get_broker()
        job = add.delay(1, 1)
        redis_server.client().script_flush()
        assert broker.wait_and_claim(["default"], "w", 5, timeout=0.1) == []
        [message] = broker.wait_and_claim(["default"], "w", 5, timeout=0.1)
        assert message.id == job.id


# -- the interface: fencing tokens, lost runs, queue order ---------------------------------------
@pytest.fixture
def broker(redis_server):
    prefix = f"iface{uuid4().hex[:8]}"
    conf = {"BROKER": redis_broker_settings(redis_server.url, prefix), "LEASE_TIMEOUT": 30}
    try:
        with override_settings(JOBQUEUE=conf):
            yield get_broker()
    finally:
        delete_prefix(redis_server, prefix)


def outcome(message, status=JobStatus.SUCCEEDED, **fields):
    now = timezone.now()
    return Outcome(message.id, status, now, now, token=message.token, **fields)


def test_each_change_raises_the_version_and_a_claim_returns_it_as_token(broker, redis_server):
    client = redis_server.client()
    seconds, micros = client.time()
    job = add.delay(1, 1)
    versions = f"{broker.prefix}:ver"
    sent = int(client.hget(versions, job.id))
    assert sent >= seconds * 1_000_000 + micros  # never below Redis's clock in microseconds
    [first] = broker.claim(["default"], "w", 1)
    assert first.token == int(client.hget(versions, job.id)) > sent
    assert broker.release("w", [first.lease]) == 1
    released = int(client.hget(versions, job.id))
    assert released > first.token
    [second] = broker.claim(["default"], "w", 1)
    assert second.token > released
    assert second.attempts == 1  # the unrun claim's attempt was given back


def test_stale_tokens_are_refused_by_finish_release_and_renew(broker):
    job = add.delay(1, 1)
    [first] = broker.claim(["default"], "w", 1)
    assert broker.release("w", [first.lease], lost="signal 9") == 1  # back of the queue
    [second] = broker.claim(["default"], "w2", 1)
    assert second.token > first.token
    assert broker.finish("w", [outcome(first)]) == 0
    assert broker.release("w", [first.lease]) == 0
    assert broker.renew("w", [first.lease, second.lease]) == {job.id}
    assert broker.renew("w2", [second.lease]) == set()
    assert broker.finish("w2", [outcome(second)]) == 1
    assert broker.finish("w2", [outcome(second)]) == 0  # idempotent
    assert broker.state(job.id).status == "succeeded"


def test_a_job_whose_process_keeps_dying_fails_after_max_retries_plus_one_runs(broker):
    job = add.delay(1, 1)  # max_retries=0: the first loss still gets another try
    [first] = broker.claim(["default"], "w", 1)
    assert broker.release("w", [first.lease], lost="exit code 3") == 1
    assert broker.state(job.id).status == "queued"
    [second] = broker.claim(["default"], "w", 1)
    assert second.attempts == 2
    assert broker.release("w", [second.lease], lost="signal 9") == 1
    state = broker.state(job.id)
    assert state.status == "failed"
    assert state.error.startswith("WorkerLost: its worker process died (signal 9)")
    broker.sync()
    row = Job.objects.get(id=job.id)
    assert (row.status, row.attempts) == ("failed", 2)
    assert row.error.startswith("WorkerLost")


@override_settings()
def test_recover_handles_expired_leases_as_lost_runs(redis_server):
    prefix = f"recov{uuid4().hex[:8]}"
    conf = {"BROKER": redis_broker_settings(redis_server.url, prefix), "LEASE_TIMEOUT": 0.2}
    try:
        with override_settings(JOBQUEUE=conf):
            broker = get_broker()
            kept, lost = add.delay(1, 1), add.delay(2, 2)
            held, dropped = broker.claim(["default"], "w", 2)
            assert (held.id, dropped.id) == (kept.id, lost.id)
            deadline = time.monotonic() + 5
            while broker.recover() == 0:
                broker.renew("w", [held.lease])
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert broker.state(lost.id).status == "queued"
            assert broker.state(kept.id).status == "started"
            assert broker.renew("w", [dropped.lease]) == {lost.id}
            [again] = broker.claim(["default"], "w", 1)
            assert (again.id, again.attempts) == (lost.id, 2)
            assert broker.release("w", [again.lease], lost=LOST) == 1
            assert "its worker stopped renewing its lease" in broker.state(lost.id).error
    finally:
        delete_prefix(redis_server, prefix)


LOST = "its worker stopped renewing its lease"


def test_queue_order_unrun_to_the_front_lost_and_retried_to_the_back(broker):
    a, b, c = (add.delay(i, i) for i in range(3))
    [first] = broker.claim(["default"], "w", 1)
    assert first.id == a.id
    broker.release("w", [first.lease])  # never ran: keeps its place
    [again] = broker.claim(["default"], "w", 1)
    assert again.id == a.id
    broker.release("w", [again.lease], lost="signal 9")  # lost: the back
    retried = add.delay(3, 3)
    [m_b] = broker.claim(["default"], "w", 1)
    broker.finish("w", [outcome(m_b, JobStatus.SCHEDULED, run_at=timezone.now())])  # due now
    order = [m.id for m in broker.claim(["default"], "w", 10)]
    assert order == [c.id, a.id, retried.id, b.id]


def test_a_claim_retried_after_a_lost_reply_gets_the_same_jobs(broker, redis_server):
    jobs = add.map([(i, i) for i in range(3)])
    args = broker.claim_args(["default"], "w", 2)
    first = broker.leased(broker.run("CLAIM", *args))
    again = broker.leased(broker.run("CLAIM", *args))
    assert [(m.id, m.token) for m in first] == [(m.id, m.token) for m in again]
    assert [m.id for m in first] == [j.id for j in jobs[:2]]
    assert [m.id for m in broker.claim(["default"], "w", 5)] == [jobs[2].id]


def test_an_enqueue_sent_twice_queues_the_job_once(broker):
    from jobqueue.message import Message

    message = Message(task="tests.testapp.tasks.add", arguments='{"args":[1,1],"kwargs":{}}',
                      queue="default")
    broker.enqueue([message])
    broker.enqueue([message])
    assert [m.id for m in broker.claim(["default"], "w", 5)] == [message.id]


# -- the transport's own connections -------------------------------------------------------------
@pytest.fixture
def transport(redis_server):
    prefix = f"tr{uuid4().hex[:8]}"
    try:
        conf = {"BROKER": redis_broker_settings(redis_server.url, prefix)}
        with override_settings(JOBQUEUE=conf):
            yield get_broker().transport
    finally:
        delete_prefix(redis_server, prefix)


def test_an_exchange_cut_before_its_reply_never_answers_the_next_command(transport):
    """A script whose reply was not read (interrupted) must not leave that reply on the
    connection for the next script to take as its own."""
    transport.run("LOCK", "a", "token-a", 60_000)
    with transport.connection() as conn:
        pass
    real = conn.read_response
    conn.read_response = lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt())
    try:
        with pytest.raises(KeyboardInterrupt):
            transport.run("UNLOCK", "a", "not-the-token")  # its reply: 0, never read
    finally:
        conn.read_response = real
    assert transport.run("UNLOCK", "a", "token-a") == 1  # not the 0 left over
    assert transport.run("LOCK", "a", "token-b", 60_000) == 1


def test_a_forked_child_uses_connections_of_its_own(transport):
    """A child must never share its parent's socket (their replies would mix)."""
    assert transport.run("LOCK", "p", "parent", 60_000) == 1
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            with transport.connection() as conn:
                child_conn = conn
            ok = transport.run("LOCK", "c", "child", 60_000) == 1
            code = 0 if ok and child_conn.pid == os.getpid() else 2
        finally:
            os.write(write, str(code).encode())
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 10) == b"0"
    assert transport.run("UNLOCK", "p", "parent") == 1  # the parent's connection still works
    assert transport.run("UNLOCK", "c", "child") == 1


def test_close_drops_the_idle_connections_and_the_next_call_reconnects(transport, redis_server):
    transport.run("LOCK", "x", "t", 60_000)
    with transport.connection() as before:
        assert before._sock is not None
    transport.close()
    assert before._sock is None
    with transport.connection() as after:
        assert after is not before
    assert transport.run("UNLOCK", "x", "t") == 1


def test_a_send_after_redis_lost_its_scripts_loads_them_again(redis_server):
    with override_settings(JOBQUEUE={"BROKER": redis_broker_settings(redis_server.url, "nos2")}):
        broker = get_broker()
        add.delay(1, 1)
        redis_server.client().script_flush()
        job = add.delay(2, 2)
        assert [m.id for m in broker.claim(["default"], "w", 5)][1] == job.id


# -- an idle worker's wait ------------------------------------------------------------------------
def spied_consumer(broker, calls):
    import multiprocessing

    from jobqueue.consumer import Consumer
    from jobqueue.slot import Slot

    claim, wait_and_claim = broker.claim, broker.wait_and_claim

    def spy_claim(*args, **kwargs):
        calls.append("claim")
        return claim(*args, **kwargs)

    def spy_wait(*args, **kwargs):
        calls.append("wait")
        return wait_and_claim(*args, **kwargs)

    broker.claim, broker.wait_and_claim = spy_claim, spy_wait
    context = multiprocessing.get_context("fork")
    return Consumer(broker, ["default"], "w", Slot(context, 16), context.RawValue("b", 0))


def test_a_worker_whose_claim_emptied_the_queue_waits_without_claiming_and_wakes_for_a_send(
    redis_server,
):
    with override_settings(JOBQUEUE={"BROKER": redis_broker_settings(redis_server.url, "idle")}):
        calls = []
        consumer = spied_consumer(get_broker(), calls)
        consumer.batch_size = 4
        first = add.delay(1, 1)
        consumer.step()  # a first step claims: jobs may be queued with no wake of their own
        assert calls == ["claim"]
        assert first.get(timeout=5) == 2
        redis_server.client().delete("{idle}:wake:default")  # the first job's wake, unused
        second = add.delay(2, 2)  # sent while the worker is between steps
        calls.clear()
        began = time.monotonic()
        consumer.step()
        assert calls == ["wait"]  # one claim found the queue empty: no second one first
        assert time.monotonic() - began < 0.9  # woken by the send, not by the wait's 1 s timeout
        assert second.get(timeout=5) == 4


def test_a_worker_whose_claim_was_full_claims_again_before_waiting(redis_server):
    """A full batch may have left jobs in the queue that no wake token stands for."""
    with override_settings(JOBQUEUE={"BROKER": redis_broker_settings(redis_server.url, "full")}):
        calls = []
        consumer = spied_consumer(get_broker(), calls)
        consumer.batch_size = 1
        jobs = [add.delay(i, i) for i in range(20)]  # past 16 queued: the last have no wake
        redis_server.client().delete("{full}:wake:default")
        consumer.step()
        consumer.batch_size = 1
        calls.clear()
        consumer.step()
        assert calls == ["claim"]
        assert [j.get(timeout=5) for j in jobs[:2]] == [0, 2]


def test_a_connection_the_server_closed_while_idle_is_replaced_before_a_send(
    redis_server, monkeypatch
):
    """Redis drops idle clients (its ``timeout``) or restarts: a send after a quiet spell must
    reach Redis, not fail on the dead socket and fall back to the outbox."""
    from jobqueue.brokers.redis import client as transport_module
    from jobqueue.models import Outbox

    with override_settings(JOBQUEUE={"BROKER": redis_broker_settings(redis_server.url, "idle2")}):
        transport = get_broker().transport
        add.delay(1, 1)
        with transport.connection() as conn:
            host, port = conn._sock.getsockname()[:2]
        redis_server.client().client_kill(f"{host}:{port}")
        monkeypatch.setattr(transport_module, "STALE_AFTER", 0.0)  # it has been idle long enough
        job = add.delay(2, 2)
        assert redis_server.client().hexists("{idle2}:msg", job.id)
        assert not Outbox.objects.exists()
