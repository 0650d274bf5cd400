"""The page of an upload the server ended because its page went away, as its owner (a non-staff
researcher) and as an admin see it, at desktop width and at 390 px (phone).

Set ADIT_SCREENSHOT_DIR to keep the screenshots.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone
from playwright.sync_api import Page, expect

from adit.accounts.factories import DEFAULT_PASSWORD, UserFactory
from adit.core.testing.browser import login
from adit.upload.models import UploadInstance, UploadJob
from adit.upload.processors import UploadTaskProcessor
from adit.upload.services import end_abandoned_uploads

from .conftest import browser_file, new_job, post_file

pytestmark = [
    pytest.mark.acceptance,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("staging"),
]


@pytest.mark.parametrize("width", [1280, 390])
@pytest.mark.parametrize("viewer", ["owner", "admin"])
def test_owner_and_admin_read_that_the_upload_was_interrupted(
    page: Page, live_server, uploader, folder, settings, width, viewer
):
    client = Client()
    client.force_login(uploader)
    job_id = new_job(client, folder).json()["job"]
    for _ in range(3):
        assert post_file(client, job_id, browser_file()).status_code == 201
    then = timezone.now() - timedelta(minutes=settings.UPLOAD_ABANDONED_AFTER_MINUTES + 1)
    UploadInstance.objects.filter(job_id=job_id).update(received=then)
    assert end_abandoned_uploads() == 1
    for task in UploadJob.objects.get(pk=job_id).tasks.all():
        assert task.claim(task.queued_job_id)
        task.finish(UploadTaskProcessor(task).process())

    page.set_viewport_size({"width": width, "height": 800})
    user = uploader
    if viewer == "admin":
        user = UserFactory(username="admin", is_staff=True, is_superuser=True)
    login(page, live_server.url, user.username, DEFAULT_PASSWORD)
    page.goto(f"{live_server.url}/upload/jobs/{job_id}/")
    expect(page.get_by_text("The upload was interrupted")).to_be_visible()
    expect(page.locator("body")).to_contain_text("Warning")
    scroll_width, viewport_width = page.evaluate(
        "[document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert scroll_width <= viewport_width
    folder_path = os.environ.get("ADIT_SCREENSHOT_DIR")
    if folder_path:
        page.screenshot(
            path=str(Path(folder_path) / f"upload-interrupted-{viewer}-{width}.png"), full_page=True
        )
