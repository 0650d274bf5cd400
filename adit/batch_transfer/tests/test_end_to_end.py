"""Batch query → export → batch transfer against real Orthancs, run by real worker processes.

Patients at Orthanc A are queried from a spreadsheet (two found, one not); the export with
failures lists the missing one with its line and reason; the export of found studies is
uploaded unchanged as a batch transfer file; the studies arrive pseudonymized at Orthanc B.
"""

import csv
import io
import uuid

import openpyxl
import pytest
from django.urls import reverse

from adit.batch_query.models import BatchQueryJob
from adit.batch_query.tests.conftest import give_access, server_from_orthanc
from adit.batch_transfer.models import BatchTransferJob
from adit.core.dicom.testing.synthetic import make_study
from adit.core.testing.sheets import upload, xlsx_upload
from adit.core.testing.workers import run_worker_burst

pytestmark = pytest.mark.django_db(transaction=True)


def orthanc_studies(orthanc, patient_id: str) -> list[dict]:
    response = orthanc.rest(
        "POST",
        "/tools/find",
        json={"Level": "Study", "Query": {"PatientID": patient_id}, "Expand": True},
    )
    return response.json()


def run_dicom_worker() -> None:
    result = run_worker_burst("dicom", timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr


def test_batch_query_export_then_batch_transfer_pseudonymized(
    client, researcher, researchers, orthanc_a, orthanc_b
):
    source = server_from_orthanc(orthanc_a, "Orthanc A")
    destination = server_from_orthanc(orthanc_b, "Orthanc B")
    give_access(researchers, source, source=True, destination=False)
    give_access(researchers, destination, source=False, destination=True)
    tag = uuid.uuid4().hex[:8]
    found_ids = [f"00{tag}1", f"00{tag}2"]  # leading zeros must survive the round trip
    missing_id = f"00{tag}9"
    studies = {}
    for patient_id in found_ids:
        datasets = make_study(
            patient_id, patient_name=f"Batch^{patient_id}", series=(("CT", 2), ("MR", 1))
        )
        orthanc_a.upload(datasets)
        studies[patient_id] = str(datasets[0].StudyInstanceUID)
    client.force_login(researcher)

    # 1. Batch query: two patients exist, one does not.
    query_file = xlsx_upload(
        [
            ["PatientID", "Modality", "Pseudonym"],
            [found_ids[0], "CT", f"PSN-{tag}-A"],
            [missing_id, "CT", f"PSN-{tag}-X"],
            [found_ids[1], "MR", f"PSN-{tag}-B"],
        ]
    )
    response = client.post(
        reverse("batch_query:job_create"),
        {
            "source": source.pk,
            "project_name": "E2E",
            "project_description": "End to end",
            "batch_file": query_file,
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    run_dicom_worker()
    query_job = BatchQueryJob.objects.get()
    assert query_job.status == BatchQueryJob.Status.WARNING
    assert query_job.results.count() == 2

    # 2. Export with failures: the missing patient is listed with its line and reason.
    download = reverse("batch_query:download", args=[query_job.pk])
    text = client.get(download, {"format": "csv", "failures": "1"}).content.decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["Line"], r["Status"], r["PatientID"]) for r in rows] == [
        ("2", "Found", found_ids[0]),
        ("3", "Nothing found", missing_id),
        ("4", "Found", found_ids[1]),
    ]
    assert rows[1]["Reason"] == "Nothing found: no such patient at the source."
    assert rows[0]["StudyInstanceUID"] == studies[found_ids[0]]

    # 3. The export of found studies, uploaded unchanged as a batch transfer file.
    export = client.get(download, {"format": "xlsx"}).content
    sheet = openpyxl.load_workbook(io.BytesIO(export)).active
    assert sheet is not None
    assert [cell.value for cell in next(sheet.iter_rows())][:3] == [
        "Line",
        "Pseudonym",
        "PatientID",
    ]
    response = client.post(
        reverse("batch_transfer:job_create"),
        {
            "source": source.pk,
            "destination": destination.pk,
            "project_name": "E2E",
            "project_description": "End to end",
            "ethics_application_id": "EK-1",
            "batch_file": upload(export, f"batch_query_job_{query_job.pk}_results.xlsx"),
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    transfer_job = BatchTransferJob.objects.get()
    assert transfer_job.tasks.count() == 2
    run_dicom_worker()
    transfer_job.refresh_from_db()
    assert transfer_job.status == BatchTransferJob.Status.SUCCESS, [
        t.message for t in transfer_job.tasks.all()
    ]

    # 4. At Orthanc B only the pseudonymized studies, with new UIDs.
    for patient_id, pseudonym in ((found_ids[0], f"PSN-{tag}-A"), (found_ids[1], f"PSN-{tag}-B")):
        assert orthanc_studies(orthanc_b, patient_id) == []
        (arrived,) = orthanc_studies(orthanc_b, pseudonym)
        assert arrived["PatientMainDicomTags"]["PatientName"] == pseudonym
        assert arrived["MainDicomTags"]["StudyInstanceUID"] != studies[patient_id]
        assert len(arrived["Series"]) == 2
