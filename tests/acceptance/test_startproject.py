"""A new site from ``django-admin startproject`` with jobqueue added, as the README tells."""

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATABASE = os.environ.get("DATABASE", "sqlite")

TASKS = '''
from jobqueue import task


@task
def add(x, y):
    return x + y


@task
def explode():
    raise RuntimeError("kaboom")
'''

SEND = '''
from shop.tasks import add, explode
ids = [add.delay(i, i).id for i in range(20)] + [explode.delay().id]
print("sent", len(ids))
'''

CHECK = '''
from django.contrib.auth.models import User
from django.test import Client
from jobqueue.models import Job
User.objects.create_superuser("admin", "a@example.com", "pw")
client = Client(HTTP_HOST="localhost")
client.force_login(User.objects.get(username="admin"))
page = client.get("/admin/jobqueue/job/?status__exact=succeeded").content.decode()
rows = page.count('name="_selected_action"')
print("succeeded", Job.objects.filter(status="succeeded").count(), rows)
failed = Job.objects.get(status="failed")
page = client.get(f"/admin/jobqueue/job/{failed.pk}/change/").content.decode()
print("traceback", "kaboom" in failed.traceback, "RuntimeError" in page)
'''


def run(args, cwd, env, timeout=120):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture
def database_settings():
    if DATABASE != "postgresql":
        yield ""
        return
    import psycopg

    name = f"jobqueue_startproject_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    yield textwrap.dedent(f"""
        DATABASES = {{"default": {{"ENGINE": "django.db.backends.postgresql", "NAME": "{name}",
                      "USER": "postgres", "HOST": "127.0.0.1"}}}}
    """)
    admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.close()


def test_startproject_site_runs_jobs_with_two_burst_workers(tmp_path, database_settings):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "JOBQUEUE_"))}
    env["PYTHONPATH"] = str(ROOT)  # jobqueue itself, as an installed package would be
    python = sys.executable
    run([python, "-m", "django", "startproject", "mysite", "."], tmp_path, env)
    run([python, "manage.py", "startapp", "shop"], tmp_path, env)
    (tmp_path / "shop" / "tasks.py").write_text(TASKS)
    settings = tmp_path / "mysite" / "settings.py"
    text = settings.read_text().replace(
        "INSTALLED_APPS = [", 'INSTALLED_APPS = [\n    "jobqueue",\n    "shop",'
    )
    settings.write_text(text + database_settings)

    run([python, "manage.py", "migrate", "-v0"], tmp_path, env)
    shell = [python, "manage.py", "shell", "-v", "0", "-c"]
    assert run([*shell, SEND], tmp_path, env).split() == ["sent", "21"]
    workers = [
        subprocess.Popen([python, "manage.py", "jobworker", "--burst", "--name", f"w{i}"],
                         cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=120)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    assert "database is locked" not in "".join(outputs)

    out = run([*shell, CHECK], tmp_path, env).split("\n")
    assert out[0] == "succeeded 20 20"
    assert out[1] == "traceback True True"
    assert "1" in run([python, "manage.py", "jobrequeue", "--all"], tmp_path, env)
    count = "from jobqueue.models import Job; print(Job.objects.filter(status='queued').count())"
    assert run([*shell, count], tmp_path, env).strip() == "1"
