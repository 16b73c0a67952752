"""One virtual environment per library under bench/.venvs/, with pinned versions from PyPI.

Each environment holds one queue library and the same client stack (redis-py with hiredis,
psycopg 3, Django 5.2), so the libraries differ in their own code only. An environment is built
once and rebuilt when its pins change (a stamp file records them).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENVS = BENCH / ".venvs"
PYTHON_VERSION = "3.12"

COMMON = ["redis[hiredis]==8.1.0", "hiredis==3.5.0"]
DJANGO = ["Django==5.2.19", "psycopg[binary]==3.3.9"]

# name -> pip requirement lines (pinned). "jobqueue" is this checkout, editable.
ENVS: dict[str, list[str]] = {
    "jobqueue": [
        "-e",
        f"{ROOT}[redis,postgres]",
        *DJANGO,
        *COMMON,
        "django-redis==7.0.0",
        # The django.tasks row: Django 5.2 has the tasks framework from the backport package.
        "django-tasks==0.12.0",
        "matplotlib==3.11.2",
        "py-spy==0.4.3",
    ],
    "celery": ["celery[redis]==5.7.0", *COMMON],
    "rq": ["rq==3.0.0", *COMMON],
    "dramatiq": ["dramatiq[redis]==2.2.1", *COMMON],
    "huey": ["huey==3.5.4", *COMMON],
    "django-tasks-db": [
        "django-tasks-db[compat]==0.13.0",
        "django-tasks==0.12.0",
        *DJANGO,
        *COMMON,
    ],
}


def find_python() -> str:
    """pyenv's Python 3.12 when there is one, else the Python running this."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if root.is_dir():
        for candidate in sorted(root.iterdir(), reverse=True):
            if candidate.name.startswith(PYTHON_VERSION + "."):
                exe = candidate / "bin" / "python3"
                if exe.exists():
                    return str(exe)
    return sys.executable


def python(name: str) -> str:
    return str(VENVS / name / "bin" / "python")


def bin_path(name: str, program: str) -> str:
    return str(VENVS / name / "bin" / program)


def ensure(name: str, log=print) -> str:
    """Build (or reuse) the environment ``name``; returns its python."""
    reqs = ENVS[name]
    stamp_value = hashlib.sha256("\n".join(reqs).encode()).hexdigest()
    env_dir = VENVS / name
    stamp = env_dir / ".bench-stamp"
    if stamp.exists() and stamp.read_text() == stamp_value and Path(python(name)).exists():
        return python(name)
    log(f"  building venv {name}: {' '.join(r for r in reqs if r != '-e')}")
    VENVS.mkdir(exist_ok=True)
    (VENVS / ".gitignore").write_text("*\n")
    subprocess.run([find_python(), "-m", "venv", "--clear", str(env_dir)], check=True)
    pip = [python(name), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip==26.3"], check=True)
    subprocess.run([*pip, *reqs], check=True)
    stamp.write_text(stamp_value)
    return python(name)


def main() -> None:
    names = sys.argv[1:] or list(ENVS)
    for name in names:
        ensure(name)


if __name__ == "__main__":
    main()
