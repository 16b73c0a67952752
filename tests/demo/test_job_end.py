"""A screenshot whose job ends without the task's word (killed by its timeout): the bundle page
shows the job's real end, with a real worker that really kills the run."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import override_settings

from demo_project.shootr.models import Bundle, Screenshot
from demo_project.shootr.tasks import make_screenshot
from jobqueue.models import Job
from tests.conftest import wait_until

pytestmark = [pytest.mark.demo, pytest.mark.urls("tests.demo.urls"),
              pytest.mark.django_db(transaction=True)]

# Long enough for the worker to start Chromium and ask for the page, far shorter than the 20 s
# the page would be given to load: the worker's kill ends the run, never the task.
JOB_TIMEOUT = 10.0


def test_a_screenshot_killed_by_its_timeout_shows_failed(
    client: Any, jobworker: Any, hanging_page: Any, media_root: Path, allow_private: None,
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
) -> None:
    monkeypatch.setattr(make_screenshot, "timeout", JOB_TIMEOUT)  # carried by the message
    worker_tmp = Path(tempfile.mkdtemp(prefix="shootr-w-"))
    request.addfinalizer(lambda: shutil.rmtree(worker_tmp, ignore_errors=True))
    jobworker("--concurrency", "1", env={
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE",
                                                 django_settings.SETTINGS_MODULE),
        "SHOOTR_ALLOW_PRIVATE_HOSTS": "1",
        "SHOOTR_MEDIA_ROOT": str(media_root),
        "TMPDIR": str(worker_tmp),
    })

    response = client.post("/", {"urls": f"{hanging_page.url}/slow"})
    assert response.status_code == 302
    bundle = Bundle.objects.get()
    shot = bundle.screenshots.get()
    status_url = f"{bundle.get_absolute_url()}status.json"

    # The first run is killed; while its retry waits, the page says queued, not started.
    wait_until(lambda: Job.objects.filter(id=shot.job_id, status__in=("scheduled", "queued"),
                                          attempts=1).exists(),
               timeout=60, message="the first run to be killed")
    wait_until(lambda: client.get(status_url).json()["shots"][0]["status"] in ("queued",
                                                                                "started"),
               timeout=5, message="the page to follow the job")

    wait_until(lambda: Job.objects.filter(id=shot.job_id, status="failed").exists(),
               timeout=90, message="the job to fail after its retry")
    job = Job.objects.get(id=shot.job_id)
    assert job.attempts == 2
    assert "exceeded its timeout" in job.error
    # The runs really asked for the page (each one, unless a slow Chromium start used up its
    # time), and none reached the task's failure branch.
    assert hanging_page.paths and set(hanging_page.paths) == {"/slow"}
    assert len(hanging_page.paths) <= job.attempts
    assert Screenshot.objects.get(pk=shot.pk).status == "started"

    state = client.get(status_url).json()
    assert state["settled"] is True
    assert state["counts"]["failed"] == 1
    [shown] = state["shots"]
    assert shown["status"] == "failed"
    assert f"exceeded its timeout of {JOB_TIMEOUT:g} s" in shown["error"]
    page = client.get(bundle.get_absolute_url()).text
    assert 'data-status="failed"' in page
    assert 'data-state="settled"' in page
    # Recorded once, for the admin too.
    row = Screenshot.objects.get(pk=shot.pk)
    assert row.status == "failed"
    assert row.finished_at == job.ended_at


def test_a_page_that_cannot_be_loaded_is_not_tried_again(
    client: Any, jobworker: Any, closed_port: int, media_root: Path,
    request: pytest.FixtureRequest,
) -> None:
    """The page's own fault ends the job at once: no retry, the page settled only then."""
    worker_tmp = Path(tempfile.mkdtemp(prefix="shootr-w-"))
    request.addfinalizer(lambda: shutil.rmtree(worker_tmp, ignore_errors=True))
    jobworker("--concurrency", "1", env={
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE",
                                                 django_settings.SETTINGS_MODULE),
        "SHOOTR_ALLOW_PRIVATE_HOSTS": "1",
        "SHOOTR_MEDIA_ROOT": str(media_root),
        "TMPDIR": str(worker_tmp),
    })
    with override_settings(SHOOTR_ALLOW_PRIVATE_HOSTS=True):
        client.post("/", {"urls": f"http://127.0.0.1:{closed_port}/"})
    bundle = Bundle.objects.get()
    shot = bundle.screenshots.get()
    wait_until(lambda: Job.objects.filter(id=shot.job_id, status__in=("succeeded", "failed"))
               .exists(), timeout=60, message="the job to end")
    job = Job.objects.get(id=shot.job_id)
    assert (job.status, job.attempts) == ("succeeded", 1)
    row = Screenshot.objects.get(pk=shot.pk)
    assert (row.status, row.attempts) == ("failed", 1)
    assert "net::ERR_CONNECTION_REFUSED" in row.error
    state = client.get(f"{bundle.get_absolute_url()}status.json").json()
    assert state["settled"] is True
    assert [s["status"] for s in state["shots"]] == ["failed"]
