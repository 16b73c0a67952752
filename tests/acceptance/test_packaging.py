"""``pip install .`` (not only an editable install) must carry everything the app needs.

Under tox the package is built as a wheel and installed, so its RECORD is the proof.
"""

import json
import subprocess
import sys
from importlib.metadata import distribution

import pytest


def test_installed_package_has_migrations_templates_static_and_types():
    dist = distribution("jobqueue")
    direct_url = dist.read_text("direct_url.json")
    if direct_url and json.loads(direct_url).get("dir_info", {}).get("editable"):
        pytest.skip("an editable install ships nothing: run through tests/run (tox builds a wheel)")
    names = {str(f) for f in dist.files or ()}
    expected = {
        "jobqueue/py.typed",
        "jobqueue/migrations/0001_initial.py",
        "jobqueue/migrations/0002_notify_trigger.py",
        "jobqueue/management/commands/jobworker.py",
    }
    assert expected <= names
    assert any(n.startswith("jobqueue/templates/") and n.endswith(".html") for n in names)
    assert any(n.startswith("jobqueue/static/jobqueue/") for n in names)
    assert not any(n.startswith(("tests/", "demo_project/")) for n in names)


def test_every_module_imports_without_a_postgresql_driver(tmp_path):
    """A SQLite site with the Redis broker installs neither psycopg nor psycopg2."""
    script = """
import pkgutil, sys
sys.modules["psycopg"] = sys.modules["psycopg2"] = None  # as if not installed
import django
from django.conf import settings
settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth",
                    "django.contrib.admin", "jobqueue"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    JOBQUEUE={"BROKER": {"BACKEND": "jobqueue.brokers.redis.RedisBroker",
                         "OPTIONS": {"url": "redis://127.0.0.1:1/0"}}},
)
django.setup()
import jobqueue
for module in pkgutil.walk_packages(jobqueue.__path__, "jobqueue."):
    __import__(module.name)
print("imported")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported"
