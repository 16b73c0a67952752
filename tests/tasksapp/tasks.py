"""Tasks of Django's tasks framework (the equivalents of Django's own tests/tasks/tasks.py) that
the tests send to real workers through jobqueue's backend, and signal receivers that leave a
trace of every signal in a file the task names."""

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

from asgiref.sync import sync_to_async
from django.db import connection

import jobqueue
from jobqueue.framework import SUCCESSFUL, task, task_enqueued, task_finished, task_started


def log(path, line):
    with open(path, "a") as f:
        f.write(f"{line}\n")


@task()
def noop_task(*args, **kwargs):
    return None


@task()
async def noop_task_async(*args, **kwargs):
    await asyncio.sleep(0)
    return None


@task()
def calculate_meaning_of_life():
    return 42


@task()
def echo(value):
    return value


@task()
async def async_echo(value):
    await asyncio.sleep(0.01)
    return {"loop": type(asyncio.get_running_loop()).__name__, "value": value}


@jobqueue.task
async def jobqueue_async_echo(value):
    """jobqueue's own @task takes async def functions too."""
    await asyncio.sleep(0.01)
    return {"loop": type(asyncio.get_running_loop()).__name__, "value": value}


@task()
def failing_task_value_error():
    raise ValueError("This Task failed due to ValueError")


@task()
def complex_return_value():
    return {"list": [1, 2, 3], "nested": {"a": None, "b": True}, "text": "é"}


@task()
def bad_return_value():
    return {1, 2}  # a set: JSON cannot carry it


@task()
def record(path, value):
    """Append ``value`` and this process's pid to ``path``: how tests count and order runs."""
    log(path, f"{value} {os.getpid()}")
    return value


@task(takes_context=True, max_retries=1, retry_backoff=0)
def sees_its_past_attempts(context):
    """Fails its first attempt; the second returns what its context says of the first."""
    if context.attempt == 1:
        raise RuntimeError("the first attempt fails")
    seen = context.task_result
    return {"errors": [e.exception_class_path for e in seen.errors], "workers": seen.worker_ids}


@task(takes_context=True)
def get_context(context, path):
    log(path, f"attempt {context.attempt}")
    return {
        "id": context.task_result.id,
        "attempt": context.attempt,
        "status": str(context.task_result.status),
        "worker_ids": context.task_result.worker_ids,
        "queue": context.task_result.task.queue_name,
        "run_after": run_after.isoformat()
        if (run_after := context.task_result.task.run_after)
        else None,
    }


@task(takes_context=True, max_retries=2, retry_backoff=0)
def flaky(context, path, succeed_on):
    """Fails until its attempt ``succeed_on``; every attempt leaves a line in ``path``."""
    log(path, f"attempt {context.attempt}")
    if context.attempt < succeed_on:
        raise RuntimeError(f"attempt {context.attempt} fails")
    return context.attempt


@task(max_retries=1, retry_backoff=0)
def always_fails(path):
    log(path, "run")
    raise KeyError("never")


@task(backend="retrying", takes_context=True)
def retried_by_backend_options(context, path):
    log(path, f"attempt {context.attempt}")
    raise RuntimeError("the backend's OPTIONS give it 2 retries")


@task(takes_context=True, max_retries=1)
def dies_on_first_attempt(context, path):
    """Its first attempt kills its own worker process, as an OOM kill would."""
    log(path, f"attempt {context.attempt}")
    if context.attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return context.attempt


@task(timeout=1)
def sleeps(marker):
    Path(marker).write_text(str(os.getpid()))
    time.sleep(60)


@task()
def signalled(path, raise_in_receivers=False):
    return "done"


@task(timeout=1)
def signalled_past_its_timeout(path):
    time.sleep(60)


@task(takes_context=True, max_retries=1, retry_backoff=0)
def signalled_after_a_retry(context, path):
    if context.attempt == 1:
        raise RuntimeError("the first attempt fails")
    return "retried"


@task(takes_context=True, max_retries=1)
def signalled_dying(context, path):
    """Every attempt kills its own worker process, as an OOM kill would."""
    log(path, f"attempt {context.attempt}")
    os.kill(os.getpid(), signal.SIGKILL)


TRACED = {
    signalled.func,
    signalled_past_its_timeout.func,
    signalled_after_a_retry.func,
    signalled_dying.func,
}


def _trace(signal_name):
    def receiver(sender, task_result, **kwargs):
        if task_result.task.func not in TRACED:
            return
        path, raising = task_result.args[0], task_result.args[1:] == [True]
        line = f"{signal_name} {task_result.status} {sender.__name__} {os.getpid()}"
        if signal_name == "finished":  # what anyone reading the result sees by now
            stored = task_result.task.get_backend().get_result(task_result.id)
            value = stored.return_value if stored.status == SUCCESSFUL else "-"
            line += f" {stored.status} {value} {len(task_result.errors)} {task_result.attempts}"
        log(path, line)
        if raising:
            raise RuntimeError(f"a {signal_name} receiver that raises")

    return receiver


on_enqueued = _trace("enqueued")
on_started = _trace("started")
on_finished = _trace("finished")
task_enqueued.connect(on_enqueued)
task_started.connect(on_started)
task_finished.connect(on_finished)


@task()
async def cancels_itself(path):
    log(path, "run")
    raise asyncio.CancelledError()


@task()
def exits(path):
    log(path, "run")
    raise SystemExit(3)


@task()
def interrupted(path):
    log(path, "run")
    raise KeyboardInterrupt


def plain_function(path):
    """No task: a plain function of a module workers import."""
    log(path, "run")


@task(backend="immediate")
def on_another_backend(path):
    log(path, "run")


@task(takes_context=True)
def fails_every_time(context, path):
    """Declared on "default" (no retries); each attempt logs the backend it runs for."""
    result = context.task_result
    log(path, f"attempt {context.attempt} {result.backend} {result.task.backend}")
    raise RuntimeError("fails every time")


def _use_the_database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {
        "main_thread": threading.current_thread() is threading.main_thread(),
        "connection": id(connection.connection),  # the DB-API connection it used
    }


@task()
async def uses_the_orm():
    """An ORM call from an async task, as Django's docs write it."""
    return await sync_to_async(_use_the_database)()


@task()
def uses_the_orm_sync():
    return _use_the_database()
