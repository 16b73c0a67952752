"""The schedule admin through Django's test client: the form's checks and preview, run now,
pause and resume, and the job list filtered by schedule."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from jobqueue.models import Job, Schedule, ScheduleTick
from jobqueue.schedules import Cron, zone
from tests.integration import schedule_tasks  # noqa: F401 (registers the tasks)

TASKS = "tests.integration.schedule_tasks"
GREET = f"{TASKS}.greet"
pytestmark = [pytest.mark.jobqueue(TASK_MODULES=[TASKS]), pytest.mark.django_db]

CHANGELIST = "admin:jobqueue_schedule_changelist"


def form_data(**fields: Any) -> dict[str, Any]:
    data = {"name": "nightly", "task": GREET, "enabled": "on", "cron": "0 3 * * *",
            "interval": "", "timezone": "Europe/Paris", "args": "[]",
            "kwargs": '{"name": "ada"}', "queue": "", "priority": "", "catch_up": "latest",
            "max_delay": ""}
    data.update(fields)
    return {k: v for k, v in data.items() if v is not None}


def make(**fields: Any) -> Schedule:
    values: dict[str, Any] = {"name": "nightly", "task": GREET, "cron": "0 3 * * *",
                              "timezone": "Europe/Paris", "kwargs": {"name": "ada"}}
    values.update(fields)
    return Schedule.objects.create(**values)


def post_action(client: Client, action: str, schedules: list[Schedule]) -> Any:
    return client.post(reverse(CHANGELIST), {
        "action": action, "_selected_action": [str(s.pk) for s in schedules], "index": 0,
    }, follow=True)


@pytest.fixture
def admin_client(broker, admin_user) -> Client:
    """A superuser, on each broker (run now sends through it)."""
    client = Client()
    client.force_login(admin_user)
    return client


def test_staff_only(client: Client, django_user_model: type[User]) -> None:
    user = django_user_model.objects.create_user("someone", password="pw")
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="jobqueue"))
    client.force_login(user)
    for url in (reverse(CHANGELIST), reverse("admin:jobqueue_schedule_preview")):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_a_schedule_made_in_the_admin_is_saved_and_previewed(admin_client):
    response = admin_client.post(reverse("admin:jobqueue_schedule_add"), form_data())
    assert response.status_code == 302, response.context["adminform"].form.errors
    schedule = Schedule.objects.get(name="nightly")
    assert (schedule.origin, schedule.kwargs, schedule.enabled) == ("admin", {"name": "ada"}, True)
    page = admin_client.get(reverse("admin:jobqueue_schedule_change", args=[schedule.pk]))
    content = page.content.decode()
    upcoming = Cron("0 3 * * *", "Europe/Paris").upcoming(timezone.now(), 5)
    assert content.count("03:00:00 CE") == 5  # five runs at 03:00 Paris time, CET or CEST
    assert upcoming[0].astimezone(zone("Europe/Paris")).strftime("%Y-%m-%d") in content


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"cron": "0 25 * * *"}, "cron", "Bad hour"),
    ({"cron": "", "interval": ""}, None, "exactly one"),
    ({"interval": "60"}, None, "exactly one"),
    ({"timezone": "Europe/Atlantis"}, "timezone", "unknown time zone"),
    ({"kwargs": '{"name": "ada", "nom": 1}'}, None, "unexpected keyword argument 'nom'"),
    ({"kwargs": "{}"}, None, "missing a required argument: 'name'"),
    ({"args": '{"a": 1}'}, None, "args must be a JSON list"),
    ({"queue": "nowhere"}, "queue", "unknown queue 'nowhere'"),
    ({"priority": "500"}, "priority", "priority must be an int from -100 to 100"),
    ({"task": "tests.integration.schedule_tasks.nope"}, "task", "valid choice"),
])
def test_bad_input_is_refused_at_save_with_the_reason(admin_client, fields, field, message):
    response = admin_client.post(reverse("admin:jobqueue_schedule_add"), form_data(**fields))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert message in " ".join(errors.get(field or "__all__", [])), errors
    assert not Schedule.objects.exists()


def test_the_live_preview(admin_client):
    url = reverse("admin:jobqueue_schedule_preview")
    data = admin_client.get(url, {"cron": "30 2 * * *", "timezone": "America/New_York"}).json()
    assert len(data["times"]) == 5 and data["error"] == ""
    assert all("02:30:00 E" in t or "03:00:00 EDT" in t for t in data["times"])
    data = admin_client.get(url, {"interval": "90"}).json()
    assert len(data["times"]) == 5
    assert admin_client.get(url, {"cron": "nope"}).json()["error"].startswith("cron 'nope'")


def test_run_now_sends_a_job_linked_to_the_schedule(admin_client, broker):
    schedule = make()
    response = post_action(admin_client, "run_now", [schedule])
    tick = ScheduleTick.objects.get(schedule=schedule)
    assert tick.manual
    [note] = [str(m) for m in response.context["messages"]]
    assert note.startswith(f'nightly: job <a href="/admin/jobqueue/job/{tick.job_id}/change/">')
    schedule.refresh_from_db()
    assert schedule.last_job_id == tick.job_id and schedule.last_tick is None
    # the list shows the last run, linked to its job; the job list filters by schedule
    other = make(name="other")
    post_action(admin_client, "run_now", [other])
    listing = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert f"/admin/jobqueue/job/{tick.job_id}/change/" in listing
    broker.sync()
    jobs = admin_client.get(reverse("admin:jobqueue_job_changelist"),
                            {"schedule": str(schedule.pk)}).context["cl"].result_list
    assert [str(j.id) for j in jobs] == [str(tick.job_id)]
    page = admin_client.get(reverse("admin:jobqueue_job_change", args=[tick.job_id]))
    assert (f'<a href="/admin/jobqueue/schedule/{schedule.pk}/change/">nightly</a> (run now / '
            "sent at " in page.content.decode())
    assert Job.objects.count() == 2


def test_pause_and_resume(admin_client):
    schedule = make(since=timezone.now() - timedelta(days=3))
    post_action(admin_client, "pause", [schedule])
    schedule.refresh_from_db()
    assert not schedule.enabled
    assert "paused" in admin_client.get(reverse(CHANGELIST)).content.decode()
    before = timezone.now()
    post_action(admin_client, "resume", [schedule])
    schedule.refresh_from_db()
    assert schedule.enabled and schedule.since >= before  # no catch-up for the paused days


def test_an_edit_of_the_timing_owes_nothing_from_before(admin_client):
    schedule = make(since=timezone.now() - timedelta(days=3))
    before = timezone.now()
    response = admin_client.post(reverse("admin:jobqueue_schedule_change", args=[schedule.pk]),
                                 form_data(cron="0 4 * * *"))
    assert response.status_code == 302
    schedule.refresh_from_db()
    assert schedule.cron == "0 4 * * *" and schedule.since >= before


def test_a_schedule_from_code_cannot_be_deleted(admin_client):
    schedule = make(origin="code")
    url = reverse("admin:jobqueue_schedule_delete", args=[schedule.pk])
    assert admin_client.get(url).status_code == 403


def test_a_job_page_shows_its_tick_and_when_it_was_sent(admin_client, broker):
    """A tick sent late (after downtime) shows both: the tick it was for, the time it was sent."""
    from jobqueue.scheduler import send

    now = timezone.now().replace(microsecond=0)
    schedule = make(cron="", interval=60, timezone="", since=now - timedelta(hours=2))
    tick = now - timedelta(hours=1)
    job_id = send(schedule, tick, now=now)
    broker.sync()
    job = Job.objects.get(pk=job_id)
    assert job.enqueued_at == now and ScheduleTick.objects.get(job_id=job_id).tick == tick
    page = admin_client.get(reverse("admin:jobqueue_job_change", args=[job_id])).content.decode()
    local = timezone.localtime
    assert (f"(tick {local(tick):%Y-%m-%d %H:%M:%S} / sent at {local(now):%Y-%m-%d %H:%M:%S})"
            in page)


def test_an_admin_save_never_writes_what_the_schedulers_own(admin_client, broker, admin_user):
    """The change form was loaded, a scheduler then sent a tick, then the form is saved: the
    tick stays sent (last_tick, last_job_id, last_run_at are the schedulers')."""
    from django.contrib.admin.sites import site
    from django.test import RequestFactory

    from jobqueue.admin import ScheduleForm
    from jobqueue.scheduler import send

    now = timezone.now()
    schedule = make(cron="", interval=60, timezone="", since=now - timedelta(hours=1))
    loaded = Schedule.objects.get(pk=schedule.pk)  # the change view reads the row
    tick = now.replace(second=0, microsecond=0)
    job_id = send(schedule, tick)  # a scheduler sends a tick
    form = ScheduleForm(form_data(cron="", interval="60", timezone="", kwargs='{"name": "bob"}'),
                        instance=loaded)
    assert form.is_valid(), form.errors
    request = RequestFactory().post("/")
    request.user = admin_user
    site._registry[Schedule].save_model(request, form.save(commit=False), form, True)
    schedule.refresh_from_db()
    assert schedule.kwargs == {"name": "bob"}  # the edit is saved
    assert (schedule.last_tick, str(schedule.last_job_id)) == (tick, job_id)  # and the tick kept
    assert schedule.last_run_at is not None
