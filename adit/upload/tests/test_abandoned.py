"""An upload whose page went away mid-upload is ended by the server, never left running.

The page posts files and commits at the end; a page that is closed (or crashes, or goes
offline) never commits. After `UPLOAD_ABANDONED_AFTER_MINUTES` without a file the default
worker's periodic task ends such a job: what arrived is stored, and the job says the upload
was interrupted.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from procrastinate.contrib.django import app

from adit.core.statuses import Status
from adit.core.testing.workers import run_worker_burst
from adit.upload import tasks
from adit.upload.models import UploadInstance, UploadJob
from adit.upload.processors import UploadTaskProcessor
from adit.upload.services import end_abandoned_uploads

from .conftest import browser_file, post_file

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("staging")]


def _idle_for(job_id: int, minutes: float) -> None:
    """As if the job's page had sent its last file (or been opened) `minutes` ago."""
    then = timezone.now() - timedelta(minutes=minutes)
    UploadJob.objects.filter(pk=job_id).update(created=then)
    UploadInstance.objects.filter(job_id=job_id).update(received=then)


def _run_tasks(job: UploadJob) -> None:
    for task in job.tasks.filter(status=Status.PENDING):
        assert task.claim(task.queued_job_id)
        task.finish(UploadTaskProcessor(task).process())


def test_a_page_closed_mid_upload_ends_its_job_with_a_warning_and_stores_what_came(
    client, job_id, folder, settings
):
    settings.UPLOAD_ABANDONED_AFTER_MINUTES = 60
    for _ in range(2):
        assert post_file(client, job_id, browser_file()).status_code == 201
    _idle_for(job_id, 59)
    assert end_abandoned_uploads() == 0  # not yet: the page may only be slow
    assert UploadJob.objects.get(pk=job_id).receiving

    _idle_for(job_id, 61)
    assert end_abandoned_uploads() == 1
    job = UploadJob.objects.get(pk=job_id)
    assert not job.receiving and job.interrupted is not None
    assert job.tasks.count() == 2  # one per study (each file is a study of its own)
    _run_tasks(job)
    job.refresh_from_db()
    assert job.status == Status.WARNING
    assert job.message.startswith("The upload was interrupted: the page stopped sending")
    assert "Of the 2 file(s) that had arrived: all tasks succeeded. Files the page" in job.message
    assert len(list(Path(folder.path).rglob("*.dcm"))) == 2
    assert end_abandoned_uploads() == 0  # ended once


def test_a_page_closed_before_any_file_arrived_fails_its_job(client, job_id, settings):
    _idle_for(job_id, settings.UPLOAD_ABANDONED_AFTER_MINUTES + 1)
    assert end_abandoned_uploads() == 1
    job = UploadJob.objects.get(pk=job_id)
    assert job.status == Status.FAILURE
    assert job.message.startswith("The upload was interrupted before any file arrived")


def test_a_page_that_commits_after_all_makes_it_a_plain_success(client, job_id, settings):
    assert post_file(client, job_id, browser_file()).status_code == 201
    _idle_for(job_id, settings.UPLOAD_ABANDONED_AFTER_MINUTES + 1)
    assert end_abandoned_uploads() == 1
    _run_tasks(UploadJob.objects.get(pk=job_id))
    assert UploadJob.objects.get(pk=job_id).status == Status.WARNING

    # The laptop wakes up: the page sends the rest and commits.
    assert post_file(client, job_id, browser_file()).status_code == 201
    assert client.post(f"/upload/jobs/{job_id}/commit/").status_code == 200
    job = UploadJob.objects.get(pk=job_id)
    assert job.interrupted is None
    _run_tasks(job)
    job.refresh_from_db()
    assert (job.status, job.message) == (Status.SUCCESS, "All tasks succeeded.")


def test_a_committed_or_canceled_upload_is_left_as_it_is(client, job_id, settings):
    assert post_file(client, job_id, browser_file()).status_code == 201
    job = UploadJob.objects.get(pk=job_id)
    job.cancel()
    _idle_for(job_id, settings.UPLOAD_ABANDONED_AFTER_MINUTES + 1)
    assert end_abandoned_uploads() == 1  # it stops receiving, nothing more
    job.refresh_from_db()
    assert (job.status, job.receiving, job.tasks.count()) == (Status.CANCELED, False, 0)
    assert end_abandoned_uploads() == 0


def test_the_check_runs_periodically_on_the_default_queue():
    periodic = {task.task.name: task for task in app.periodic_registry.periodic_tasks.values()}
    task = periodic["adit.upload.tasks.end_abandoned_upload_jobs"]
    assert task.task.queue == "default"


@pytest.mark.django_db(transaction=True)
def test_real_workers_end_an_abandoned_upload_and_store_what_came(
    client, job_id, folder, staging, settings
):
    assert post_file(client, job_id, browser_file()).status_code == 201
    _idle_for(job_id, settings.UPLOAD_ABANDONED_AFTER_MINUTES + 1)
    # A lock of its own: a periodic run that a worker of another test deferred may still wait
    # in the queue under the task's own queueing lock.
    tasks.end_abandoned_upload_jobs.configure(queueing_lock=f"test-{job_id}").defer(
        timestamp=0  # pyright: ignore[reportCallIssue]
    )

    # The default worker ends the job; the task it queues is stored by the dicom worker.
    ended = run_worker_burst("default", env={"UPLOAD_STAGING_DIR": str(staging)})
    assert ended.returncode == 0, ended.stdout + ended.stderr
    assert UploadJob.objects.get(pk=job_id).tasks.count() == 1
    stored = run_worker_burst("dicom", env={"UPLOAD_STAGING_DIR": str(staging)})
    assert stored.returncode == 0, stored.stdout + stored.stderr

    job = UploadJob.objects.get(pk=job_id)
    assert job.status == Status.WARNING, job.message
    assert job.message.startswith("The upload was interrupted")
    assert len(list(Path(folder.path).rglob("*.dcm"))) == 1
