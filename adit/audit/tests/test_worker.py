"""A transfer run by a real worker process (`manage.py bg_worker`) is audited and mapped."""

from __future__ import annotations

import uuid

import pytest

from adit.audit.models import AuditEntry, PseudonymMapping
from adit.core.dicom.testing.synthetic import make_study
from adit.core.tests.test_transfer_engine import (
    TaskSpec,
    create_transfer_job,
    orthanc_server,
    run_dicom_worker,
    task_report,
)

pytestmark = [pytest.mark.peers, pytest.mark.django_db(transaction=True)]


def test_worker_records_the_transfer_and_the_mapping(orthanc_a, orthanc_b):
    source = orthanc_server(orthanc_a, "Orthanc A")
    destination = orthanc_server(orthanc_b, "Orthanc B")
    tag = uuid.uuid4().hex[:8].upper()
    study = make_study(f"WRK{tag}", series=(("CT", 2), ("MR", 1)))
    orthanc_a.upload(study)
    job = create_transfer_job(
        source,
        destination,
        [TaskSpec(study[0].PatientID, str(study[0].StudyInstanceUID), pseudonym=f"PSN{tag}")],
    )

    run_dicom_worker()

    job.refresh_from_db()
    assert job.status == job.Status.SUCCESS, task_report(job)
    task = job.tasks.get()
    entry = AuditEntry.objects.get(action=AuditEntry.Action.TRANSFER)
    assert (entry.job_id, entry.task_id, entry.outcome) == (job.pk, task.pk, "success")
    assert (entry.patient_id, entry.pseudonym) == (study[0].PatientID, f"PSN{tag}")
    mapped = PseudonymMapping.objects.filter(job_type="example_app", job_id=job.pk)
    assert {row.series_uid for row in mapped} == {str(ds.SeriesInstanceUID) for ds in study}
    assert {row.pseudonymized_study_uid for row in mapped} == set(
        entry.details["pseudonymized_study_uids"]
    )
