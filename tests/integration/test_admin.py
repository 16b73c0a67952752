"""The admin: read-only job and worker pages, requeue and cancel actions, and no full count."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from jobqueue.conf import get_settings
from jobqueue.message import new_job_id
from jobqueue.models import Job, Worker
from jobqueue.paginator import EstimatedCountPaginator, estimated_rows
from jobqueue.registry import all_tasks
from jobqueue.states import FINISHED, JobStatus

pytestmark = pytest.mark.django_db

ADD = "tests.testapp.tasks.add"
URGENT = "tests.testapp.tasks.urgent"
CHANGELIST = "admin:jobqueue_job_changelist"
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "tests/testapp/tasks.py", line 36, in fail\n'
    "    raise ValueError(message)\n"
    "ValueError: <boom & bust>\n"
)


def make_job(status: str = JobStatus.QUEUED, *, task: str = ADD, queue: str = "default",
             **fields: Any) -> Job:
    now = timezone.now()
    values: dict[str, Any] = {
        "id": uuid.UUID(new_job_id()), "task": task, "queue": queue, "status": status,
        "arguments": json.dumps({"args": [2, 3], "kwargs": {}}), "enqueued_at": now,
        "run_at": now,
    }
    if status not in (JobStatus.QUEUED, JobStatus.SCHEDULED):
        values.update(attempts=1, worker="host.1/1", started_at=now)
    if status in FINISHED:
        values["ended_at"] = now + timedelta(seconds=1.5)
    if status == JobStatus.SUCCEEDED:
        values["result"] = "5"
    if status == JobStatus.FAILED:
        values.update(error="ValueError: <boom & bust>", traceback=TRACEBACK)
    values.update(fields)
    return Job.objects.create(**values)


def staff_client(*codenames: str) -> Client:
    """A logged-in staff user (not a superuser) with only the given jobqueue permissions."""
    user = User.objects.create_user("staff", password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="jobqueue", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


def changelist(client: Client, **params: str) -> Any:
    response = client.get(reverse(CHANGELIST), params)
    assert response.status_code == 200
    return response


def listed_ids(response: Any) -> set[str]:
    return {str(job.id) for job in response.context["cl"].result_list}


def run_action(client: Client, action: str, jobs: list[Job]) -> Any:
    return client.post(reverse(CHANGELIST), {
        "action": action,
        "_selected_action": [str(job.id) for job in jobs],
        "index": 0,
    })


def unbounded_job_counts(queries: list[dict[str, str]]) -> list[str]:
    """COUNT queries over the job table with no LIMIT: each reads every row it counts."""
    return [
        q["sql"] for q in queries
        if "COUNT(" in q["sql"].upper() and Job._meta.db_table in q["sql"]
        and "LIMIT" not in q["sql"].upper()
    ]


# -- access ------------------------------------------------------------------------------------
def test_anonymous_user_is_sent_to_login(client: Client) -> None:
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_non_staff_user_is_sent_to_login(client: Client, django_user_model: type[User]) -> None:
    user = django_user_model.objects.create_user("someone", password="pw")
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="jobqueue"))
    client.force_login(user)
    for url in (reverse(CHANGELIST), reverse("admin:jobqueue_worker_changelist")):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


# -- the list ----------------------------------------------------------------------------------
def test_list_shows_every_status_coloured(admin_client: Client) -> None:
    jobs = [make_job(status) for status in JobStatus.values]
    response = changelist(admin_client)
    content = response.content.decode()
    assert listed_ids(response) == {str(job.id) for job in jobs}
    for status in JobStatus.values:
        assert f'class="jobqueue-status jobqueue-status-{status}"' in content
    assert "jobqueue/admin.css" in content
    assert "1.50 s" in content  # the finished jobs' duration


def test_list_is_newest_first(admin_client: Client) -> None:
    now = timezone.now()
    new = make_job(enqueued_at=now)
    old = make_job(enqueued_at=now - timedelta(hours=1))  # a later id: not the order by id
    jobs = list(changelist(admin_client).context["cl"].result_list)
    assert [job.id for job in jobs] == [new.id, old.id]


def test_filters_by_status_queue_and_task(admin_client: Client) -> None:
    failed = make_job(JobStatus.FAILED)
    high = make_job(queue="high", task=URGENT)
    make_job(queue="low")

    assert listed_ids(changelist(admin_client, status__exact="failed")) == {str(failed.id)}
    assert listed_ids(changelist(admin_client, queue="high")) == {str(high.id)}
    assert listed_ids(changelist(admin_client, task=URGENT)) == {str(high.id)}
    assert listed_ids(changelist(admin_client, queue="high", status__exact="failed")) == set()


def test_filter_choices_come_from_settings_and_registry(admin_client: Client) -> None:
    make_job(queue="low", task="a.task.that.was.removed")
    with CaptureQueriesContext(connection) as queries:
        response = changelist(admin_client)
    specs = {spec.parameter_name: spec for spec in response.context["cl"].filter_specs
             if hasattr(spec, "parameter_name")}
    assert [value for value, _ in specs["queue"].lookup_choices] == list(get_settings().QUEUES)
    assert [value for value, _ in specs["task"].lookup_choices] == sorted(all_tasks())
    assert not [q["sql"] for q in queries.captured_queries if "DISTINCT" in q["sql"].upper()]


def test_search_by_id_and_by_task(admin_client: Client) -> None:
    wanted = make_job()
    urgent = make_job(task=URGENT, queue="high")
    make_job()
    assert listed_ids(changelist(admin_client, q=str(wanted.id))) == {str(wanted.id)}
    assert listed_ids(changelist(admin_client, q=str(wanted.id).upper())) == {str(wanted.id)}
    assert listed_ids(changelist(admin_client, q="urgent")) == {str(urgent.id)}
    assert listed_ids(changelist(admin_client, q="no-such-thing")) == set()


@pytest.mark.parametrize("params", [{}, {"status__exact": "queued"}, {"q": "add"},
                                    {"queue": "default", "p": "1"}])
def test_list_never_counts_the_whole_table(admin_client: Client, params: dict[str, str]) -> None:
    for _ in range(60):  # more than a page, so pagination runs
        make_job()
    with CaptureQueriesContext(connection) as queries:
        response = changelist(admin_client, **params)
    assert unbounded_job_counts(queries.captured_queries) == []
    assert response.context["cl"].result_count == 60
    assert len(response.context["cl"].result_list) == 50


def test_capped_count_is_shown_as_a_lower_bound(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(EstimatedCountPaginator, "cap", 3)
    for _ in range(5):
        make_job()
    # Filtered, so no estimate applies whatever the planner statistics say.
    response = changelist(admin_client, queue="default")
    assert response.context["cl"].result_count == 3
    assert "more than 3 jobs" in " ".join(response.content.decode().split())


# -- the paginator -----------------------------------------------------------------------------
def test_paginator_counts_exactly_up_to_its_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(EstimatedCountPaginator, "cap", 4)
    for _ in range(3):
        make_job()
    exact = EstimatedCountPaginator(Job.objects.filter(queue="default"), 2)
    assert (exact.count, exact.count_is_exact, exact.num_pages) == (3, True, 2)
    make_job()
    make_job()
    capped = EstimatedCountPaginator(Job.objects.filter(queue="default"), 2)
    assert (capped.count, capped.count_is_exact, capped.count_is_capped) == (4, False, True)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="pg_class is PostgreSQL's")
def test_paginator_uses_the_planner_estimate_on_a_big_unfiltered_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for _ in range(6):
        make_job()
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {connection.ops.quote_name(Job._meta.db_table)}")
    estimate = estimated_rows(Job, "default")
    assert estimate is not None and estimate >= 6
    monkeypatch.setattr(EstimatedCountPaginator, "cap", 2)
    paginator = EstimatedCountPaginator(Job.objects.all(), 10)
    with CaptureQueriesContext(connection) as queries:
        assert paginator.count == estimate
    assert not paginator.count_is_exact
    assert not [q for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]


# -- the detail page ---------------------------------------------------------------------------
def test_detail_shows_pretty_arguments_result_and_traceback(admin_client: Client) -> None:
    payload = {"args": [2, 3], "kwargs": {"name": "<b>x</b>", "tags": ["a", "b"]}}
    job = make_job(JobStatus.FAILED, arguments=json.dumps(payload), result='{"partial": [1, 2]}')
    response = admin_client.get(reverse("admin:jobqueue_job_change", args=[job.id]))
    assert response.status_code == 200
    content = response.content.decode()
    assert escape(json.dumps(payload, indent=2)) in content
    assert escape(json.dumps({"partial": [1, 2]}, indent=2)) in content
    assert escape(TRACEBACK) in content
    assert "<boom & bust>" not in content  # escaped, never raw HTML
    assert 'class="jobqueue-status jobqueue-status-failed"' in content


def test_detail_lists_only_the_failed_attempts_of_the_current_run(admin_client: Client) -> None:
    from jobqueue.models import JobAttempt

    job = make_job(JobStatus.STARTED)  # attempt 1 of a run that was requeued after 2 failures
    for number in (1, 2):  # the old run's attempts, which tracking has not forgotten yet
        JobAttempt.objects.create(
            job=job, number=number, version=number, worker=f"old.{number}/1",
            error=f"ValueError: old {number}", ended_at=timezone.now(),
        )
    content = admin_client.get(reverse("admin:jobqueue_job_change", args=[job.id])).content
    assert b"old.1/1" in content
    assert b"old.2/1" not in content


def test_detail_is_read_only(admin_client: Client) -> None:
    job = make_job(JobStatus.FAILED)
    url = reverse("admin:jobqueue_job_change", args=[job.id])
    content = admin_client.get(url).content.decode()
    assert 'name="_save"' not in content
    for field in ("task", "queue", "status", "priority", "arguments"):
        assert f'name="{field}"' not in content
    response = admin_client.post(url, {"task": "evil", "status": "succeeded", "queue": "low"})
    assert response.status_code == 403
    job.refresh_from_db()
    assert (job.task, job.status, job.queue) == (ADD, JobStatus.FAILED, "default")


def test_jobs_cannot_be_added(admin_client: Client) -> None:
    assert admin_client.get(reverse("admin:jobqueue_job_add")).status_code == 403
    assert reverse("admin:jobqueue_job_add") not in changelist(admin_client).content.decode()


# -- actions -----------------------------------------------------------------------------------
def test_requeue_action_puts_failed_and_canceled_jobs_back(admin_client: Client) -> None:
    failed = make_job(JobStatus.FAILED, attempts=3)
    canceled = make_job(JobStatus.CANCELED)
    succeeded = make_job(JobStatus.SUCCEEDED)
    response = run_action(admin_client, "requeue_jobs", [failed, canceled, succeeded])
    assert response.status_code == 302
    for job in (failed, canceled):
        job.refresh_from_db()
        assert (job.status, job.attempts, job.traceback) == (JobStatus.QUEUED, 0, "")
    succeeded.refresh_from_db()
    assert succeeded.status == JobStatus.SUCCEEDED


def test_cancel_action_cancels_unfinished_jobs(admin_client: Client) -> None:
    queued = make_job()
    started = make_job(JobStatus.STARTED)
    succeeded = make_job(JobStatus.SUCCEEDED)
    response = run_action(admin_client, "cancel_jobs", [queued, started, succeeded])
    assert response.status_code == 302
    statuses = dict(Job.objects.values_list("id", "status"))
    assert statuses == {queued.id: JobStatus.CANCELED, started.id: JobStatus.CANCELED,
                        succeeded.id: JobStatus.SUCCEEDED}


def test_actions_are_not_run_by_a_get(admin_client: Client) -> None:
    failed = make_job(JobStatus.FAILED)
    admin_client.get(reverse(CHANGELIST), {"action": "requeue_jobs",
                                           "_selected_action": str(failed.id)})
    failed.refresh_from_db()
    assert failed.status == JobStatus.FAILED


def test_actions_are_refused_without_change_permission() -> None:
    client = staff_client("view_job")
    failed = make_job(JobStatus.FAILED)
    queued = make_job()
    assert "requeue_jobs" not in changelist(client).content.decode()
    run_action(client, "requeue_jobs", [failed])
    run_action(client, "cancel_jobs", [queued])
    statuses = dict(Job.objects.values_list("id", "status"))
    assert statuses == {failed.id: JobStatus.FAILED, queued.id: JobStatus.QUEUED}


def test_actions_need_only_the_change_permission() -> None:
    client = staff_client("view_job", "change_job")
    failed = make_job(JobStatus.FAILED)
    queued = make_job()
    run_action(client, "requeue_jobs", [failed])
    run_action(client, "cancel_jobs", [queued])
    statuses = dict(Job.objects.values_list("id", "status"))
    assert statuses == {failed.id: JobStatus.QUEUED, queued.id: JobStatus.CANCELED}


# -- workers -----------------------------------------------------------------------------------
def test_worker_list_shows_busy_and_idle_workers(admin_client: Client) -> None:
    job = make_job(JobStatus.STARTED)
    now = timezone.now()
    common = {"hostname": "host", "pid": 42, "queues": "high,default,low", "started_at": now,
              "last_seen": now}
    Worker.objects.create(name="host.42/1", current_job=job.id, current_task=ADD, jobs_done=7,
                          **common)
    Worker.objects.create(name="host.42/2", **common)
    response = admin_client.get(reverse("admin:jobqueue_worker_changelist"))
    assert response.status_code == 200
    content = response.content.decode()
    assert "host.42/1" in content and "host.42/2" in content
    assert 'jobqueue-worker-busy' in content and 'jobqueue-worker-idle' in content
    assert reverse("admin:jobqueue_job_change", args=[job.id]) in content
    assert reverse("admin:jobqueue_worker_add") not in content
    assert admin_client.get(reverse("admin:jobqueue_worker_add")).status_code == 403
