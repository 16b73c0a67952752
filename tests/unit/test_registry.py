import importlib
import sys

import pytest
from django.conf import settings
from django.test import override_settings

from jobqueue import registry
from jobqueue.exceptions import ConfigurationError

PACKAGE = "tests.unit.task_package"


@pytest.fixture
def task_package():
    """``task_package`` as a worker started with it in TASK_MODULES would load it."""
    saved = registry._loaded_at_start
    with override_settings(JOBQUEUE={**settings.JOBQUEUE, "TASK_MODULES": [PACKAGE]}):
        registry.discover()  # what AppConfig.ready does in every process
        yield
    registry._loaded_at_start = saved
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]
    for name in [n for n, t in registry.all_tasks().items() if t.module.startswith(PACKAGE)]:
        registry._tasks.pop(name)


def test_a_submodule_that_its_tasks_package_imports_is_accepted(task_package):
    included = sys.modules[f"{PACKAGE}.included"]
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
