"""The job: take one screenshot in a worker, and record how it went on the Screenshot row."""

from __future__ import annotations

import logging
from functools import partial

from django.core.files.base import ContentFile

from demo_project.shootr.browser import Capture, PageLoadError, kept_browser
from demo_project.shootr.imaging import make_thumbnail
from demo_project.shootr.models import Screenshot
from demo_project.shootr.urlsafety import URLRefused, check_endpoint, check_url, private_access
from jobqueue import task

logger = logging.getLogger(__name__)

# A page has 20 s to load (browser.Limits); the job's timeout leaves room for starting Chromium
# and for one restart of a crashed browser, so the task normally ends on its own terms.
JOB_TIMEOUT = 90
MAX_RETRIES = 1


@task(timeout=JOB_TIMEOUT, max_retries=MAX_RETRIES)
def make_screenshot(shot: Screenshot) -> dict[str, str]:
    """Take ``shot``'s screenshot and thumbnail, or record why the page cannot be taken.

    The page's own fault (refused, unreachable, too slow) is recorded on the row and the job
    ends there, without a retry that would end the same way: its result is ``{"error": ...}``.
    Our own failures (the browser, the database) raise, and jobqueue tries again.
    jobqueue delivers a job at least once, so this can run again for a shot that is finished:
    it then ends the same way again, without opening the page.
    """
    if shot.status == Screenshot.Status.DONE:
        return {"image": shot.image.name}
    if shot.status == Screenshot.Status.FAILED:
        return {"error": shot.error}
    shot.mark_started()
    try:
        capture = take(shot.url)
    except (URLRefused, PageLoadError) as exc:
        # The page's fault: another attempt would end the same way, so there is none.
        shot.mark_failed(str(exc))
        return {"error": str(exc)}
    except Exception as exc:
        # Ours (the browser, the database): the job's retry may succeed.
        if shot.attempts <= MAX_RETRIES:
            shot.mark_retrying(f"attempt {shot.attempts} failed ({exc}); trying again")
        else:
            shot.mark_failed(f"the screenshot could not be taken: {exc}")
        raise
    store(shot, capture)
    return {"image": shot.image.name}


def take(url: str) -> Capture:
    """Check the URL before the browser starts (the common refusal, cheaply), then let the
    browser's proxy check every request the page makes: each redirect hop, each image or frame.
    """
    access = private_access()
    check_url(url, allow_private=access)
    capture = kept_browser.capture(url, partial(check_endpoint, allow_private=access))
    for blocked in capture.blocked:
        logger.warning("url=%s blocked=%s", url, blocked)
    return capture


def store(shot: Screenshot, capture: Capture) -> None:
    shot.image.save(f"{shot.pk}.png", ContentFile(capture.png), save=False)
    shot.thumbnail.save(f"{shot.pk}.jpg", ContentFile(make_thumbnail(capture.png)), save=False)
    shot.mark_done(final_url=capture.final_url, title=capture.title, truncated=capture.truncated)
