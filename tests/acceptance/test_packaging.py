"""``pip install .`` (not only an editable install) must carry everything the app needs."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_ships_migrations_templates_static_and_types(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    [wheel] = tmp_path.glob("jobqueue-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {"jobqueue/py.typed", "jobqueue/migrations/0001_initial.py",
                "jobqueue/migrations/0002_notify_trigger.py",
                "jobqueue/management/commands/jobworker.py"}
    assert expected <= names
    assert any(n.startswith("jobqueue/templates/") and n.endswith(".html") for n in names)
    assert any(n.startswith("jobqueue/static/jobqueue/") for n in names)
    assert not any(n.startswith(("tests/", "demo_project/")) for n in names)
