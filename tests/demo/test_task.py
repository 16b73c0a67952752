"""make_screenshot run inline (calling a task runs it here): a real Chromium, local pages."""

from __future__ import annotations

import pytest
from PIL import Image

from demo_project.shootr.models import Bundle, Screenshot
from demo_project.shootr.tasks import make_screenshot
from tests.demo.colours import RED, dominant

pytestmark = [pytest.mark.demo, pytest.mark.django_db]


def new_shot(url: str) -> Screenshot:
    return Screenshot.objects.create(bundle=Bundle.objects.create(), position=1, url=url)


def test_takes_the_screenshot_and_its_thumbnail(kept_browser, pages, media_root, allow_private):
    shot = new_shot(f"{pages}/red.html")
    make_screenshot(shot)
    shot.refresh_from_db()
    assert shot.status == "done"
    assert shot.attempts == 1
    assert shot.title == "Red"
    assert shot.took is not None
    assert dominant(shot.image.path) == (RED, 1.0)
    assert dominant(shot.thumbnail.path)[0] == RED
    with Image.open(shot.thumbnail.path) as thumb:
        assert thumb.size == (400, 250)


def test_unreachable_page_fails_with_the_reason(kept_browser, closed_port, allow_private):
    """The page's fault: recorded, and the task returns, so that jobqueue does not retry."""
    shot = new_shot(f"http://127.0.0.1:{closed_port}/")
    result = make_screenshot(shot)
    assert "net::ERR_CONNECTION_REFUSED" in result["error"]
    shot.refresh_from_db()
    assert shot.status == "failed"
    assert shot.error == result["error"]
    # Delivered again, it ends the same way without opening the page again.
    assert make_screenshot(shot) == result
    assert Screenshot.objects.get(pk=shot.pk).attempts == 1


def test_private_hosts_are_refused_at_the_worker(pages, forbid_private):
    shot = new_shot(f"{pages}/red.html")
    assert "loopback" in make_screenshot(shot)["error"]
    shot.refresh_from_db()
    assert shot.status == "failed"
    assert "127.0.0.1 is a loopback address" in shot.error
    assert not shot.image


def test_a_finished_screenshot_is_not_taken_again(pages):
    shot = new_shot(f"{pages}/red.html")
    shot.status = Screenshot.Status.DONE
    shot.save()
    assert make_screenshot(shot) == {"image": ""}
    assert Screenshot.objects.get(pk=shot.pk).attempts == 0
