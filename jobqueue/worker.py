"""The worker supervisor: N long-lived child processes, their leases, timeouts and shutdown.

The supervisor runs no jobs. It forks the children and renews exactly the leases their slots say
they hold; it kills a child whose job outlives its timeout, was canceled or is no longer its
own; whenever a child ends, for whatever reason, it acknowledges the outcomes the child had
finished, gives back the jobs it never started and counts the run that was cut short, then
starts another child in its place. Broker and database outages are waited out: what the broker
must be told is kept and retried with backoff. On SIGTERM/SIGINT the children finish their
current job; a second signal stops them at once.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import wait as wait_for
from typing import Any

from django.db import connections
from django.db.models import F
from django.utils import timezone

from jobqueue.brokers import get_broker, reset_broker
from jobqueue.brokers.base import Outcome
from jobqueue.conf import get_settings
from jobqueue.consumer import (
    REFUSED,
    UNREACHABLE,
    Consumer,
    finish_each,
    refused_outcome,
    unreachable,
)
from jobqueue.execution import failure
from jobqueue.message import Message
from jobqueue.scheduler import Scheduler
from jobqueue.signals import die_with_parent, ignore_shutdown_signals, shutdown_requests
from jobqueue.slot import CLAIMED, RUNNING, Remains, Slot

logger = logging.getLogger(__name__)

TICK = 0.25  # seconds between checks of deadlines when nothing else wakes the supervisor
MAX_BACKOFF = 10.0  # seconds between tries while the broker is unreachable


def default_name() -> str:
    return f"{socket.gethostname()}.{os.getpid()}"


def exit_description(code: int | None) -> str:
    """``exit code 3`` or ``signal 9``: how a child process ended."""
    if code is not None and code < 0:
        return f"signal {-code}"
    return f"exit code {code}"


@dataclass
class Child:
    name: str
    slot: Slot | None = None
    process: Any = None
    recorded_job: str | None = None  # the current job the Worker row shows
    jobs_done: int = 0  # by the processes that held this place before
    # Set when the supervisor kills it: why, how its running job's run is described, and the
    # outcome the supervisor decided for that job (a timeout's failure).
    kill_reason: str = ""
    kill_lost: str = ""
    kill_outcome: Outcome | None = None
    postponed: bool = False  # its fork waits for the broker's threads to stop


@dataclass
class Settlement:
    """What the broker must be told about a child that is gone; kept until it has been."""

    child: str
    remains: Remains
    lost: str
    why: str = ""  # why the child was replaced, for its Worker row ("" when it simply ended)
    decided: list[Outcome] = field(default_factory=list)


def _child_main(
    name: str,
    queues: list[str],
    slot: Slot,
    stopping: Any,
    burst: bool,
    max_jobs: int | None,
    max_memory: float | None,
) -> None:
    ignore_shutdown_signals()
    die_with_parent()
    for alias in connections:
        settings = connections[alias].settings_dict
        # A worker is a long-lived process: keep connections between jobs (close_old_connections
        # still drops broken ones) unless the user chose otherwise.
        if settings.get("CONN_MAX_AGE") == 0:
            settings["CONN_MAX_AGE"] = None
    reset_broker()
    broker = get_broker()
    try:
        Consumer(broker, queues, name, slot, stopping, burst, max_jobs, max_memory).run()
    finally:
        broker.close()
        connections.close_all()


class Supervisor:
    def __init__(
        self,
        queues: Sequence[str] | None = None,
        concurrency: int = 1,
        burst: bool = False,
        name: str | None = None,
        scheduler: bool = True,
        max_jobs: int | None = None,
        max_memory: float | None = None,
    ) -> None:
        conf = get_settings()
        self.queues = list(queues or conf.QUEUES)
        unknown = [q for q in self.queues if q not in conf.QUEUES]
        if unknown:
            raise ValueError(
                f"unknown queues {unknown}; JOBQUEUE['QUEUES'] has {list(conf.QUEUES)}"
            )
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if max_jobs is not None and max_jobs < 1:
            raise ValueError("max-jobs must be at least 1")
        if max_memory is not None and max_memory <= 0:
            raise ValueError("max-memory must be a positive number of MB")
        self.burst = burst
        self.max_jobs = max_jobs
        self.max_memory = max_memory
        self.name = name or default_name()
        self.context = multiprocessing.get_context("fork")
        self.stopping = self.context.RawValue("b", 0)
        self.children = [Child(f"{self.name}/{i}") for i in range(1, concurrency + 1)]
        self.broker = get_broker()
        self.pending: list[Settlement] = []
        self.next_heartbeat = 0.0
        self.next_tick = 0.0
        self.scheduler = Scheduler() if scheduler else None
        self.retry_at = 0.0
        self.failures = 0

    # -- life cycle ------------------------------------------------------------------------------
    def run(self) -> int:
        logger.info(
            "worker=%s queues=%s concurrency=%s burst=%s state=starting",
            self.name,
            ",".join(self.queues),
            len(self.children),
            self.burst,
        )
        for warning in self.broker.durability_warnings():
            logger.warning("worker=%s state=starting broker-warning=%r", self.name, warning)
        self.register()
        # Recover lost jobs first, so that even a burst worker runs them.
        self.guarded(self.heartbeat)
        with shutdown_requests() as requests:
            try:
                self.supervise(requests)
            except Exception:
                # Children left alone would run on unwatched (they ignore SIGTERM, and an exit
                # would wait for them): stop them, and give their jobs back.
                logger.exception("worker=%s state=crashed", self.name)
                self.abort()
                raise
        self.unregister()
        logger.info("worker=%s state=stopped", self.name)
        return 0

    def supervise(self, requests: Any) -> None:
        """Fork the children and tend them until all have exited and all is settled."""
        for child in self.children:
            self.spawn(child)
        handled = 0
        while self.alive() or self.pending:
            sentinels = [c.process.sentinel for c in self.children if c.process]
            wait_for([*sentinels, requests.wakeup_fd], timeout=TICK)
            requests.drain()
            if requests.count > handled:
                handled = requests.count
                if handled == 1:
                    logger.info("worker=%s state=stopping (finishing running jobs)", self.name)
                    self.stopping.value = 1
                else:
                    self.abort()
                    break
            self.tend()

    def tend(self) -> None:
        for child in self.children:
            if child.postponed and not self.stopping.value:
                self.spawn(child)
        self.reap()
        self.enforce_deadlines()
        self.guarded(self.bookkeeping)

    def bookkeeping(self) -> None:
        self.settle()
        if time.monotonic() >= self.next_tick:
            self.next_tick = time.monotonic() + TICK * 2
            self.broker.tick()
            self.stop_canceled()
        if time.monotonic() >= self.next_heartbeat:
            self.heartbeat()
        else:
            self.record_workers()
        if self.scheduler is not None:
            self.scheduler.step()

    def guarded(self, step: Callable[[], object], force: bool = False) -> bool:
        """Run a step that talks to the broker; while the broker or database is unreachable,
        keep supervising and try again later, with backoff. Anything else is a bug: it raises."""
        if not force and time.monotonic() < self.retry_at:
            return False
        try:
            step()
        except UNREACHABLE as exc:
            self.failures += 1
            delay = min(0.25 * 2**self.failures, MAX_BACKOFF)
            self.retry_at = time.monotonic() + delay
            logger.error(
                "worker=%s state=broker-unreachable retry_in=%.1fs error=%s",
                self.name,
                delay,
                exc,
            )
            self.broker.close()
            connections.close_all()
            return False
        self.failures = 0
        return True

    def alive(self) -> bool:
        return any(
            c.process is not None or (c.postponed and not self.stopping.value)
            for c in self.children
        )

    def spawn(self, child: Child) -> None:
        """Fork a child with a slot of its own; the supervisor's connections are closed first
        so none is shared."""
        self.broker.close()
        connections.close_all()
        if not self.broker.ready_to_fork():
            if not child.postponed:
                logger.warning(
                    "worker=%s state=fork-postponed (a broker thread still runs)", child.name
                )
            child.postponed = True
            return
        child.postponed = False
        child.slot = Slot(self.context, 2 * get_settings().MAX_BATCH + 2)
        child.kill_reason, child.kill_lost, child.kill_outcome = "", "", None
        child.process = self.context.Process(
            target=_child_main,
            args=(
                child.name,
                self.queues,
                child.slot,
                self.stopping,
                self.burst,
                self.max_jobs,
                self.max_memory,
            ),
            name=child.name,
            daemon=True,
        )
        # What exists now stays out of the collector's reach, here and in the child: a full
        # collection in either would write to every page holding a tracked object, and both
        # would end up with private copies of pages they could share (copy-on-write). Garbage
        # is collected first, since a frozen object is never collected; after the first fork,
        # that collection only visits what was made since the previous one.
        gc.collect()
        gc.freeze()
        child.process.start()

    # -- children that end -----------------------------------------------------------------------
    def reap(self) -> None:
        for child in self.children:
            if child.process is not None and not child.process.is_alive():
                self.collect(child)

    def kill(
        self,
        child: Child,
        why: str,
        lost: str,
        outcome: Outcome | None = None,
        job: tuple[str, int] | None = None,
    ) -> bool:
        """SIGKILL (the only stop that works on code stuck in C), then handle its jobs. With
        ``job`` (id, token), only if the child still runs that job: between reading the slot
        and this kill (a broker round trip for a cancel or a lost lease) it may have moved on
        to another job, which must not be killed, or failed, for this one."""
        logger.warning(
            "worker=%s pid=%s state=killing reason=%r", child.name, child.process.pid, why
        )
        if job is None:
            os.kill(child.process.pid, signal.SIGKILL)
        else:
            assert child.slot is not None
            if not child.slot.kill_if_running(child.process.pid, *job):
                logger.info("worker=%s state=kill-skipped reason=%r (moved on)", child.name, why)
                return False
        child.kill_reason, child.kill_lost, child.kill_outcome = why, lost, outcome
        self.collect(child)
        return True

    def collect(self, child: Child) -> None:
        """A child has ended: keep what the broker must be told, and replace it unless it ended
        because the worker is stopping or a burst is done."""
        assert child.slot is not None
        child.process.join()
        code = child.process.exitcode
        child.process = None
        remains = child.slot.remains()
        child.jobs_done += child.slot.jobs_done
        finished = remains.finished and code == 0
        if child.kill_lost:
            why, lost = child.kill_reason, child.kill_lost
        elif remains.recycled:
            why, lost = remains.recycled, exit_description(code)
        elif code == 0 and (finished or self.stopping.value):
            why, lost = "", exit_description(code)
        else:
            why = lost = exit_description(code)
            why = f"crash: {why}"
            logger.warning(
                "worker=%s state=lost %s jobs=%s",
                child.name,
                lost,
                ",".join(lease.job_id for lease in remains.ran) or "-",
            )
        decided = [child.kill_outcome] if child.kill_outcome else []
        if remains.leases or decided or why:
            self.pending.append(Settlement(child.name, remains, lost, why, decided))
            # Settled before a replacement starts, so that it finds the jobs given back.
            self.guarded(self.settle, force=True)
        if child.process is None and not self.stopping.value and not finished:
            if why:
                logger.info("worker=%s state=replaced reason=%r", child.name, why)
            self.spawn(child)

    def settle(self) -> None:
        """Tell the broker what became of the jobs of children that are gone. Every step is
        fenced by tokens, so trying a settlement again after a failure changes nothing twice.
        An outage leaves the settlement for later; anything else (an outcome refused for its
        data, a bug) is logged, its outcomes are stored as plain failures, and the settlement
        is dropped: it never stops the supervisor."""
        while self.pending:
            s = self.pending[0]
            try:
                self.apply(s)
            except Exception as exc:
                if unreachable(exc):
                    raise
                logger.exception("worker=%s state=settle-failed", s.child)
                try:
                    plain = [refused_outcome(o, exc) for o in [*s.remains.outcomes, *s.decided]]
                    finish_each(self.broker, s.child, plain)
                except Exception as again:
                    if unreachable(again):
                        raise
                    logger.exception("worker=%s state=settlement-dropped", s.child)
            self.pending.pop(0)

    def apply(self, s: Settlement) -> None:
        from jobqueue.models import Worker

        if s.remains.outcomes:
            try:
                self.broker.finish(s.child, s.remains.outcomes)
            except REFUSED as exc:
                logger.error("worker=%s state=batch-refused error=%r", s.child, exc)
                finish_each(self.broker, s.child, s.remains.outcomes)
        for outcome in s.decided:  # after the child's own: a finished run keeps its outcome
            self.broker.finish(s.child, [outcome])
        if s.remains.unstarted:
            self.broker.release(s.child, s.remains.unstarted)
        if s.remains.ran:
            self.broker.release(s.child, s.remains.ran, lost=s.lost)
        if self.burst and (s.remains.unstarted or s.remains.ran):
            self.rejoin_burst()
        if s.why:
            Worker.objects.filter(name=s.child).update(
                replacements=F("replacements") + 1,
                replaced_at=timezone.now(),
                replaced_because=s.why[:200],
            )

    def rejoin_burst(self) -> None:
        """Jobs given back after a burst's children had found nothing left: run them too."""
        if not self.stopping.value:
            for child in self.children:
                if child.process is None:
                    self.spawn(child)

    def abort(self) -> None:
        """Second signal: stop now; the children's finished outcomes are acknowledged and their
        other jobs go back to their queues."""
        logger.warning("worker=%s state=aborting (jobs go back to their queues)", self.name)
        self.stopping.value = 1
        for child in self.children:
            if child.process is not None:
                self.kill(child, "", "stopped by a second shutdown signal")
        # Unreachable broker: their leases expire and recovery returns them all the same.
        self.guarded(self.settle, force=True)

    # -- children that run -----------------------------------------------------------------------
    def enforce_deadlines(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.process is None or child.slot is None:
                continue
            current = child.slot.current()
            if current and current["deadline"] and now > current["deadline"]:
                seconds = current["deadline"] - current["started"]
                error = f"TimeoutError: job exceeded its timeout of {seconds:g} s"
                running = Message(
                    id=current["job_id"],
                    task=current["task"],
                    arguments="",
                    queue="",
                    attempts=current["attempts"],
                    max_retries=current["max_retries"],
                    token=current["token"],
                )
                started = datetime.fromtimestamp(current["started_wall"], tz=UTC)
                outcome = failure(running, started, error)
                self.kill(
                    child,
                    f"timeout: job {current['job_id']}",
                    "timeout",
                    outcome,
                    job=(current["job_id"], current["token"]),
                )

    def stop_canceled(self) -> None:
        held: dict[str, tuple[Child, int, int]] = {}
        for child in self.children:
            leases = child.slot.leases() if child.process and child.slot else None
            for job_id, (lease, state) in (leases or {}).items():
                if state in (CLAIMED, RUNNING):
                    held[job_id] = (child, state, lease.token)
        if not held:
            return
        for job_id in self.broker.canceled(list(held)):
            child, state, token = held[job_id]
            if child.process is None:
                continue  # killed already, for another of its jobs
            logger.info("worker=%s job=%s state=canceled", child.name, job_id)
            if state == RUNNING:
                self.kill(child, f"cancel: job {job_id}", "canceled", job=(job_id, token))
            elif child.slot is not None:
                child.slot.drop({job_id})

    def renew_leases(self) -> None:
        """Renew exactly the leases each child holds; a job that is no longer its own is not
        started, or, if running, its child is stopped (its outcome would be refused)."""
        for child in self.children:
            if child.process is None or child.slot is None:
                continue
            held = child.slot.leases()
            if not held:
                continue
            lost = self.broker.renew(child.name, [lease for lease, _ in held.values()])
            running = [job_id for job_id in lost if held[job_id][1] == RUNNING]
            killed = False
            if running:
                job = (running[0], held[running[0]][0].token)
                why = f"lease lost: job {running[0]}"
                killed = self.kill(child, why, "its lease was lost", job=job)
            if lost and not killed:
                child.slot.drop(lost)

    # -- bookkeeping -----------------------------------------------------------------------------
    def heartbeat(self) -> None:
        conf = get_settings()
        self.next_heartbeat = time.monotonic() + conf.heartbeat_interval
        self.renew_leases()
        self.record_workers(everyone=True)
        self.broker.recover()
        self.broker.expire_results()

    def register(self) -> None:
        from jobqueue.models import Worker

        now = timezone.now()
        for child in self.children:
            Worker.objects.update_or_create(
                name=child.name,
                defaults={
                    "hostname": socket.gethostname(),
                    "pid": os.getpid(),
                    "queues": ",".join(self.queues),
                    "started_at": now,
                    "last_seen": now,
                    "current_job": None,
                    "current_task": "",
                    "jobs_done": 0,
                    "replacements": 0,
                    "replaced_at": None,
                    "replaced_because": "",
                },
            )

    def record_workers(self, everyone: bool = False) -> None:
        """Show each child's current job: every child at a heartbeat, else those that changed."""
        from jobqueue.models import Worker

        now = timezone.now()
        for child in self.children:
            slot = child.slot if child.process is not None else None
            current = slot.current() if slot else None
            job_id = current["job_id"] if current else None
            if not everyone and job_id == child.recorded_job:
                continue
            child.recorded_job = job_id
            Worker.objects.filter(name=child.name).update(
                last_seen=now,
                current_job=job_id,
                current_task=current["task"] if current else "",
                jobs_done=child.jobs_done + (slot.jobs_done if slot else 0),
            )
        if everyone:
            stale = now - timedelta(seconds=get_settings().LEASE_TIMEOUT * 2)
            Worker.objects.filter(last_seen__lt=stale).delete()

    def unregister(self) -> None:
        from jobqueue.models import Worker

        names = [c.name for c in self.children]
        self.guarded(self.broker.tick, force=True)  # leave the Job table up to date
        # Unreachable: the rows go stale and the next worker's heartbeat deletes them.
        self.guarded(lambda: Worker.objects.filter(name__in=names).delete(), force=True)
        self.broker.close()
        connections.close_all()
