import pytest
from django.core.management import CommandError, call_command

from jobqueue import names
from jobqueue.models import Job, Worker


def test_limits_are_those_of_the_columns():
    """names.py cannot read the models (tasks are declared while apps load): keep them in step."""
    assert Job._meta.get_field("task").max_length == names.TASK_NAME_MAX
    assert Worker._meta.get_field("current_task").max_length == names.TASK_NAME_MAX
    assert Job._meta.get_field("queue").max_length == names.QUEUE_NAME_MAX
    assert Job._meta.get_field("worker").max_length == names.WORKER_NAME_MAX
    assert Worker._meta.get_field("name").max_length == names.WORKER_NAME_MAX
    assert Worker._meta.get_field("queues").max_length == names.QUEUES_MAX


@pytest.mark.parametrize("name", ["default", "emails:high", "myapp.tasks.add", "café", "a/b-c_d"])
def test_ordinary_names_pass(name):
    assert names.problem("queue", name, 100) is None


@pytest.mark.parametrize(
    ("name", "message"),
    [("a|b", "holds '|'"), ("a,b", "holds ','"), ("a b", "holds ' '"), ("a\tb", r"holds '\t'"),
     ("a\x00", r"holds '\x00'"), ("a\x9f", r"holds '\x9f'"), ("a\u2028b", "holds"),
     ("", "non-empty string"), (None, "non-empty string"),
     ("x" * 11, "11 characters long; at most 10"),
     # Invisible: 'a\u200bb' looks like 'ab'; '\u202e' turns the rest of a log line around.
     ("a\u200bb", r"holds '\u200b', an invisible format character"),
     ("a\u202eb", r"holds '\u202e', an invisible format character"),
     ("\ufeffa", r"holds '\ufeff', an invisible format character"),
     # No UTF-8 encoder, and so no database column, stores a lone surrogate.
     ("t\ud800", r"holds '\ud800', a lone surrogate"),
     ("t\udc80", r"holds '\udc80', a lone surrogate")],
)
def test_unusable_names_are_explained(name, message):
    assert message in names.problem("queue", name, 10)


@pytest.mark.parametrize(
    ("name", "concurrency", "message"),
    [("w" * 199, 1, "199 characters long; at most 198"),
     ("w" * 198, 10, "198 characters long; at most 197"),
     ("a|b", 1, "holds '|'")],
)
def test_a_worker_name_that_cannot_be_stored_stops_the_command_at_start(name, concurrency,
                                                                         message):
    """Each process is recorded as <name>/<n> in Worker.name and Job.worker (200 characters)."""
    with pytest.raises(CommandError, match=message):
        call_command("jobworker", "--burst", name=name, concurrency=concurrency)


def test_the_longest_worker_name_that_fits():
    assert names.worker_name_problem("w" * 198, 9) is None
    assert names.worker_name_problem("w" * 197, 10) is None
