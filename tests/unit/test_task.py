import datetime
import inspect
import json
import math
import os
import re
import uuid

import pytest
from django.test import override_settings

from jobqueue import Task, registry, task
from jobqueue.consumer import Consumer
from jobqueue.exceptions import ConfigurationError, SerializationError, UnknownTask
from jobqueue.execution import retry_delay
from jobqueue.message import new_job_id
from jobqueue.registry import get_task, worker_imports
from tests.testapp.tasks import add, urgent


def test_calling_a_task_runs_it_inline():
    assert add(2, 3) == 5
    assert isinstance(add, Task)
    assert add.__name__ == "add"


def test_task_name_is_the_dotted_path_and_registered():
    assert add.name == "tests.testapp.tasks.add"
    assert get_task("tests.testapp.tasks.add") is add
    with pytest.raises(UnknownTask, match="no task named 'nope'"):
        get_task("nope")


def test_message_carries_options_and_json_arguments():
    message = urgent.message((1,), priority=5, countdown=10)
    assert message.queue == "high"
    assert message.priority == 5
    assert message.is_scheduled
    assert message.arguments == '{"args":[1],"kwargs":{}}'


def test_unknown_queue_is_refused():
    with pytest.raises(ValueError, match="unknown queue 'nope'"):
        add.message((1, 2), queue="nope")


@pytest.mark.parametrize("priority", [101, -101, 1.5, "1"])
def test_priority_out_of_range_is_refused(priority):
    with pytest.raises(ValueError, match="priority must be an int from -100 to 100"):
        add.message((1, 2), priority=priority)


def test_arguments_must_fit_the_signature():
    with pytest.raises(TypeError, match=r"tasks.add\(\): missing a required argument"):
        add.message((1,))


def test_unserializable_argument_is_named():
    with pytest.raises(TypeError, match=r"add\(\) argument 'y': a builtins.set cannot travel"):
        add.message((1, {2}))
    with pytest.raises(TypeError, match=r"add\(\) argument 'y'\[0\]"):
        add.message((), {"x": 1, "y": [object()]})


def test_countdown_and_eta_are_exclusive():
    from django.utils import timezone

    with pytest.raises(ValueError, match="countdown or eta"):
        add.message((1, 2), countdown=1, eta=timezone.now())


def test_task_outside_worker_modules_is_refused_at_send():
    @task
    def local():
        return 1

    with pytest.raises(ConfigurationError, match="workers do not import"):
        local.message()
    with override_settings(JOBQUEUE={"TASK_MODULES": [__name__]}):
        assert worker_imports(__name__)
        assert local.message().task == local.name
        assert local.name.startswith(f"{__name__}.test_task_outside")


@pytest.mark.parametrize("options", [{"max_retries": -1}, {"retry_backoff": -1}, {"timeout": 0}])
def test_bad_task_options_fail_at_declaration(options):
    with pytest.raises(ConfigurationError):
        task(**options)(lambda: None)


def test_job_ids_are_uuid7_and_increase():
    ids = [new_job_id() for _ in range(1000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 1000
    assert all(uuid.UUID(i).version == 7 for i in ids)


def test_retry_delay_grows_with_jitter():
    for attempt in range(1, 6):
        ceiling = 2.0 * 2 ** (attempt - 1)
        delays = [retry_delay(2.0, attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


def test_batch_size_grows_on_fast_full_batches_and_shrinks_on_slow_ones():
    assert Consumer.next_batch_size(4, 4, 0.001) == 8
    assert Consumer.next_batch_size(100, 100, 0.001) == 100
    assert Consumer.next_batch_size(4, 2, 0.001) == 4
    assert Consumer.next_batch_size(8, 8, 1.0) == 4
    assert Consumer.next_batch_size(1, 1, 1.0) == 1


def declare(**options):
    return task(**options)(lambda: None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        # "|" separates a Redis message's fields: such a job would be stored and never queued.
        ({"name": "a|b"}, "task name 'a|b' holds '|'"),
        ({"queue": "a|b"}, "queue 'a|b' holds '|'"),
        ({"queue": "a,b"}, "queue 'a,b' holds ','"),
        ({"name": "two words"}, "holds ' '"),
        ({"name": "line\nbreak"}, r"holds '\n'"),
        ({"name": "add\u200b"}, "an invisible format character"),
        ({"queue": "default\ud800"}, "a lone surrogate"),
        ({"name": ""}, "task name must be a non-empty string"),
        ({"queue": ""}, "queue must be a non-empty string"),
        ({"name": "t" * 201}, "201 characters long; at most 200"),
        ({"queue": "q" * 101}, "101 characters long; at most 100"),
        ({"max_retries": 32768}, "max_retries must be an int from 0 to 32767"),
        ({"max_retries": -1}, "max_retries must be an int from 0 to 32767"),
        ({"max_retries": True}, "max_retries must be an int"),
        ({"max_retries": 2.0}, "max_retries must be an int"),
        ({"priority": 101}, "priority must be an int from -100 to 100"),
        ({"priority": -101}, "priority must be an int from -100 to 100"),
        ({"priority": True}, "priority must be an int from -100 to 100"),
        ({"timeout": 0}, "timeout must be a number of seconds > 0"),
        ({"timeout": -1}, "timeout must be a number of seconds > 0"),
        ({"timeout": math.nan}, "timeout must be a number of seconds > 0"),
        ({"timeout": math.inf}, "timeout must be a number of seconds > 0"),
        ({"timeout": "30"}, "timeout must be a number of seconds > 0"),
        ({"retry_backoff": -1}, "retry_backoff must be a number of seconds"),
        ({"retry_backoff": math.nan}, "retry_backoff must be a number of seconds"),
        ({"retry_backoff": "2"}, "retry_backoff must be a number of seconds"),
    ],
)
def test_bad_names_and_options_fail_at_declaration(options, message):
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        declare(**options)
    assert not [t for t in registry.all_tasks().values() if t.module == __name__ and
                t.name.endswith("<lambda>")]


def test_longest_names_and_options_that_fit_are_accepted():
    t = task(name="t" * 200, queue="q" * 100, max_retries=32767, priority=-100, timeout=0.5)(
        lambda: None)
    try:
        assert (t.name, t.queue, t.max_retries, t.priority) == ("t" * 200, "q" * 100, 32767, -100)
    finally:
        registry._tasks.pop(t.name)


def test_a_task_name_taken_by_another_module_is_refused():
    with pytest.raises(ConfigurationError, match="'tests.testapp.tasks.add' is taken by "
                                                 r"tests.testapp.tasks.add; give one"):
        task(name=add.name)(lambda: None)
    assert get_task(add.name) is add


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        # Only a queue of QUEUES is accepted, and QUEUES holds no unusable name.
        ({"queue": "a|b"}, ValueError, "unknown queue 'a|b'"),
        ({"queue": "q" * 101}, ValueError, "unknown queue 'qqqq"),
        ({"queue": ""}, ValueError, "unknown queue ''"),
        ({"priority": True}, ValueError, "priority must be an int from -100 to 100"),
        ({"countdown": math.nan}, ValueError, "countdown must be a number of seconds"),
        ({"countdown": 1e12}, ValueError, "countdown must be a number of seconds"),
        ({"countdown": "10"}, ValueError, "countdown must be a number of seconds"),
        ({"eta": "2030-01-01"}, ValueError, "eta must be an aware datetime"),
        ({"eta": datetime.date(2030, 1, 1)}, ValueError, "eta must be an aware datetime"),
        ({"eta": datetime.datetime(2030, 1, 1)}, ValueError, "eta must be an aware datetime"),
        ({"args": "12"}, TypeError, "args must be a list or tuple"),
        ({"args": {1: 2}}, TypeError, "args must be a list or tuple"),
        ({"args": (1,), "kwargs": [("y", 2)]}, TypeError, "kwargs must be a dict"),
    ],
)
def test_bad_apply_async_options_are_refused(options, error, message):
    options = {"args": (1, 2), **options}
    with pytest.raises(error, match=re.escape(message)):
        add.message(options.pop("args"), options.pop("kwargs", None), **options)


def test_options_changed_after_declaration_are_checked_at_send():
    t = task(name="tests.unit.test_task.changed", max_retries=1)(lambda: None)
    try:
        t.max_retries = 40000
        with override_settings(JOBQUEUE={"TASK_MODULES": [__name__]}), pytest.raises(
            ValueError, match="max_retries must be an int from 0 to 32767"
        ):
            t.message()
    finally:
        registry._tasks.pop(t.name)


def test_a_nested_argument_names_the_argument_instead_of_recursion_error():
    value = []
    for _ in range(500):
        value = [value]
    with pytest.raises(SerializationError, match=r"add\(\) argument 'y'\[0\]\[0\].*nested deeper"
                                                 " than 100"):
        add.message((1, value))


def _positional(a, b=2, /, c=3, *rest, d=4): ...
def _keyword_needed(a, *, b): ...
def _plain(a, b): ...
def _nothing(): ...


@pytest.mark.parametrize("func", [_positional, _keyword_needed, _plain, _nothing])
@pytest.mark.parametrize("args", [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4, 5)])
def test_positional_calls_bind_as_signature_bind_does(func, args):
    """Calls with positional arguments alone skip ``Signature.bind``: they must bind, or be
    refused, exactly as it would."""
    t = Task(func, name=f"tests.bind.{func.__name__}")
    with override_settings(JOBQUEUE={"TASK_MODULES": [__name__]}):
        check_binds_as_signature_does(t, func, args)


def check_binds_as_signature_does(t, func, args):
    try:
        bound = t.signature.bind(*args)
    except TypeError:
        with pytest.raises(TypeError, match=rf"tests\.bind\.{func.__name__}\(\): "):
            t.message(args)
        return
    expected = {"args": list(bound.args), "kwargs": bound.kwargs}
    assert json.loads(t.message(args).arguments) == expected


@override_settings(JOBQUEUE={"TASK_MODULES": [__name__]})
def test_a_replaced_signature_is_worked_out_again():
    t = Task(_nothing, name="tests.bind.replaced")
    with pytest.raises(TypeError, match="too many positional arguments"):
        t.message((1,))
    t.signature = inspect.signature(_plain)
    assert json.loads(t.message((1, 2)).arguments) == {"args": [1, 2], "kwargs": {}}
    with pytest.raises(TypeError, match="missing a required argument"):
        t.message((1,))


@override_settings(JOBQUEUE={"TASK_MODULES": [__name__]})
def test_a_refused_argument_is_named_by_position_past_the_named_ones():
    t = Task(_positional, name="tests.bind.named")
    with pytest.raises(SerializationError, match=r"named\(\) argument 'c': a builtins.set"):
        t.message((1, 2, {3}))
    with pytest.raises(SerializationError, match=r"named\(\) positional argument 4: a builtins"):
        t.message((1, 2, 3, 4, {5}))
    with pytest.raises(SerializationError, match=r"named\(\) argument 'd'\[0\]: a builtins"):
        t.message((1,), {"d": [{5}]})


def test_a_forked_child_draws_ids_of_its_own():
    """Random bytes are drawn ahead for ids: a child forked with them must not repeat them."""
    new_job_id()  # the parent has bytes drawn ahead
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, new_job_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    parent = new_job_id()
    # The random part (after the version nibble and the per-millisecond counter) differs.
    assert child[19:] != parent[19:]
