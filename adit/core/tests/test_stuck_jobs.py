"""Tasks whose queue job vanished are found and recovered (manage.py stuck_jobs, the sweep)."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
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


def test_resumed_job_whose_only_task_had_failed_ends_failure():
    # The cancel came after the only task had failed: nothing is left to run on resume.
    job = make_job(task_count=1)
    job.submit(by_staff=True)
    task = job.tasks.get()
    assert task.claim(task.queued_job_id)
    type(job).objects.filter(pk=job.pk).update(status=DicomJob.Status.CANCELED)
    type(task).objects.filter(pk=task.pk).update(
        status=DicomTask.Status.FAILURE, queued_job_id=None
    )
    job.refresh_from_db()

    job.resume()

    job.refresh_from_db()
    assert job.status == DicomJob.Status.FAILURE
    assert job.message == "All tasks failed."


def test_a_job_whose_status_disagrees_with_its_tasks_is_found_and_fixed():
    # As the bug left it: the job Pending, its only task failed, no queue job.
    job = make_job(task_count=1)
    job.submit(by_staff=True)
    task = job.tasks.get()
    type(task).objects.filter(pk=task.pk).update(status=DicomTask.Status.FAILURE)

    listing = StringIO()
    call_command("stuck_jobs", stdout=listing)
    assert f"{job._meta.label} {job.pk} is Pending, but its tasks say Failure" in (
        listing.getvalue()
    )
    job.refresh_from_db()
    assert job.status == DicomJob.Status.PENDING  # listing changes nothing

    assert recover_orphaned_tasks() == 1
    job.refresh_from_db()
    assert job.status == DicomJob.Status.FAILURE
    listing = StringIO()
    call_command("stuck_jobs", stdout=listing)
    assert "Nothing is stuck." in listing.getvalue()


def test_a_canceled_job_with_a_pending_task_ends_the_task_canceled():
    job = make_job(task_count=2)
    job.submit(by_staff=True)
    first = job.tasks.order_by("id").first()
    assert first is not None
    queue_job_id = first.queued_job_id
    job.tasks.exclude(pk=first.pk).update(status=DicomTask.Status.SUCCESS, queued_job_id=None)
    type(job).objects.filter(pk=job.pk).update(status=DicomJob.Status.CANCELED)

    assert recover_orphaned_tasks() == 1

    first.refresh_from_db()
    job.refresh_from_db()
    assert first.status == DicomTask.Status.CANCELED
    assert not ProcrastinateJob.objects.filter(id=queue_job_id, status="todo").exists()
    assert job.status == DicomJob.Status.CANCELED


def test_an_in_progress_task_whose_queue_job_waits_is_pending_again():
    # Its worker died; Procrastinate's stalled-job retry put the queue job back (todo).
    job = make_job(task_count=1)
    job.submit(by_staff=True)
    task = job.tasks.get()
    assert task.claim(task.queued_job_id)
    assert ProcrastinateJob.objects.get(id=task.queued_job_id).status == "todo"

    listing = StringIO()
    call_command("stuck_jobs", stdout=listing)
    assert f"{task.pk} (In Progress) of job {job.pk}: no worker runs it" in listing.getvalue()

    assert recover_orphaned_tasks() == 1
    task.refresh_from_db()
    job.refresh_from_db()
    assert task.status == DicomTask.Status.PENDING
    assert ProcrastinateJob.objects.get(id=task.queued_job_id).status == "todo"
    assert task.claim(task.queued_job_id)  # the queue job still delivers it


def test_a_task_of_a_worker_that_stopped_heartbeating_is_named_and_handed_back():
    job = make_job(task_count=1)
    job.submit(by_staff=True)
    task = job.tasks.get()
    assert task.claim(task.queued_job_id)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO procrastinate_workers (last_heartbeat) "
            "VALUES (now() - interval '1 hour') RETURNING id"
        )
        row = cursor.fetchone()
        assert row is not None
        worker_id = row[0]
        cursor.execute(
            "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s WHERE id = %s",
            [worker_id, task.queued_job_id],
        )

    listing = StringIO()
    call_command("stuck_jobs", stdout=listing)
    assert (
        f"example_app.exampletransfertask {task.pk} (In Progress): its worker stopped "
        f"heartbeating (queue job {task.queued_job_id})"
    ) in listing.getvalue()

    fixed = StringIO()
    call_command("stuck_jobs", "--fix", stdout=fixed)
    assert "retried 1 stalled job(s)" in fixed.getvalue()
    task.refresh_from_db()
    assert task.status == DicomTask.Status.PENDING
    assert ProcrastinateJob.objects.get(id=task.queued_job_id).status == "todo"
