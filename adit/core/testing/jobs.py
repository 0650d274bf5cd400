"""Jobs in given states for tests of the job pages (rows only; nothing is queued or run)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from adit.batch_query.models import BatchQueryJob, BatchQueryTask
from adit.core.models import DicomJob, DicomTask
from adit.selective_transfer.models import SelectiveTransferJob, SelectiveTransferTask


def transfer_job(
    owner,
    source,
    destination,
    studies: list[tuple[str, str, str]],
    status: str = DicomJob.Status.SUCCESS,
    **job_fields,
) -> SelectiveTransferJob:
    """A selective transfer job with one task per (PatientID, StudyInstanceUID, pseudonym).

    A finished job's tasks succeeded with 3 instances of 1000 bytes each, over 65 s.
    """
    job = SelectiveTransferJob.objects.create(owner=owner, **job_fields)
    finished = status in DicomJob.FINAL_STATUSES
    end = timezone.now()
    start = end - timedelta(seconds=65)
    for patient_id, study_uid, pseudonym in studies:
        SelectiveTransferTask.objects.create(
            job=job,
            source=source,
            destination=destination,
            patient_id=patient_id,
            study_uid=study_uid,
            pseudonym=pseudonym,
            status=DicomTask.Status.SUCCESS if finished else DicomTask.Status.PENDING,
            attempts=1 if finished else 0,
            message="3 instance(s) transferred." if finished else "",
            transferred_instances=3 if finished else None,
            transferred_bytes=3000 if finished else None,
            start=start if finished else None,
            end=end if finished else None,
        )
    SelectiveTransferJob.objects.filter(pk=job.pk).update(
        created=start - timedelta(seconds=5) if finished else job.created,
        status=status,
        start=start if finished else None,
        end=end if finished else None,
        message="All tasks succeeded." if status == DicomJob.Status.SUCCESS else "",
    )
    job.refresh_from_db()
    return job


def batch_query_job(owner, source, rows: list[dict], **job_fields) -> BatchQueryJob:
    """A pending batch query job with one task per row (fields of BatchQueryTask)."""
    job = BatchQueryJob.objects.create(
        owner=owner,
        status=DicomJob.Status.PENDING,
        project_name=job_fields.pop("project_name", "Lung study"),
        project_description=job_fields.pop("project_description", "Test"),
        **job_fields,
    )
    for line, row in enumerate(rows, start=2):
        BatchQueryTask.objects.create(job=job, source=source, lines=[line], **row)
    return job
