"""A worker killed with SIGKILL in the middle of a transfer: a new worker finishes the task.

The dead worker stops sending heartbeats; a worker started later (with a short
STALLED_JOB_SECONDS) finds its queue job stalled at start, hands it back, and runs the task
again. Re-running is harmless: the destination ends up with every instance exactly once and
nothing stays In Progress.
"""

from __future__ import annotations

import pytest
from django.db import connection
from procrastinate.contrib.django.models import ProcrastinateJob

from adit.core.dicom.testing.synthetic import make_large_study
from adit.core.models import DicomJob, DicomTask
from adit.core.testing import wait_until
from adit.core.testing.workers import start_worker, stop_worker
from adit.core.tests.test_transfer_engine import (
    TaskSpec,
    create_transfer_job,
    job_status,
    orthanc_instance_count,
    orthanc_server,
    sop_uids,
    study_uid_of,
    task_report,
    unique_id,
)

pytestmark = pytest.mark.django_db(transaction=True)

JobStatus, TaskStatus = DicomJob.Status, DicomTask.Status
STALLED_AFTER_SECONDS = 2


def orthanc_instance_total(orthanc, study_uid: str) -> int:
    """Instances Orthanc stores for the study, counted on its own index (not deduplicated by us)."""
    found = orthanc.rest(
        "POST", "/tools/find", json={"Level": "Study", "Query": {"StudyInstanceUID": study_uid}}
    ).json()
    if not found:
        return 0
    (study_id,) = found
    return len(orthanc.rest("GET", f"/studies/{study_id}/instances").json())


def registered_workers() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM procrastinate_workers")
        return cursor.fetchone()[0]  # pyright: ignore[reportOptionalSubscript]


def test_task_of_a_killed_worker_is_finished_by_the_next_worker(orthanc_a, orthanc_b, tmp_path):
    datasets = make_large_study(500, patient_id=unique_id("CRASH"), seed=None, rows=32, columns=32)
    orthanc_a.upload(datasets)
    study_uid = study_uid_of(datasets)
    source = orthanc_server(orthanc_a, "Orthanc A")
    destination = orthanc_server(orthanc_b, "Orthanc B")
    job = create_transfer_job(
        source, destination, [TaskSpec(str(datasets[0].PatientID), study_uid)]
    )
    task = job.tasks.get()
    queue_job_id = task.queued_job_id
    env = {"STALLED_JOB_SECONDS": str(STALLED_AFTER_SECONDS)}

    doomed = start_worker("dicom", env=env, log_path=tmp_path / "doomed.log")
    survivor = None
    try:
        # Kill it once the destination holds some, but not all, of the study.
        arrived = wait_until(
            lambda: orthanc_instance_count(orthanc_b, study_uid),
            timeout=90,
            what="the first instances to arrive at the destination",
            interval=0.05,
        )
        doomed.kill()
        doomed.wait(timeout=10)
        partial = orthanc_instance_count(orthanc_b, study_uid)
        assert 0 < arrived <= partial < len(datasets), (
            f"{partial} of {len(datasets)} arrived before the kill; the transfer was not "
            "interrupted in the middle"
        )
        task.refresh_from_db()
        assert task.status == TaskStatus.IN_PROGRESS
        assert ProcrastinateJob.objects.get(id=queue_job_id).status == "doing"
        assert job_status(job) == JobStatus.IN_PROGRESS

        wait_until(
            lambda: heartbeat_is_stale(queue_job_id),
            STALLED_AFTER_SECONDS + 30,
            "the dead worker's heartbeat to go stale",
        )
        survivor = start_worker("dicom", env=env, log_path=tmp_path / "survivor.log")
        wait_until(lambda: job_status(job) in DicomJob.FINAL_STATUSES, 120, "the job to finish")

        job.refresh_from_db()
        task.refresh_from_db()
        log = (tmp_path / "survivor.log").read_text()
        assert job.status == JobStatus.SUCCESS, task_report(job) + log
        assert task.status == TaskStatus.SUCCESS
        assert task.attempts == 2
        assert task.queued_job_id == queue_job_id  # the same queue job, retried
        assert "Retrying stalled job" in log
        assert orthanc_b.study_instance_uids(study_uid) == sop_uids(datasets)
        assert orthanc_instance_total(orthanc_b, study_uid) == len(datasets)
        assert ProcrastinateJob.objects.get(id=queue_job_id).status == "succeeded"
        assert not type(task).objects.filter(status=TaskStatus.IN_PROGRESS).exists()
        assert (
            not type(job)
            .objects.filter(status__in=[JobStatus.IN_PROGRESS, JobStatus.CANCELING])
            .exists()
        )
        # The dead worker was pruned; only the survivor is registered.
        assert registered_workers() == 1
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait(timeout=10)
        if survivor is not None:
            stop_worker(survivor)


def heartbeat_is_stale(queue_job_id: int) -> bool:
    """Whether the last heartbeat of the worker running the queue job is older than the
    stalled limit (clock_timestamp(): inside a transaction now() stands still)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM procrastinate_workers WHERE id = ("
            " SELECT worker_id FROM procrastinate_jobs WHERE id = %s)"
            " AND last_heartbeat < clock_timestamp() - make_interval(secs => %s)",
            [queue_job_id, STALLED_AFTER_SECONDS],
        )
        (count,) = cursor.fetchone() or (0,)
        return count == 1
