"""The demo's settings as a new user meets them: a fresh clone, and the defaults of ``run``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.demo

ROOT = Path(__file__).resolve().parent.parent.parent
# What a user's shell would not have set: the test run's own settings and databases.
SCRUBBED = ("DJANGO_SETTINGS_MODULE", "DEMO_DATA_DIR", "DATABASE_ENGINE", "DATABASE_NAME",
            "DJANGO_DEBUG", "SHOOTR_ALLOW_PRIVATE_HOSTS", "JOBQUEUE_BROKER", "PYTHONPATH")


def demo_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    return {**env, "DJANGO_SETTINGS_MODULE": "demo_project.settings", **extra}


@pytest.fixture
def fresh_clone(tmp_path: Path) -> Iterator[Path]:
    """A git clone of this checkout's HEAD: no ``var/``, nothing but what is committed."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    yield clone


def test_migrate_works_in_a_fresh_clone(fresh_clone: Path) -> None:
    assert not (fresh_clone / "var").exists()
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"], cwd=fresh_clone,
        env=demo_env(), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (fresh_clone / "var" / "demo.sqlite3").stat().st_size > 0


def private_hosts_allowed(**env: str) -> str:
    """What the demo's settings decide, asked of a separate process with only ``env`` set."""
    code = ("import django; django.setup(); "
            "from demo_project.shootr.urlsafety import private_access; print(private_access())")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env=demo_env(**env), timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_debug_alone_does_not_open_private_hosts(tmp_path: Path) -> None:
    data = str(tmp_path)
    assert private_hosts_allowed(DEMO_DATA_DIR=data) == "no private hosts"  # DEBUG is on by default
    assert private_hosts_allowed(DEMO_DATA_DIR=data, DJANGO_DEBUG="1") == "no private hosts"
    assert private_hosts_allowed(DEMO_DATA_DIR=data,
                                 SHOOTR_ALLOW_PRIVATE_HOSTS="1") == "all private hosts"
    assert private_hosts_allowed(DEMO_DATA_DIR=data,
                                 SHOOTR_ALLOW_PRIVATE_HOSTS="127.0.0.1:8000") == "127.0.0.1:8000"


def test_debug_setting_does_not_open_private_hosts_to_the_form(settings, monkeypatch) -> None:
    from demo_project.shootr.forms import BundleForm

    monkeypatch.delenv("SHOOTR_ALLOW_PRIVATE_HOSTS", raising=False)
    settings.DEBUG = True
    del settings.SHOOTR_ALLOW_PRIVATE_HOSTS
    form = BundleForm({"urls": "http://127.0.0.1:8000/"})
    assert not form.is_valid()
    assert "loopback" in form.errors["urls"][0]


@pytest.mark.parametrize("value", ["localhost:8000", "127.0.0.1:http", ["10.0.0.5", "nope"], 8000])
def test_a_malformed_allow_private_hosts_is_refused_at_startup(settings, value) -> None:
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.SHOOTR_ALLOW_PRIVATE_HOSTS = value
    with pytest.raises(SystemCheckError, match=r"shootr\.E001.*SHOOTR_ALLOW_PRIVATE_HOSTS"):
        call_command("check")
    settings.SHOOTR_ALLOW_PRIVATE_HOSTS = "127.0.0.1:8000, [::1]:8000"
    call_command("check")
