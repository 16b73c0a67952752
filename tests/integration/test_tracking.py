"""The Job table as the Redis broker's tracking writes it, batch by batch, on the real database."""

import json
from collections.abc import Iterator
from datetime import timedelta
from uuid import uuid4

import pytest
from django.db import transaction
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test

from jobqueue.brokers import Broker, get_broker
from jobqueue.brokers.base import Outcome
from jobqueue.message import Message
from jobqueue.models import Job
from jobqueue.states import JobStatus
from tests.redis_server import delete_prefix, redis_broker_settings, require_redis_broker
from tests.testapp.tasks import add

pytestmark = pytest.mark.django_db(transaction=True)

AWKWARD = "tab\there, a\\backslash,\nnew line, \\N, \r, é, |pipe|"


def redis_broker(server, tracking: bool) -> Iterator[Broker]:
    require_redis_broker()
    prefix = f"track{uuid4().hex[:8]}"
    conf = {"BROKER": redis_broker_settings(server.url, prefix), "TRACKING": tracking}
    try:
        with override_settings(JOBQUEUE=conf):
            yield get_broker()
    finally:
        delete_prefix(server, prefix)


@pytest.fixture
def tracked(redis_server) -> Iterator[Broker]:
    yield from redis_broker(redis_server, tracking=True)


@pytest.fixture
def untracked(redis_server) -> Iterator[Broker]:
    yield from redis_broker(redis_server, tracking=False)


def row(broker: Broker, job_id: str) -> Job:
    broker.sync()
    return Job.objects.get(id=job_id)


def finish(broker: Broker, message, status: JobStatus, started_at=None, **fields) -> int:
    now = timezone.now()
    outcome = Outcome(message.id, status, started_at or now, now, token=message.token, **fields)
    return broker.finish("w", [outcome])


def test_each_sync_records_the_state_reached(tracked):
    job = add.apply_async((AWKWARD, 1), priority=7)
    queued = row(tracked, job.id)
    assert (queued.status, queued.task, queued.priority) == ("queued", "tests.testapp.tasks.add", 7)
    assert json.loads(queued.arguments)["args"] == [AWKWARD, 1]

    [message] = tracked.claim(["default"], "w", 1)
    assert message.id == job.id
    started = row(tracked, job.id)
    assert (started.status, started.worker, started.attempts) == ("started", "w", 1)
    assert started.started_at is not None

    finish(tracked, message, JobStatus.SUCCEEDED, started_at=started.started_at, result='"ok"')
    done = row(tracked, job.id)
    assert (done.status, done.result, done.worker, done.attempts) == ("succeeded", '"ok"', "w", 1)
    assert done.started_at == started.started_at
    assert done.ended_at >= done.started_at
    assert done.arguments == queued.arguments


def test_jobs_sent_or_claimed_together_share_one_event(tracked, redis_server):
    events = f"{tracked.prefix}:events"
    jobs = add.map([(i, i) for i in range(5)])
    later = add.apply_async((9, 9), countdown=60)
    assert redis_server.client().xlen(events) == 2
    tracked.sync()
    table = {str(job.id): job.status for job in Job.objects.all()}
    assert table == {**{job.id: "queued" for job in jobs}, later.id: "scheduled"}
    before = redis_server.client().xlen(events)
    assert len(tracked.claim(["default"], "w", 3)) == 3
    assert redis_server.client().xlen(events) == before + 1
    tracked.sync()
    started = Job.objects.filter(status="started")
    assert {str(job.id) for job in started} == {job.id for job in jobs[:3]}
    assert {(job.worker, job.attempts) for job in started} == {("w", 1)}


def test_a_job_finished_before_any_sync_is_recorded_whole(tracked):
    job = add.apply_async((AWKWARD, 2), queue="low")
    [message] = tracked.claim(["low"], "w", 1)
    finish(tracked, message, JobStatus.FAILED, error="ValueError: " + AWKWARD, traceback=AWKWARD)
    failed = row(tracked, job.id)
    assert (failed.status, failed.queue, failed.attempts) == ("failed", "low", 1)
    assert (failed.error, failed.traceback) == ("ValueError: " + AWKWARD, AWKWARD)
    assert json.loads(failed.arguments)["args"] == [AWKWARD, 2]
    assert failed.enqueued_at <= failed.started_at <= failed.ended_at


def test_a_retry_is_recorded_scheduled_then_queued_again(tracked):
    job = add.delay(1, 1)
    [message] = tracked.claim(["default"], "w", 1)
    later = timezone.now() + timedelta(hours=1)
    finish(tracked, message, JobStatus.SCHEDULED, error="boom", run_at=later)
    retry = row(tracked, job.id)
    assert (retry.status, retry.error, retry.run_at) == ("scheduled", "boom", later)
    assert tracked.release("w", [message.lease]) == 0  # the worker holds it no more
    assert finish(tracked, message, JobStatus.SUCCEEDED) == 0  # a late finish: refused
    assert row(tracked, job.id).status == "scheduled"


def test_a_canceled_running_job_keeps_its_worker_and_start(tracked):
    job = add.delay(1, 1)
    tracked.claim(["default"], "w", 1)
    started = row(tracked, job.id)
    assert job.cancel()
    canceled = row(tracked, job.id)
    assert (canceled.status, canceled.worker) == ("canceled", "w")
    assert canceled.started_at == started.started_at
    assert canceled.ended_at is not None


def test_a_job_canceled_before_any_sync_is_recorded(tracked):
    job = add.delay(1, 1)
    assert job.cancel()
    canceled = row(tracked, job.id)
    assert (canceled.status, canceled.task) == ("canceled", "tests.testapp.tasks.add")


def test_a_malformed_event_is_skipped_and_the_rest_recorded(tracked, redis_server):
    good = add.delay(1, 1)
    client = redis_server.client()
    events = f"{tracked.prefix}:events"
    client.xadd(events, {"d": "s|not-a-uuid|1|0|w"})
    client.xadd(events, {"d": "z|" + str(uuid4())})
    client.xadd(events, {"x": "no d at all"})
    client.xadd(events, {"d": f"f|{uuid4()}|succeeded|1|w", "p": "not json", "b": "1|x"})
    later = add.delay(2, 2)
    tracked.sync()
    assert Job.objects.filter(id__in=[good.id, later.id]).count() == 2
    assert client.xlen(events) <= 1  # folded and trimmed


def test_untracked_jobs_run_and_report_but_leave_no_row(untracked, redis_server):
    job = add.delay(2, 3)
    with transaction.atomic():
        in_transaction = add.delay(4, 5)  # the outbox holds its row until delivery
    [first, second] = untracked.claim(["default"], "w", 2)
    finish(untracked, first, JobStatus.SUCCEEDED, result="5")
    finish(untracked, second, JobStatus.SUCCEEDED, result="9")
    assert job.get(timeout=1) == 5
    assert in_transaction.get(timeout=1) == 9
    untracked.sync()
    assert not Job.objects.exists()
    assert not redis_server.client().exists(f"{untracked.prefix}:events")


# -- convergence: any interleaving, then a final sync: the table says what Redis knows -----------
class TrackingMachine(RuleBasedStateMachine):
    """Random interleavings of every broker change, with syncs of one batch in between and
    finishes and releases carrying stale tokens; after a final sync each job's row has the
    status, version and attempts Redis has (and no row exists for what Redis forgot)."""

    server = None  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.prefix = f"model{uuid4().hex[:8]}"  # each example starts from an empty Redis
        conf = {"BROKER": redis_broker_settings(self.server.url, self.prefix)}
        self.settings = override_settings(JOBQUEUE=conf)
        self.settings.enable()
        self.broker = get_broker()
        self.jobs: list[str] = []
        self.claims: list[Message] = []  # every claim made, current or stale

    @rule(n=st.integers(1, 3))
    def send(self, n):
        self.jobs += [j.id for j in add.map([(i, i) for i in range(n)])]

    @rule(limit=st.integers(1, 3))
    def claim(self, limit):
        self.claims += self.broker.claim(["default"], "w", limit)

    @precondition(lambda self: self.claims)
    @rule(data=st.data(), status=st.sampled_from(["succeeded", "failed", "retry"]))
    def finish(self, data, status):
        m = data.draw(st.sampled_from(self.claims))
        now = timezone.now()
        if status == "retry":
            due = now - timedelta(seconds=1)  # due at once, whatever the clocks' ms say
            outcome = Outcome(m.id, JobStatus.SCHEDULED, now, now, error="retry", run_at=due,
                              token=m.token)
        else:
            outcome = Outcome(m.id, JobStatus(status), now, now, result="1", token=m.token)
        self.broker.finish("w", [outcome])

    @precondition(lambda self: self.claims)
    @rule(data=st.data(), lost=st.sampled_from(["", "signal 9"]))
    def release(self, data, lost):
        m = data.draw(st.sampled_from(self.claims))
        self.broker.release("w", [m.lease], lost=lost)

    @precondition(lambda self: self.claims)
    @rule(data=st.data())
    def lease_expires(self, data):
        m = data.draw(st.sampled_from(self.claims))
        self.broker.client.zadd(self.broker.key("running"), {m.id: 0}, xx=True)
        self.broker.recover()

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def cancel(self, data):
        self.broker.cancel(data.draw(st.sampled_from(self.jobs)))

    @rule()
    def requeue(self):
        self.broker.requeue(self.jobs)  # the table holds earlier examples' jobs too

    @rule()
    def purge(self):
        self.broker.purge_queue("default")

    @rule()
    def sync_one_batch(self):
        self.broker.tracking.sync(budget=0)

    def teardown(self) -> None:
        try:
            self.check()
        finally:
            self.settings.disable()
            delete_prefix(self.server, self.prefix)

    def check(self) -> None:
        assert self.broker.tracking.sync(budget=30)
        client, key = self.broker.client, self.broker.key
        rows = {str(r.id): r for r in Job.objects.filter(id__in=self.jobs)}
        for job_id in self.jobs:
            ended = client.get(key("r", job_id))
            version = client.hget(key("ver"), job_id)
            if ended is not None:
                version = int(ended.split(b"|", 1)[0])
            if version is None:
                assert job_id not in rows, f"{job_id}: a row for a job Redis forgot"
                continue
            row = rows[job_id]
            state = self.broker.state(job_id)
            assert (row.status, row.version) == (state.status, int(version)), job_id
            if ended is None:
                attempts = int(client.hget(key("attempts"), job_id) or 0)
                assert row.attempts == attempts, job_id


def test_the_table_converges_to_what_redis_knows(redis_server):
    require_redis_broker()
    TrackingMachine.server = redis_server
    run_state_machine_as_test(
        TrackingMachine,
        settings=settings(max_examples=40, stateful_step_count=40, deadline=None,
                          suppress_health_check=list(HealthCheck)),
    )


def test_the_limits_tracking_enforces_are_the_columns_own():
    from jobqueue.brokers.redis.tracking import LIMITS

    for name, limit in LIMITS.items():
        field = Job._meta.get_field(name)
        if len(limit) == 1:
            assert field.max_length == limit[0], name
        else:
            ranges = {"SmallIntegerField": (-32768, 32767),
                      "PositiveSmallIntegerField": (0, 32767),
                      "PositiveIntegerField": (0, 2**31 - 1)}
            assert ranges[field.get_internal_type()] == limit, name
