# pyright: reportOptionalMemberAccess=false, reportOptionalOperand=false
"""Job and task lifecycle: every status transition and user action of the job engine.

The transfers themselves (worker, processor, real PACS) are tested in test_transfer_engine.py;
here the engine's rules are checked against the real database and the real queue tables.
"""

import datetime

import pytest
from django.test import override_settings
from django.utils import timezone
from procrastinate.contrib.django.models import ProcrastinateJob

from adit.accounts.factories import UserFactory
from adit.core.factories import DicomServerFactory
from adit.core.models import DicomJob, DicomTask, JobActionError
from adit.core.tests.example_app.models import (
    ExampleAppSettings,
    ExampleTransferJob,
    ExampleTransferTask,
)

pytestmark = pytest.mark.django_db

JobStatus, TaskStatus = DicomJob.Status, DicomTask.Status


def make_job(task_count=2, urgent=False, **job_fields) -> ExampleTransferJob:
    source, destination = DicomServerFactory(), DicomServerFactory()
    job = ExampleTransferJob.objects.create(owner=UserFactory(), urgent=urgent, **job_fields)
    ExampleTransferTask.objects.bulk_create(
        ExampleTransferTask(
            job=job,
            source=source,
            destination=destination,
            patient_id=f"P{n}",
            study_uid=f"1.2.3.{n}",
        )
        for n in range(task_count)
    )
    return job


def queue_rows(job) -> list[ProcrastinateJob]:
    ids = list(job.tasks.exclude(queued_job_id=None).values_list("queued_job_id", flat=True))
    return list(ProcrastinateJob.objects.filter(id__in=ids))


def set_task_statuses(job, *statuses) -> None:
    for task, status in zip(job.tasks.order_by("id"), statuses, strict=True):
        task.status = status
        task.save()


# --- creation, verification, priority ---------------------------------------------------------


def test_submitted_job_is_pending_and_every_task_is_queued_in_one_go():
    job = make_job(task_count=3)
    job.submit(by_staff=False)

    job.refresh_from_db()
    assert job.status == JobStatus.PENDING
    rows = queue_rows(job)
    assert len(rows) == 3
    assert {row.queue_name for row in rows} == {"dicom"}
    assert {row.priority for row in rows} == {ExampleTransferJob.default_priority}
    assert {row.args["task_id"] for row in rows} == set(job.tasks.values_list("id", flat=True))


def test_urgent_job_is_queued_with_the_urgent_priority():
    job = make_job(urgent=True)
    job.submit(by_staff=False)
    assert {row.priority for row in queue_rows(job)} == {ExampleTransferJob.urgent_priority}


@override_settings(START_EXAMPLE_APP_UNVERIFIED=False)
def test_job_of_a_non_staff_user_waits_for_verification_when_the_app_requires_it():
    job = make_job()
    job.submit(by_staff=False)
    job.refresh_from_db()
    assert job.status == JobStatus.UNVERIFIED
    assert queue_rows(job) == []

    job.verify()

    assert job.status == JobStatus.PENDING
    assert len(queue_rows(job)) == 2
    with pytest.raises(JobActionError, match="cannot be verified while it is Pending"):
        job.verify()


@override_settings(START_EXAMPLE_APP_UNVERIFIED=False)
def test_job_of_staff_starts_without_verification():
    job = make_job()
    job.submit(by_staff=True)
    assert job.status == JobStatus.PENDING


# --- status derived from the tasks --------------------------------------------------------------


@pytest.mark.parametrize(
    ("task_statuses", "job_status", "message_part"),
    [
        ((TaskStatus.SUCCESS, TaskStatus.SUCCESS), JobStatus.SUCCESS, "All tasks succeeded"),
        ((TaskStatus.SUCCESS, TaskStatus.WARNING), JobStatus.WARNING, "1 of 2"),
        ((TaskStatus.WARNING, TaskStatus.WARNING), JobStatus.WARNING, "All tasks finished"),
        ((TaskStatus.SUCCESS, TaskStatus.FAILURE), JobStatus.FAILURE, "1 of 2 tasks failed"),
        ((TaskStatus.WARNING, TaskStatus.FAILURE), JobStatus.FAILURE, "1 of 2 tasks failed"),
        ((TaskStatus.FAILURE, TaskStatus.FAILURE), JobStatus.FAILURE, "All tasks failed"),
        ((TaskStatus.CANCELED, TaskStatus.CANCELED), JobStatus.CANCELED, "canceled"),
        ((TaskStatus.SUCCESS, TaskStatus.CANCELED), JobStatus.SUCCESS, "1 canceled"),
        ((TaskStatus.IN_PROGRESS, TaskStatus.SUCCESS), JobStatus.IN_PROGRESS, ""),
        ((TaskStatus.PENDING, TaskStatus.PENDING), JobStatus.PENDING, ""),
    ],
)
def test_job_status_follows_from_its_tasks(task_statuses, job_status, message_part):
    job = make_job()
    job.submit(by_staff=True)
    set_task_statuses(job, *task_statuses)

    finished = job.update_status()

    assert job.status == job_status
    assert message_part in job.message
    assert finished == (job_status in (JobStatus.SUCCESS, JobStatus.WARNING, JobStatus.FAILURE))
    assert (job.end is not None) == (job_status in DicomJob.FINAL_STATUSES)


def test_job_with_pending_tasks_after_a_started_one_stays_in_progress():
    job = make_job()
    job.submit(by_staff=True)
    set_task_statuses(job, TaskStatus.IN_PROGRESS, TaskStatus.PENDING)
    job.update_status()
    set_task_statuses(job, TaskStatus.SUCCESS, TaskStatus.PENDING)

    job.update_status()

    assert job.status == JobStatus.IN_PROGRESS


def test_job_without_tasks_succeeds_with_nothing_to_process():
    job = make_job(task_count=0)
    job.submit(by_staff=True)
    job.update_status()
    assert job.status == JobStatus.SUCCESS
    assert "nothing to process" in job.message


@override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend")
def test_finished_mail_goes_to_the_owner_when_asked(django_capture_on_commit_callbacks, mailoutbox):
    job = make_job(send_finished_mail=True)
    job.submit(by_staff=True)
    set_task_statuses(job, TaskStatus.SUCCESS, TaskStatus.FAILURE)
    with django_capture_on_commit_callbacks(execute=True):
        job.update_status()
    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == [job.owner.email]
    assert "Failure" in mailoutbox[0].subject


# --- user actions -------------------------------------------------------------------------------


def test_delete_removes_the_job_and_its_queued_jobs():
    job = make_job()
    job.submit(by_staff=True)
    queue_ids = [row.id for row in queue_rows(job)]

    job.delete_if_untouched()

    assert not ExampleTransferJob.objects.filter(pk=job.pk).exists()
    assert not ExampleTransferTask.objects.filter(job_id=job.pk).exists()
    assert not ProcrastinateJob.objects.filter(id__in=queue_ids).exists()


def test_a_job_whose_work_started_cannot_be_deleted():
    job = make_job()
    job.submit(by_staff=True)
    set_task_statuses(job, TaskStatus.SUCCESS, TaskStatus.PENDING)
    job.update_status()
    with pytest.raises(JobActionError, match="cannot be deleted"):
        job.delete_if_untouched()
    assert ExampleTransferJob.objects.filter(pk=job.pk).exists()


def test_cancel_of_a_pending_job_removes_its_tasks_from_the_queue():
    job = make_job()
    job.submit(by_staff=True)
    queue_ids = [row.id for row in queue_rows(job)]

    job.cancel()

    assert job.status == JobStatus.CANCELED
    assert set(job.tasks.values_list("status", flat=True)) == {TaskStatus.CANCELED}
    assert not ProcrastinateJob.objects.filter(id__in=queue_ids).exists()


def test_cancel_with_a_running_task_waits_in_canceling_until_the_worker_stopped_it():
    job = make_job()
    job.submit(by_staff=True)
    running = job.tasks.order_by("id").first()
    assert running.claim(running.queued_job_id)
    ProcrastinateJob.objects.filter(id=running.queued_job_id).update(status="doing")

    job.cancel()

    assert job.status == JobStatus.CANCELING
    row = ProcrastinateJob.objects.get(id=running.queued_job_id)
    assert row.abort_requested  # the worker cancels the running processor
    running.finish_canceled()  # what the worker does once the processor has stopped
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELED


def test_resume_queues_the_canceled_tasks_again():
    job = make_job()
    job.submit(by_staff=True)
    job.cancel()

    job.refresh_from_db()
    assert job.end is not None  # canceled before a task ran: ended

    job.resume()

    assert job.status == JobStatus.PENDING
    assert job.end is None, "a resumed job has not ended"
    assert set(job.tasks.values_list("status", flat=True)) == {TaskStatus.PENDING}
    assert len(queue_rows(job)) == 2


def test_retry_resets_only_the_failed_tasks():
    job = make_job(task_count=3)
    job.submit(by_staff=True)
    set_task_statuses(job, TaskStatus.SUCCESS, TaskStatus.FAILURE, TaskStatus.WARNING)
    ExampleTransferTask.objects.filter(job=job).update(attempts=3, queued_job_id=None)
    job.update_status()
    assert job.status == JobStatus.FAILURE

    job.retry()

    statuses = list(job.tasks.order_by("id").values_list("status", "attempts"))
    assert statuses == [(TaskStatus.SUCCESS, 3), (TaskStatus.PENDING, 0), (TaskStatus.WARNING, 3)]
    assert job.status == JobStatus.PENDING
    assert job.end is None, "a retried job has not ended"
    assert len(queue_rows(job)) == 1


def test_retry_is_refused_unless_the_job_failed():
    job = make_job()
    job.submit(by_staff=True)
    with pytest.raises(JobActionError, match="cannot be retried while it is Pending"):
        job.retry()


def test_restart_resets_every_task():
    job = make_job()
    job.submit(by_staff=True)
    set_task_statuses(job, TaskStatus.SUCCESS, TaskStatus.WARNING)
    ExampleTransferTask.objects.filter(job=job).update(queued_job_id=None)
    job.update_status()

    job.restart()

    assert set(job.tasks.values_list("status", flat=True)) == {TaskStatus.PENDING}
    assert job.status == JobStatus.PENDING and job.end is None
    assert len(queue_rows(job)) == 2


def test_task_actions_delete_reset_and_kill():
    job = make_job(task_count=3)
    job.submit(by_staff=True)
    first, second, third = job.tasks.order_by("id")
    first_queue_id = first.queued_job_id

    first.delete_pending()
    assert not ProcrastinateJob.objects.filter(id=first_queue_id).exists()
    assert job.tasks.count() == 2

    ExampleTransferTask.objects.filter(pk=second.pk).update(
        status=TaskStatus.FAILURE, queued_job_id=None
    )
    second.refresh_from_db()
    second.reset()
    assert second.status == TaskStatus.PENDING and second.queued_job_id is not None

    with pytest.raises(JobActionError, match="cannot be killed while it is Pending"):
        third.kill()
    assert third.claim(third.queued_job_id)
    ProcrastinateJob.objects.filter(id=third.queued_job_id).update(status="doing")
    third.kill()
    assert ProcrastinateJob.objects.get(id=third.queued_job_id).abort_requested


# --- worker side --------------------------------------------------------------------------------


def test_a_task_is_only_claimed_by_the_queue_job_it_was_queued_as():
    job = make_job(task_count=1)
    job.submit(by_staff=True)
    task = job.tasks.get()

    assert not task.claim(task.queued_job_id + 1000)
    assert task.claim(task.queued_job_id)
    task.refresh_from_db()
    assert (task.status, task.attempts) == (TaskStatus.IN_PROGRESS, 1)
    job.refresh_from_db()
    assert job.status == JobStatus.IN_PROGRESS and job.start is not None
    # A task left In Progress by a worker that died is claimed again by its retried queue job.
    assert task.claim(task.queued_job_id)
    task.refresh_from_db()
    assert task.attempts == 2


@override_settings(DICOM_TASK_MAX_ATTEMPTS=2, DICOM_TASK_RETRY_DELAY=30)
def test_transient_errors_are_retried_with_backoff_then_fail():
    job = make_job(task_count=1)
    job.submit(by_staff=True)
    task = job.tasks.get()
    first_queue_id = task.queued_job_id
    assert task.claim(first_queue_id)

    task.fail_or_retry(ConnectionError("PACS busy"))

    task.refresh_from_db()
    assert task.status == TaskStatus.PENDING
    assert task.queued_job_id != first_queue_id
    retry_row = ProcrastinateJob.objects.get(id=task.queued_job_id)
    assert retry_row.scheduled_at >= timezone.now() + datetime.timedelta(seconds=25)
    assert "Attempt 1 of 2 failed: PACS busy" in task.log
    assert "Waiting 30 s for the server (or ADIT's receiver) to recover" in task.message

    assert task.claim(task.queued_job_id)
    task.fail_or_retry(ConnectionError("PACS busy"))
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILURE
    assert "Failed after 2 attempts" in task.message
    job.refresh_from_db()
    assert job.status == JobStatus.FAILURE


# --- time window and suspension -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "expected_opening"),
    [
        ("2026-11-23 23:00", None),
        ("2026-11-23 05:59", None),
        ("2026-11-23 06:00", "2026-11-23 22:00"),
        ("2026-11-23 12:30", "2026-11-23 22:00"),
    ],
)
def test_transfer_window_over_midnight(now, expected_opening, settings):
    settings.TIME_ZONE = "UTC"
    window = ExampleAppSettings(
        transfer_window_start=datetime.time(22, 0), transfer_window_end=datetime.time(6, 0)
    )
    moment = datetime.datetime.fromisoformat(now).replace(tzinfo=datetime.UTC)
    opening = window.next_window_start(moment)
    if expected_opening is None:
        assert opening is None
    else:
        assert opening == datetime.datetime.fromisoformat(expected_opening).replace(
            tzinfo=datetime.UTC
        )


def test_non_urgent_tasks_wait_for_the_window_and_urgent_ones_do_not():
    app_settings = ExampleAppSettings.get()
    now = timezone.localtime()
    app_settings.transfer_window_start = (now + datetime.timedelta(hours=2)).time()
    app_settings.transfer_window_end = (now + datetime.timedelta(hours=3)).time()
    app_settings.save()

    normal, urgent = make_job(task_count=1), make_job(task_count=1, urgent=True)

    waiting = normal.tasks.get().reason_to_wait()
    assert waiting is not None and "transfer window" in waiting[1]
    assert urgent.tasks.get().reason_to_wait() is None


def test_suspended_app_keeps_its_tasks_waiting():
    app_settings = ExampleAppSettings.get()
    app_settings.suspended = True
    app_settings.save()
    waiting = make_job(task_count=1, urgent=True).tasks.get().reason_to_wait()
    assert waiting is not None and "suspended" in waiting[1]


def test_default_retry_backoff_outlasts_a_server_restart(settings):
    """The waits between the default attempts add up to several minutes, capped per wait."""
    waits = [
        min(settings.DICOM_TASK_RETRY_DELAY * 2**n, settings.DICOM_TASK_RETRY_MAX_DELAY)
        for n in range(settings.DICOM_TASK_MAX_ATTEMPTS - 1)
    ]
    assert sum(waits) >= 5 * 60


@override_settings(
    DICOM_TASK_MAX_ATTEMPTS=4, DICOM_TASK_RETRY_DELAY=100, DICOM_TASK_RETRY_MAX_DELAY=150
)
def test_retry_delay_is_capped():
    job = make_job(task_count=1)
    job.submit(by_staff=True)
    task = job.tasks.get()
    for expected_delay in (100, 150, 150):
        assert task.claim(task.queued_job_id)
        task.fail_or_retry(ConnectionError("receiver down"))
        task.refresh_from_db()
        assert f"Waiting {expected_delay} s" in task.message
