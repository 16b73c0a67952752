"""The web side without a worker: what the form creates and sends, and what the page shows."""

import pytest

from demo_project.shootr.models import Bundle, Screenshot
from jobqueue import JobResult
from jobqueue.models import Job

pytestmark = [pytest.mark.demo, pytest.mark.urls("tests.demo.urls"),
              pytest.mark.django_db(transaction=True)]

TASK = "demo_project.shootr.tasks.make_screenshot"


def test_a_bundle_sends_one_job_per_url(client, allow_private):
    response = client.post("/", {"urls": "https://example.com/\nhttp://127.0.0.1:9/"})
    bundle = Bundle.objects.get()
    assert response.status_code == 302
    assert response["Location"] == bundle.get_absolute_url()
    shots = list(bundle.screenshots.all())
    assert [s.url for s in shots] == ["https://example.com/", "http://127.0.0.1:9/"]
    jobs = Job.objects.filter(task=TASK)
    assert sorted(str(job.id) for job in jobs) == sorted(s.job_id for s in shots)
    assert {job.status for job in jobs} == {"queued"}


def test_refused_input_creates_and_sends_nothing(client):
    response = client.post("/", {"urls": "https://example.com/\njavascript:alert(1)"})
    assert response.status_code == 200
    assert "Line 2: &#x27;javascript:&#x27; is not allowed" in response.text
    assert not Bundle.objects.exists()
    assert not Job.objects.exists()


def test_bundle_page_and_status(client):
    bundle = Bundle.objects.create()
    Screenshot.objects.create(bundle=bundle, position=1, url="https://a.example/")
    Screenshot.objects.create(bundle=bundle, position=2, url="https://b.example/",
                              status="failed", error="net::ERR_CONNECTION_REFUSED")
    page = client.get(bundle.get_absolute_url())
    assert page.status_code == 200
    assert page.text.count('data-status="queued"') == 1
    assert "net::ERR_CONNECTION_REFUSED" in page.text
    state = client.get(f"{bundle.get_absolute_url()}status.json").json()
    assert state["total"] == 2
    assert state["finished"] == 1
    assert state["settled"] is False
    assert [s["status"] for s in state["shots"]] == ["queued", "failed"]


def test_unknown_bundle_is_404(client):
    assert client.get("/b/00000000-0000-0000-0000-000000000000/").status_code == 404


def test_a_canceled_job_shows_its_screenshot_failed(client, allow_private):
    client.post("/", {"urls": "https://example.com/"})
    bundle = Bundle.objects.get()
    shot = bundle.screenshots.get()
    assert JobResult(shot.job_id).cancel()
    state = client.get(f"{bundle.get_absolute_url()}status.json").json()
    assert state["settled"] is True
    assert [(s["status"], s["error"]) for s in state["shots"]] == [
        ("failed", "the screenshot was not taken: the job was canceled")]
    # Written to the row, for the admin too.
    shot.refresh_from_db()
    assert (shot.status, shot.finished_at is not None) == ("failed", True)


def test_a_row_follows_its_job_until_the_job_is_final(client, allow_private):
    """The task may record an end (done, or failed for the page's fault) before the job's end
    is recorded, or while the job still has a retry to go: the page shows the job's state."""
    client.post("/", {"urls": "https://example.com/"})
    bundle = Bundle.objects.get()
    shot = bundle.screenshots.get()
    shot.mark_failed("net::ERR_CONNECTION_REFUSED")  # its job is still queued
    status_url = f"{bundle.get_absolute_url()}status.json"
    state = client.get(status_url).json()
    assert (state["settled"], [s["status"] for s in state["shots"]]) == (False, ["queued"])
    assert JobResult(shot.job_id).cancel()  # the job is final now: the row has the last word
    state = client.get(status_url).json()
    assert (state["settled"], [s["status"] for s in state["shots"]]) == (True, ["failed"])
    assert state["shots"][0]["error"] == "net::ERR_CONNECTION_REFUSED"
