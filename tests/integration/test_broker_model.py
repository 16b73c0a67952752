"""The broker contract as a state machine: hypothesis runs random interleavings of what
producers, workers, supervisors and operators do (enqueue, claim, finish, release unrun or lost,
renew with fresh and stale tokens, recover expired leases, cancel, requeue, a child crash) and,
after every step, compares the broker with a model a few lines long: every job in exactly one
state, nothing finished twice, nothing lost, ``attempts`` equal to the runs that may have
happened. A failure prints the steps and the seed to reproduce it (``print_blob``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from jobqueue.brokers import Broker, get_broker
from jobqueue.brokers.base import Outcome
from jobqueue.conf import DEFAULT_BROKER
from jobqueue.message import Message
from jobqueue.models import Job
from jobqueue.states import JobStatus
from tests.redis_server import delete_prefix, redis_broker_settings, require_redis_broker
from tests.testapp.tasks import add, flaky

LEASE = 0.1  # seconds: short, so that recovering expired leases is cheap to reach

RUNS = hypothesis_settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(params=["database", "redis"])
def broker_and_reset(
    request: pytest.FixtureRequest, transactional_db: None
) -> Iterator[tuple[Broker, Callable[[], None]]]:
    """The broker under test, and how to empty it between examples."""
    keys: dict[str, Any] = {"LEASE_TIMEOUT": LEASE}
    prefix = f"model{uuid4().hex[:8]}"
    server = None
    if request.param == "redis":
        require_redis_broker()
        server = request.getfixturevalue("redis_server")
        keys["BROKER"] = redis_broker_settings(server.url, prefix)
    else:
        keys["BROKER"] = {"BACKEND": DEFAULT_BROKER}

    def reset() -> None:
        if server is not None:
            delete_prefix(server, prefix)
        Job.objects.all().delete()

    try:
        with override_settings(JOBQUEUE={**settings.JOBQUEUE, **keys}):
            yield get_broker(), reset
    finally:
        if server is not None:
            delete_prefix(server, prefix)


@dataclass
class Model:
    """What the contract says one job's state is."""

    max_retries: int
    state: str = "queued"
    attempts: int = 0  # runs that may have happened since it was (re)queued by an operator
    token: int | None = None  # the token of its live lease, if started
    finished: int = 0  # times a finish was taken: never more than once per requeue
    leased_at: float = 0.0  # time.monotonic() of its last claim or renewal


class BrokerMachine(RuleBasedStateMachine):
    broker: Broker
    reset: Callable[[], None]

    def __init__(self) -> None:
        super().__init__()
        self.reset()
        self.jobs: dict[str, Model] = {}
        self.held: list[Message] = []  # every message claimed, current or stale

    # -- producers and operators -----------------------------------------------------------------
    @rule(n=st.integers(1, 3), retries=st.sampled_from([0, 2]))
    def enqueue(self, n: int, retries: int) -> None:
        task = add if retries == 0 else flaky
        for result in task.map([(1, 1)] * n):
            self.jobs[result.id] = Model(max_retries=retries)

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        if not self.jobs:
            return
        job_id = data.draw(st.sampled_from(sorted(self.jobs)))
        model = self.jobs[job_id]
        expected = model.state in ("queued", "started")
        assert self.broker.cancel(job_id) == expected
        if expected:
            model.state, model.token = "canceled", None

    @rule(data=st.data())
    def requeue(self, data: st.DataObject) -> None:
        if not self.jobs:
            return
        job_id = data.draw(st.sampled_from(sorted(self.jobs)))
        model = self.jobs[job_id]
        expected = model.state in ("failed", "canceled")
        assert self.broker.requeue([job_id]) == int(expected)
        if expected:
            model.state, model.attempts, model.finished = "queued", 0, 0

    # -- workers ---------------------------------------------------------------------------------
    @rule(limit=st.integers(1, 4))
    def claim(self, limit: int) -> None:
        messages = self.broker.claim(["default"], "w", limit)
        queued = [i for i, m in self.jobs.items() if m.state == "queued"]
        assert len(messages) == min(limit, len(queued))
        for message in messages:
            model = self.jobs[message.id]
            assert model.state == "queued", f"{message.id} claimed while {model.state}"
            model.state, model.token = "started", message.token
            model.attempts += 1
            model.leased_at = time.monotonic()
            assert message.attempts == model.attempts
        self.held += messages

    def current(self, message: Message) -> bool:
        model = self.jobs[message.id]
        return model.state == "started" and model.token == message.token

    @rule(data=st.data(), how=st.sampled_from(["succeeded", "failed", "retry"]))
    def finish(self, data: st.DataObject, how: str) -> None:
        if not self.held:
            return
        message = data.draw(st.sampled_from(self.held))
        expected = self.current(message)
        now = timezone.now()
        if how == "retry":
            outcome = Outcome(message.id, JobStatus.SCHEDULED, now, now, error="E: again",
                              run_at=now - timedelta(seconds=1), token=message.token)
        else:
            outcome = Outcome(message.id, JobStatus(how), now, now, token=message.token)
        assert self.broker.finish("w", [outcome]) == int(expected)
        if expected:
            model = self.jobs[message.id]
            model.token = None
            if how == "retry":
                model.state = "queued"
            else:
                model.state = how
                model.finished += 1

    @rule(data=st.data(), lost=st.sampled_from(["", "exit code 3", "signal 9"]))
    def release(self, data: st.DataObject, lost: str) -> None:
        if not self.held:
            return
        message = data.draw(st.sampled_from(self.held))
        expected = self.current(message)
        assert self.broker.release("w", [message.lease], lost=lost) == int(expected)
        if expected:
            self.give_back(message.id, lost)

    def give_back(self, job_id: str, lost: str) -> None:
        model = self.jobs[job_id]
        model.token = None
        if not lost:
            model.state = "queued"
            model.attempts -= 1  # it never ran
        elif model.attempts > model.max_retries and model.attempts >= 2:
            model.state = "failed"  # the poison-pill rule
        else:
            model.state = "queued"

    @rule(data=st.data())
    def renew(self, data: st.DataObject) -> None:
        if not self.held:
            return
        messages = data.draw(
            st.lists(st.sampled_from(self.held), max_size=4, unique_by=lambda m: m.id)
        )
        fresh = {m.id for m in messages if self.current(m)}
        lost = self.broker.renew("w", [m.lease for m in messages])
        assert lost == {m.id for m in messages} - fresh
        now = time.monotonic()
        for job_id in fresh:
            self.jobs[job_id].leased_at = now

    @rule()
    def recover_expired_leases(self) -> None:
        """Wait until every live lease has expired, then recover them all (lost runs)."""
        started = [i for i, m in self.jobs.items() if m.state == "started"]
        if started:
            expiry = max(self.jobs[i].leased_at for i in started) + LEASE * 1.5
            while time.monotonic() < expiry:
                time.sleep(0.01)
        assert self.broker.recover() == len(started)
        for job_id in started:
            self.give_back(job_id, "its worker stopped renewing its lease")

    @rule(data=st.data())
    def child_crash(self, data: st.DataObject) -> None:
        """What a supervisor does for a dead child holding a batch: acks what it finished,
        counts the run it was in the middle of, gives back the rest unrun."""
        batch = self.broker.claim(["default"], "w", data.draw(st.integers(1, 4)))
        for message in batch:
            model = self.jobs[message.id]
            model.state, model.token = "started", message.token
            model.attempts += 1
            model.leased_at = time.monotonic()
        self.held += batch
        if not batch:
            return
        done = data.draw(st.integers(0, len(batch) - 1))
        now = timezone.now()
        outcomes = [
            Outcome(m.id, JobStatus.SUCCEEDED, now, now, result="2", token=m.token)
            for m in batch[:done]
        ]
        assert self.broker.finish("w", outcomes) == done
        for message in batch[:done]:
            self.jobs[message.id].state = "succeeded"
            self.jobs[message.id].finished += 1
        running, unrun = batch[done], batch[done + 1 :]
        assert self.broker.release("w", [running.lease], lost="signal 9") == 1
        self.give_back(running.id, "signal 9")
        assert self.broker.release("w", [m.lease for m in unrun]) == len(unrun)
        for message in unrun:
            self.give_back(message.id, "")
        # The same acks again (the child had sent them already): refused, harmless.
        assert self.broker.finish("w", outcomes) == 0

    # -- after every step ------------------------------------------------------------------------
    @invariant()
    def the_table_agrees_with_the_model(self) -> None:
        self.broker.sync()
        rows = {str(r.id): r for r in Job.objects.all()}
        assert set(rows) == set(self.jobs), "a job was lost or invented"
        for job_id, model in self.jobs.items():
            row = rows[job_id]
            assert (row.status, row.attempts) == (model.state, model.attempts), job_id
            assert model.finished <= 1
            assert self.broker.state(job_id).status == model.state

    def teardown(self) -> None:
        """Nothing lost: every job the model has queued can still be claimed. On Redis, after a
        final sync, each row also carries the version Redis has for its job (the table is a
        projection of what Redis knows, not merely alike)."""
        if type(self.broker).__module__.startswith("jobqueue.brokers.redis"):
            self.broker.sync()
            for job_id, version in redis_versions(self.broker, list(self.jobs)).items():
                assert Job.objects.get(id=job_id).version == version, job_id
        queued = {i for i, m in self.jobs.items() if m.state == "queued"}
        claimed = {m.id for m in self.broker.claim(["default"], "w", 1000)}
        assert claimed == queued


def redis_versions(broker: Any, job_ids: list[str]) -> dict[str, int]:
    """Each job's version as Redis knows it: live (``ver``) or with its outcome (``r:<id>``)."""
    versions = {}
    for job_id in job_ids:
        ended = broker.client.get(broker.key("r", job_id))
        live = broker.client.hget(broker.key("ver"), job_id)
        if ended is not None:
            versions[job_id] = int(ended.split(b"|", 1)[0])
        elif live is not None:
            versions[job_id] = int(live)
    return versions


def test_the_broker_keeps_its_contract_under_random_interleavings(broker_and_reset):
    broker, reset = broker_and_reset

    class Machine(BrokerMachine):
        pass

    Machine.broker = broker
    Machine.reset = staticmethod(reset)  # type: ignore[assignment]
    run_state_machine_as_test(Machine, settings=RUNS)
