import importlib
import os
import subprocess
import sys
import textwrap

import pytest
from django.conf import settings
from django.test import override_settings

from jobqueue import registry
from jobqueue.exceptions import ConfigurationError

PACKAGE = "tests.unit.task_package"


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def task_package():
    """``task_package`` in TASK_MODULES, as a test's ``override_settings`` sets it (no more:
    the change of settings imports it, as a worker started with them would)."""
    with override_settings(JOBQUEUE={**settings.JOBQUEUE, "TASK_MODULES": [PACKAGE]}):
        yield
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]
        registry._loaded_at_start.discard(name)
    for name in [n for n, t in registry.all_tasks().items() if t.module.startswith(PACKAGE)]:
        registry._tasks.pop(name)


def test_a_submodule_that_its_tasks_package_imports_is_accepted(task_package):
    package = importlib.import_module(PACKAGE)  # as the test would, after override_settings
    included = package.included
    assert registry.worker_imports(PACKAGE)
    assert included.ping.message().task == f"{PACKAGE}.included.ping"


def test_a_submodule_workers_do_not_import_is_refused_at_send(task_package):
    orphan = importlib.import_module(f"{PACKAGE}.orphan")  # after start, as a view would
    assert not registry.worker_imports(f"{PACKAGE}.orphan")
    with pytest.raises(ConfigurationError, match=rf"'{PACKAGE}.orphan', which workers do not"):
        orphan.pong.delay()


def test_tasks_of_installed_apps_are_found_at_start():
    assert registry.worker_imports("tests.testapp.tasks")
    assert registry.worker_imports("demo_project.shootr.tasks")
    assert not registry.worker_imports("tests.testapp.models")
    assert not registry.worker_imports("tests.testapp.tasks_extra")


def start(settings_module, code):
    """Run ``code`` in a new process set up with ``settings_module``; return what it printed."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": settings_module}
    script = "import django\ndjango.setup()\n" + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


SEND = """
from tests.unit.startup.readyapp.tasks import billing
try:
    print(billing.charge.message((1,)).task)
except Exception as exc:
    print(type(exc).__name__, exc)
"""


def test_a_tasks_submodule_imported_by_a_later_apps_ready_is_accepted():
    """readyapp comes after jobqueue in INSTALLED_APPS: its ready() imports the submodule after
    jobqueue's discovery, in workers as in this process."""
    out = start("tests.unit.startup.settings_readyapp", SEND)
    assert out.strip() == "tests.unit.startup.readyapp.tasks.billing.charge"


def test_submodules_loaded_at_start_are_accepted_once_bad_settings_are_fixed():
    """Discovery skipped at start (the settings could not be used) refuses nothing for good."""
    out = start("tests.unit.startup.settings_readyapp_bad", f"""
        from django.conf import settings
        from django.test import override_settings
        good = {{**settings.JOBQUEUE, "QUEUES": ["default"], "TASK_MODULES": ["{PACKAGE}"]}}
        with override_settings(JOBQUEUE=good):
            from tests.unit.startup.readyapp.tasks import billing
            from {PACKAGE} import included
            for t in (billing.charge, included.ping):
                try:
                    print(t.message((1,) if t is billing.charge else ()).task)
                except Exception as exc:
                    print(type(exc).__name__, exc)
        """)
    assert out.split() == ["tests.unit.startup.readyapp.tasks.billing.charge",
                           f"{PACKAGE}.included.ping"]


def test_a_bad_task_in_an_installed_app_stops_manage_py_check_with_a_readable_error():
    """A programming error: raised at declaration, so every command stops at django.setup();
    the traceback's last line names the task, its file and line, and what is wrong."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.unit.startup.settings_badapp"}
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=60)
    assert done.returncode == 1
    path = os.path.join(ROOT, "tests", "unit", "startup", "badapp", "tasks.py")
    assert done.stderr.strip().splitlines()[-1] == (
        "jobqueue.exceptions.ConfigurationError: @task tests.unit.startup.badapp.tasks.report "
        f"({path}, line 4): queue 'nightly reports' holds ' '; a name may hold no '|', ',', "
        "whitespace, control or invisible format character, or lone surrogate")
