"""``pip install .`` (not only an editable install) must carry everything the app needs.

Under tox the package is built as a wheel and installed, so its RECORD is the proof.
"""

import json
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
