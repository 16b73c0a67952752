"""Pages: the form that starts a bundle, the bundle's page, and the JSON that page polls."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from demo_project.shootr.forms import MAX_URLS, BundleForm
from demo_project.shootr.models import Bundle, Screenshot
from demo_project.shootr.tasks import make_screenshot
from jobqueue import JobQueueError, JobResult
from jobqueue.models import Job

POLL_INTERVAL_MS = 1000


@require_http_methods(["GET", "HEAD", "POST"])
def home(request: HttpRequest) -> HttpResponse:
    form = BundleForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        bundle = start_bundle(form.cleaned_data["urls"])
        return redirect(bundle)
    recent = Bundle.objects.all()[:5]
    return render(request, "shootr/home.html",
                  {"form": form, "max_urls": MAX_URLS, "recent": recent})


def start_bundle(urls: list[str]) -> Bundle:
    """Create the bundle and send one job per URL; the jobs leave when the rows are committed,
    so a worker never looks for a screenshot that is not in the database yet."""
    with transaction.atomic():
        bundle = Bundle.objects.create()
        for position, url in enumerate(urls, start=1):
            shot = Screenshot.objects.create(bundle=bundle, position=position, url=url)
            shot.job_id = make_screenshot.delay(shot).id
            shot.save(update_fields=["job_id"])
    return bundle


@require_GET
def bundle_page(request: HttpRequest, pk: UUID) -> HttpResponse:
    bundle = get_object_or_404(Bundle, pk=pk)
    state = bundle_state(bundle)
    return render(request, "shootr/bundle.html",
                  {"bundle": bundle, "state": state, "poll_ms": POLL_INTERVAL_MS})


@require_GET
def bundle_status(request: HttpRequest, pk: UUID) -> JsonResponse:
    bundle = get_object_or_404(Bundle, pk=pk)
    response = JsonResponse(bundle_state(bundle))
    response["Cache-Control"] = "no-store"
    return response


def bundle_state(bundle: Bundle) -> dict[str, Any]:
    """Everything the bundle page shows, in one shape for the template and for the poller."""
    shots = [shot_state(shot, follow_job(shot)) for shot in bundle.screenshots.all()]
    counts = {status: 0 for status in Screenshot.Status.values}
    for shot in shots:
        counts[shot["status"]] += 1
    finished = counts[Screenshot.Status.DONE] + counts[Screenshot.Status.FAILED]
    return {
        "id": str(bundle.pk),
        "total": len(shots),
        "counts": counts,
        "finished": finished,
        "percent": round(100 * finished / len(shots)) if shots else 100,
        "settled": finished == len(shots),
        "shots": shots,
    }


def follow_job(shot: Screenshot) -> str:
    """The status to show: the job's until it is final, then the row's.

    The job is the truth about a run: a run killed by its timeout (or canceled, or lost with its
    worker) never reaches the task's own failure branch, so its row alone would say ``started``
    for ever. Such an end is written to the row, once. A job waiting for its retry shows queued,
    and one still running shows started, whatever its row already says.
    """
    if not shot.job_id:
        return shot.status
    job = JobResult(shot.job_id)
    try:
        status = job.status
        if shot.finished and status in (Job.Status.SUCCEEDED, Job.Status.FAILED,
                                        Job.Status.CANCELED):
            return shot.status  # both final: the row has the task's own word
        if status in (Job.Status.FAILED, Job.Status.CANCELED):
            row = job.job
            shot.mark_ended_by_job(
                f"the screenshot was not taken: {row.error or f'the job was {status}'}",
                row.ended_at,
            )
            return shot.status
    except JobQueueError:  # purged, or the broker is out of reach: the row is all there is
        return shot.status
    if status in (Job.Status.QUEUED, Job.Status.SCHEDULED):
        return Screenshot.Status.QUEUED
    if status == Job.Status.STARTED:
        return Screenshot.Status.STARTED
    return shot.status  # succeeded: the task recorded its own end


def shot_state(shot: Screenshot, status: str) -> dict[str, Any]:
    took = shot.took
    return {
        "id": shot.pk,
        "url": shot.url,
        "status": status,
        "title": shot.title,
        "error": shot.error,
        "image": shot.image.url if shot.image else None,
        "thumbnail": shot.thumbnail.url if shot.thumbnail else None,
        "truncated": shot.truncated,
        "took": round(took.total_seconds(), 1) if took is not None else None,
    }
