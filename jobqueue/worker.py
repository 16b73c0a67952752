"""The worker supervisor: N long-lived child processes, their leases, timeouts and shutdown.

The supervisor runs no jobs. It forks the children, renews the leases of the jobs they hold,
kills a child whose job outlives its timeout (or was canceled) and starts another in its place,
returns the jobs of a child that died to their queues, and on SIGTERM/SIGINT lets the children
finish their current job (a second signal stops them at once; their jobs go back to the queue).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import wait as wait_for
from typing import Any

from django.db import DatabaseError, connections
from django.utils import timezone

from jobqueue.brokers import get_broker, reset_broker
from jobqueue.conf import get_settings
from jobqueue.consumer import Consumer, Slot
from jobqueue.exceptions import BrokerError
from jobqueue.execution import failure
from jobqueue.message import Message
from jobqueue.scheduler import Scheduler
from jobqueue.signals import die_with_parent, ignore_shutdown_signals, shutdown_requests

logger = logging.getLogger(__name__)

TICK = 0.25  # seconds between checks of deadlines when nothing else wakes the supervisor


def default_name() -> str:
    return f"{socket.gethostname()}.{os.getpid()}"


@dataclass
class Child:
    name: str
    slot: Slot
    process: Any = None
    recorded_job: str | None = None  # the current job the Worker row shows


def _child_main(name: str, queues: list[str], slot: Slot, stopping: Any, burst: bool) -> None:
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
        Consumer(broker, queues, name, slot, stopping, burst).run()
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
        self.burst = burst
        self.name = name or default_name()
        self.context = multiprocessing.get_context("fork")
        self.stopping = self.context.RawValue("b", 0)
        self.children = [
            Child(f"{self.name}/{i}", Slot(self.context)) for i in range(1, concurrency + 1)
        ]
        self.broker = get_broker()
        self.next_heartbeat = 0.0
        self.next_tick = 0.0
        self.scheduler = Scheduler() if scheduler else None

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
        """Fork the children and tend them until all have exited."""
        for child in self.children:
            self.spawn(child)
        handled = 0
        while self.alive():
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
            self.guarded(self.tend)

    def guarded(self, step: Any) -> None:
        """Run a bookkeeping step; if the broker or database is unreachable, keep supervising:
        the step is tried again at the next tick."""
        try:
            step()
        except (DatabaseError, BrokerError) as exc:
            logger.error("worker=%s state=broker-unreachable error=%s", self.name, exc)
            self.broker.close()
            connections.close_all()

    def tend(self) -> None:
        self.reap()
        self.enforce_deadlines()
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

    def alive(self) -> bool:
        return any(c.process is not None for c in self.children)

    def spawn(self, child: Child) -> None:
        """Fork a child; the supervisor's connections are closed first so none is shared."""
        self.broker.close()
        connections.close_all()
        child.slot.clear()
        child.process = self.context.Process(
            target=_child_main,
            args=(child.name, self.queues, child.slot, self.stopping, self.burst),
            name=child.name,
            daemon=True,
        )
        child.process.start()

    def reap(self) -> None:
        """Handle children that exited: done (burst or stopping), or lost (crash, OOM kill)."""
        for child in self.children:
            process = child.process
            if process is None or process.is_alive():
                continue
            process.join()
            if process.exitcode == 0:
                child.process = None
                continue
            current = child.slot.read()
            logger.warning(
                "worker=%s job=%s state=lost exitcode=%s",
                child.name,
                current["job_id"],
                process.exitcode,
            )
            if current["job_id"]:
                self.broker.release(child.name, [current["job_id"]], count_attempt=True)
            self.restart(child)

    def enforce_deadlines(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.process is None:
                continue
            current = child.slot.read()
            if current["job_id"] and current["deadline"] and now > current["deadline"]:
                seconds = current["deadline"] - current["started"]
                self.kill(child)
                started = timezone.now() - timedelta(seconds=now - current["started"])
                error = f"TimeoutError: job exceeded its timeout of {seconds:g} s"
                running = Message(
                    id=current["job_id"],
                    task=current["task"],
                    arguments="",
                    queue="",
                    attempts=current["attempts"],
                    max_retries=current["max_retries"],
                )
                outcome = failure(running, started, error)
                self.broker.finish(child.name, [outcome])
                self.restart(child)

    def kill(self, child: Child) -> None:
        """SIGKILL: the only stop that works on code stuck in C."""
        logger.warning("worker=%s pid=%s state=killing", child.name, child.process.pid)
        os.kill(child.process.pid, signal.SIGKILL)
        child.process.join()

    def restart(self, child: Child) -> None:
        """After a child ended with jobs claimed: they go back to their queues, and (unless the
        worker is stopping) a new child takes its place."""
        child.process = None
        child.slot.clear()
        self.broker.release(child.name)
        if not self.stopping.value:
            self.spawn(child)

    def abort(self) -> None:
        """Second signal: stop now; every job the children hold goes back to its queue."""
        logger.warning("worker=%s state=aborting (jobs go back to their queues)", self.name)
        self.stopping.value = 1
        for child in self.children:
            if child.process is not None:
                self.kill(child)
                child.process = None
        # Unreachable broker: their leases expire and recovery returns them all the same.
        self.guarded(lambda: [self.broker.release(c.name) for c in self.children])

    # -- bookkeeping -----------------------------------------------------------------------------
    def heartbeat(self) -> None:
        conf = get_settings()
        self.next_heartbeat = time.monotonic() + conf.heartbeat_interval
        names = [c.name for c in self.children]
        self.broker.renew(names)
        self.record_workers(everyone=True)
        self.broker.recover()
        self.broker.expire_results()

    def stop_canceled(self) -> None:
        running = {c.slot.read()["job_id"]: c for c in self.children if c.process is not None}
        running.pop(None, None)
        if not running:
            return
        for job_id in self.broker.canceled(list(running)):
            child = running[job_id]
            logger.info("worker=%s job=%s state=canceled", child.name, job_id)
            self.kill(child)
            self.restart(child)

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
                },
            )

    def record_workers(self, everyone: bool = False) -> None:
        """Show each child's current job: every child at a heartbeat, else those that changed."""
        from jobqueue.models import Worker

        now = timezone.now()
        for child in self.children:
            current = child.slot.read()
            if not everyone and current["job_id"] == child.recorded_job:
                continue
            child.recorded_job = current["job_id"]
            Worker.objects.filter(name=child.name).update(
                last_seen=now,
                current_job=current["job_id"],
                current_task=current["task"],
                jobs_done=current["jobs_done"],
            )
        if everyone:
            stale = now - timedelta(seconds=get_settings().LEASE_TIMEOUT * 2)
            Worker.objects.filter(last_seen__lt=stale).delete()

    def unregister(self) -> None:
        from jobqueue.models import Worker

        self.guarded(self.broker.tick)  # leave the Job table up to date, even after a burst
        Worker.objects.filter(name__in=[c.name for c in self.children]).delete()
        self.broker.close()
        connections.close_all()
