"""Transfers between two real Orthancs are audited and leave a pseudonym mapping that only a
permitted user can export (every export, and every refused attempt, audited)."""

from __future__ import annotations

import csv
import io
import uuid

import openpyxl
import pytest
from django.contrib.auth.models import Permission

from adit.accounts.factories import GroupFactory, UserFactory
from adit.audit.models import AuditEntry, PseudonymMapping
from adit.core.dicom.testing.synthetic import make_study
from adit.core.models import DicomTask
from adit.core.processors import TransferTaskProcessor
from adit.core.tests.example_app.models import ExampleTransferJob, ExampleTransferTask
from adit.core.tests.test_transfer_engine import orthanc_server

pytestmark = [pytest.mark.peers, pytest.mark.django_db]

EXPORT_URL = "/audit/pseudonym-mapping/"


def transfer(owner, source, destination, patient_id, study_uid, pseudonym):
    """A job with one task, run through the transfer processor (in this process)."""
    job = ExampleTransferJob.objects.create(owner=owner)
    task = ExampleTransferTask.objects.create(
        job=job,
        source=source,
        destination=destination,
        patient_id=patient_id,
        study_uid=study_uid,
        pseudonym=pseudonym,
    )
    result = TransferTaskProcessor(task).process()
    assert result.status == DicomTask.Status.SUCCESS, result
    return job, task


def orthanc_series(orthanc, patient_id: str) -> dict[str, set[str]]:
    """StudyInstanceUID → its SeriesInstanceUIDs at `orthanc` for the PatientID."""
    studies = orthanc.rest(
        "POST",
        "/tools/find",
        json={"Level": "Series", "Query": {"PatientID": patient_id}, "Expand": True},
    ).json()
    found: dict[str, set[str]] = {}
    for series in studies:
        study = orthanc.rest("GET", f"/studies/{series['ParentStudy']}").json()
        study_uid = study["MainDicomTags"]["StudyInstanceUID"]
        found.setdefault(study_uid, set()).add(series["MainDicomTags"]["SeriesInstanceUID"])
    return found


@pytest.fixture
def trusted_party():
    group = GroupFactory(name="Trusted party")
    group.permissions.add(
        Permission.objects.get(content_type__app_label="audit", codename="export_pseudonym_mapping")
    )
    return UserFactory(username="trudy", groups=[group])


def test_two_jobs_same_patient_and_pseudonym(client, orthanc_a, orthanc_b, trusted_party):
    source = orthanc_server(orthanc_a, "Orthanc A")
    destination = orthanc_server(orthanc_b, "Orthanc B")
    tag = uuid.uuid4().hex[:8].upper()
    patient_id, pseudonym = f"MAP{tag}", f"PSN{tag}"
    first = make_study(patient_id, study_date="20240101", series=(("CT", 2), ("MR", 1)))
    second = make_study(patient_id, study_date="20240201", series=(("CT", 1),))
    orthanc_a.upload(first + second)
    researcher = UserFactory(username="rita")

    job1, task1 = transfer(
        researcher, source, destination, patient_id, first[0].StudyInstanceUID, pseudonym
    )
    job2, task2 = transfer(
        researcher, source, destination, patient_id, second[0].StudyInstanceUID, pseudonym
    )

    # The mapping holds exactly what arrived at the destination under the pseudonym.
    arrived = orthanc_series(orthanc_b, pseudonym)
    rows = list(PseudonymMapping.objects.filter(pseudonym=pseudonym))
    mapped: dict[str, set[str]] = {}
    for row in rows:
        assert row.patient_id == patient_id
        mapped.setdefault(row.pseudonymized_study_uid, set()).add(row.pseudonymized_series_uid)
    assert mapped == arrived
    assert {row.study_uid for row in rows} == {
        first[0].StudyInstanceUID,
        second[0].StudyInstanceUID,
    }
    assert {row.series_uid for row in rows} == {str(ds.SeriesInstanceUID) for ds in first + second}
    assert len(rows) == 3

    # Each task's end is in the audit trail with job, task, nodes, study and pseudonym.
    transfers = AuditEntry.objects.filter(action=AuditEntry.Action.TRANSFER).order_by("id")
    assert [(e.job_id, e.task_id) for e in transfers] == [(job1.pk, task1.pk), (job2.pk, task2.pk)]
    for entry, study in zip(transfers, (first, second), strict=True):
        assert entry.username == "rita"
        assert entry.outcome == AuditEntry.Outcome.SUCCESS
        assert entry.job_type == "example_app"
        assert (entry.source, entry.destination) == ("Orthanc A", "Orthanc B")
        assert (entry.patient_id, entry.pseudonym) == (patient_id, pseudonym)
        assert entry.study_uid == study[0].StudyInstanceUID
        assert len(entry.details["pseudonymized_study_uids"]) == 1
        assert entry.details["pseudonymized_study_uids"][0] in arrived

    # A task that runs again maps the same series again: no duplicates.
    TransferTaskProcessor(task1).process()
    assert PseudonymMapping.objects.filter(pseudonym=pseudonym).count() == 3

    # The trusted party exports the pseudonym's mapping: both studies.
    client.force_login(trusted_party)
    response = client.get(EXPORT_URL, {"pseudonym": pseudonym, "format": "csv"})
    assert response.status_code == 200, response.content[:500]
    table = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert {row["StudyInstanceUID"] for row in table} == {
        first[0].StudyInstanceUID,
        second[0].StudyInstanceUID,
    }
    assert {row["PseudonymizedStudyInstanceUID"] for row in table} == set(arrived)
    assert {row["Job"] for row in table} == {str(job1.pk), str(job2.pk)}
    # ... and the first job's mapping as xlsx.
    response = client.get(
        EXPORT_URL, {"job_type": "example_app", "job_id": job1.pk, "format": "xlsx"}
    )
    assert response.status_code == 200
    sheet = openpyxl.load_workbook(io.BytesIO(response.content)).active
    assert sheet is not None
    values = list(sheet.iter_rows(values_only=True))
    assert len(values) == 1 + 2  # header + the two series of the first study
    assert {str(row[5]) for row in values[1:]} == {first[0].StudyInstanceUID}
    exports = AuditEntry.objects.filter(action=AuditEntry.Action.MAPPING_EXPORT).order_by("id")
    assert [(e.username, e.outcome) for e in exports] == [("trudy", "success")] * 2
    assert exports[0].pseudonym == pseudonym
    assert exports[0].details["rows"] == 3
    assert exports[1].details["job_id"] == str(job1.pk)

    # The job page links the export for the trusted party only (staff here: a non-staff
    # user sees only their own jobs).
    trusted_party.is_staff = True
    trusted_party.save(update_fields=["is_staff"])
    page = client.get(f"/example-app/jobs/{job1.pk}/")
    assert page.status_code == 200
    assert "mapping-export-links" in page.content.decode()
    client.force_login(researcher)
    page = client.get(f"/example-app/jobs/{job1.pk}/")
    assert page.status_code == 200
    assert "mapping-export-links" not in page.content.decode()

    # A researcher without the permission: 403, and the attempt is audited.
    response = client.get(EXPORT_URL, {"pseudonym": pseudonym, "format": "csv"})
    assert response.status_code == 403
    assert patient_id.encode() not in response.content
    denied = AuditEntry.objects.filter(action=AuditEntry.Action.MAPPING_EXPORT).latest("id")
    assert (denied.username, denied.outcome) == ("rita", AuditEntry.Outcome.DENIED)
    assert denied.pseudonym == pseudonym


def test_failed_transfer_is_audited_as_failure(orthanc_a, orthanc_b):
    source = orthanc_server(orthanc_a, "Orthanc A")
    destination = orthanc_server(orthanc_b, "Orthanc B")
    job = ExampleTransferJob.objects.create(owner=UserFactory(username="rita"))
    task = ExampleTransferTask.objects.create(
        job=job,
        source=source,
        destination=destination,
        patient_id="NOSUCHPATIENT",
        study_uid="1.2.826.0.1.3680043.8.498.999999",
        pseudonym="PSN-X",
    )
    result = TransferTaskProcessor(task).process()
    assert result.status == DicomTask.Status.FAILURE
    entry = AuditEntry.objects.get(action=AuditEntry.Action.TRANSFER)
    assert entry.outcome == AuditEntry.Outcome.FAILURE
    assert entry.task_id == task.pk
    assert not PseudonymMapping.objects.exists()


def test_mapping_export_needs_a_job_or_a_pseudonym(client, trusted_party):
    client.force_login(trusted_party)
    assert client.get(EXPORT_URL).status_code == 200  # the form
    response = client.get(EXPORT_URL, {"format": "csv"})
    assert response.status_code == 400
    assert "Give a job" in response.content.decode()
    response = client.get(EXPORT_URL, {"job_type": "example_app", "format": "csv"})
    assert "both the job type and the job number" in response.content.decode()
    response = client.get(EXPORT_URL, {"job_type": "nope", "job_id": "1", "format": "pdf"})
    assert response.status_code == 400
    response = client.get(EXPORT_URL, {"job_type": "example_app", "job_id": "9" * 30})
    assert response.status_code == 400
    assert not AuditEntry.objects.filter(action=AuditEntry.Action.MAPPING_EXPORT).exists()


def test_mapping_export_cells_are_formula_safe(client, trusted_party):
    PseudonymMapping.objects.create(
        job_type="example_app",
        job_id=1,
        task_id=1,
        patient_id="=cmd|' /C calc'!A0",
        pseudonym="+PSN",
        study_uid="1.2",
        pseudonymized_study_uid="2.2",
        series_uid="1.3",
        pseudonymized_series_uid="2.3",
    )
    client.force_login(trusted_party)
    response = client.get(EXPORT_URL, {"pseudonym": "+PSN", "format": "csv"})
    (row,) = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert row["PatientID"] == "'=cmd|' /C calc'!A0"
    assert row["Pseudonym"] == "'+PSN"


def test_unpseudonymized_transfer_is_audited_without_a_mapping(orthanc_a, orthanc_b):
    source = orthanc_server(orthanc_a, "Orthanc A")
    destination = orthanc_server(orthanc_b, "Orthanc B")
    study = make_study(f"RAW{uuid.uuid4().hex[:8]}", series=(("CT", 1),))
    orthanc_a.upload(study)
    job, task = transfer(
        UserFactory(username="staffer"),
        source,
        destination,
        study[0].PatientID,
        study[0].StudyInstanceUID,
        pseudonym="",
    )
    entry = AuditEntry.objects.get(action=AuditEntry.Action.TRANSFER)
    assert (entry.task_id, entry.pseudonym, entry.outcome) == (task.pk, "", "success")
    assert entry.details["pseudonymized_study_uids"] == []
    assert not PseudonymMapping.objects.exists()
