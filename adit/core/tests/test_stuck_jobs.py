"""Tasks whose queue job vanished are found and recovered (manage.py stuck_jobs, the sweep)."""

from io import StringIO

import pytest
from django.core.management import call_command
from procrastinate.contrib.django.models import ProcrastinateJob

from adit.core.models import DicomJob, DicomTask
from adit.core.tasks import recover_orphaned_tasks
from adit.core.tests.test_job_lifecycle import make_job

pytestmark = pytest.mark.django_db(transaction=True)


def _orphan_one_task(job):
    """Simulate a worker that died after its queue row was finished or removed."""
    task = job.tasks.order_by("id").first()
    assert task is not None
    assert task.claim(task.queued_job_id)
    ProcrastinateJob.objects.filter(id=task.queued_job_id).delete()
    return task


def test_stuck_jobs_lists_and_fixes_an_orphaned_task():
    job = make_job(task_count=2)
    job.submit(by_staff=True)
    orphan = _orphan_one_task(job)

    listing = StringIO()
    call_command("stuck_jobs", stdout=listing)
    assert f"{orphan.pk} (In Progress)" in listing.getvalue()
    orphan.refresh_from_db()
    assert orphan.status == DicomTask.Status.IN_PROGRESS  # listing changes nothing

    fixed = StringIO()
    call_command("stuck_jobs", "--fix", stdout=fixed)

    assert "Recovered 1 task(s)" in fixed.getvalue()
    orphan.refresh_from_db()
    assert orphan.status == DicomTask.Status.PENDING
    assert ProcrastinateJob.objects.get(id=orphan.queued_job_id).status == "todo"
    assert "stopped unexpectedly" in orphan.log


def test_sweep_ends_a_canceling_job_whose_running_task_vanished():
    job = make_job(task_count=1)
    job.submit(by_staff=True)
    orphan = _orphan_one_task(job)
    type(job).objects.filter(pk=job.pk).update(status=DicomJob.Status.CANCELING)

    assert recover_orphaned_tasks() == 1

    orphan.refresh_from_db()
    job.refresh_from_db()
    assert orphan.status == DicomTask.Status.CANCELED
    assert job.status == DicomJob.Status.CANCELED


def test_nothing_stuck_says_so():
    make_job(task_count=1).submit(by_staff=True)
    output = StringIO()
    call_command("stuck_jobs", stdout=output)
    assert "Nothing is stuck." in output.getvalue()


def test_sweep_ends_a_canceling_job_whose_worker_died_while_canceling():
    # The worker died after the cancel: its queue job was handed back (todo) and no worker ran it.
    job = make_job(task_count=1)
    job.submit(by_staff=True)
    task = job.tasks.get()
    assert task.claim(task.queued_job_id)
    queue_job_id = task.queued_job_id
    type(job).objects.filter(pk=job.pk).update(status=DicomJob.Status.CANCELING)
    assert ProcrastinateJob.objects.get(id=queue_job_id).status == "todo"

    assert recover_orphaned_tasks() == 1

    task.refresh_from_db()
    job.refresh_from_db()
    assert task.status == DicomTask.Status.CANCELED
    assert job.status == DicomJob.Status.CANCELED
    assert not ProcrastinateJob.objects.filter(id=queue_job_id).exists()  # no worker takes it


def test_a_task_of_a_canceling_job_is_not_claimed_but_ended():
    job = make_job(task_count=1)
    job.submit(by_staff=True)
    task = job.tasks.get()
    type(job).objects.filter(pk=job.pk).update(status=DicomJob.Status.CANCELING)

    assert not task.claim(task.queued_job_id)
    task.finish_canceled_if_job_is_canceling(task.queued_job_id)

    task.refresh_from_db()
    job.refresh_from_db()
    assert task.status == DicomTask.Status.CANCELED
    assert job.status == DicomJob.Status.CANCELED
