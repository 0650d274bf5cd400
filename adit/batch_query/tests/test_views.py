"""Batch query pages: upload → job, problems shown with nothing created, results, exports."""

import csv
import datetime as dt
import io

import openpyxl
import pytest
from django.urls import reverse
from procrastinate.contrib.django.models import ProcrastinateJob

from adit.accounts.factories import UserFactory
from adit.batch_query.exports import export_table
from adit.batch_query.models import BatchQueryJob, BatchQueryResult, BatchQueryTask
from adit.core.models import DicomTask
from adit.core.statuses import Status
from adit.core.testing.sheets import csv_upload, upload, xlsx_upload

pytestmark = pytest.mark.django_db

URL = reverse("batch_query:job_create")


def form_data(source, batch_file, **extra):
    return {
        "source": source.pk,
        "project_name": "Lung study",
        "project_description": "Which patients have a CT?",
        "batch_file": batch_file,
        **extra,
    }


def test_upload_creates_a_job_with_one_queued_task_per_row(client, researcher, source_server):
    client.force_login(researcher)
    file = xlsx_upload(
        [
            ["PatientID", "Modality", "Pseudonym"],
            ["0001", "CT", "A"],
            [None, None, None],
            ["0002", "CT, MR", "B"],
        ]
    )
    response = client.post(URL, form_data(source_server, file))

    job = BatchQueryJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("batch_query:job_detail", args=[job.pk])
    assert job.status == BatchQueryJob.Status.PENDING
    assert job.owner == researcher
    tasks = list(job.tasks.order_by("id"))
    assert [(t.lines, t.patient_id, t.modalities) for t in tasks] == [
        ([2], "0001", ["CT"]),
        ([4], "0002", ["CT", "MR"]),
    ]
    assert {t.source_id for t in tasks} == {source_server.pk}
    queued = ProcrastinateJob.objects.filter(id__in=[t.queued_job_id for t in tasks])
    assert queued.count() == 2


def test_invalid_rows_are_listed_on_the_page_and_nothing_is_created(
    client, researcher, source_server
):
    client.force_login(researcher)
    file = csv_upload([["PatientID", "Modality"], ["P*", "CT"], ["1", ""], ["2", "CT"]])
    response = client.post(URL, form_data(source_server, file))

    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="sheet-problems"' in html
    assert "Line 2" in html and "Wildcards (* or ?) are not allowed here." in html
    assert "Line 3" in html and "Give a Modality (e.g. CT or CT, MR)" in html
    assert "The file has 2 problems on 2 lines; nothing was created." in html
    assert not BatchQueryJob.objects.exists()
    assert not BatchQueryTask.objects.exists()


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("broken.xlsx", b"PK\x03\x04 not really a zip", "is not a valid Excel workbook"),
        ("notes.xlsx", b"just some text, renamed", "is not a valid Excel workbook"),
        ("data.ods", b"whatever", "is not an .xlsx or .csv file"),
    ],
)
def test_unreadable_files_are_refused(client, researcher, source_server, name, data, message):
    client.force_login(researcher)
    response = client.post(URL, form_data(source_server, upload(data, name)))
    assert message in response.content.decode()
    assert not BatchQueryJob.objects.exists()


def test_oversized_file_is_refused(client, researcher, source_server, settings):
    settings.BATCH_FILE_MAX_SIZE = 1024
    client.force_login(researcher)
    rows = [["PatientID", "Modality"]] + [[f"P{n:05d}", "CT"] for n in range(200)]
    response = client.post(URL, form_data(source_server, csv_upload(rows)))
    assert "at most 1 KiB are allowed." in response.content.decode()
    assert not BatchQueryJob.objects.exists()


def test_non_staff_row_limit_and_staff_limit(client, researcher, source_server, settings):
    settings.MAX_BATCH_QUERY_ROWS = 2
    settings.BATCH_FILE_MAX_ROWS = 3
    rows = [["PatientID", "Modality"]] + [[f"P{n}", "CT"] for n in range(3)]
    client.force_login(researcher)
    response = client.post(URL, form_data(source_server, csv_upload(rows)))
    assert (
        "The file has more than 2 data rows; at most 2 are allowed for non-staff users. Split "
        "it into several files." in response.content.decode()
    )
    assert not BatchQueryJob.objects.exists()

    researcher.is_staff = True
    researcher.save()
    response = client.post(URL, form_data(source_server, csv_upload(rows)))
    assert response.status_code == 302
    assert BatchQueryJob.objects.get().tasks.count() == 3


def test_a_source_the_user_may_not_use_is_refused(client, researcher):
    from adit.core.factories import DicomServerFactory

    foreign = DicomServerFactory()
    client.force_login(researcher)
    file = csv_upload([["PatientID", "Modality"], ["1", "CT"]])
    response = client.post(URL, form_data(foreign, file))
    assert "Select a valid choice" in response.content.decode()
    assert not BatchQueryJob.objects.exists()


def test_form_page_links_the_sample_files_and_explains_the_wildcards(client, researcher):
    client.force_login(researcher)
    html = client.get(URL).content.decode()
    assert "batch_query/batch_query_sample.xlsx" in html
    assert "batch_query/batch_query_sample.csv" in html
    assert "DICOM wildcards, not regular expressions" in html


# --- results and exports ------------------------------------------------------------------------


def job_with_outcomes(owner, source) -> BatchQueryJob:
    """Line 2 found two studies, line 3 found nothing, line 4 failed."""
    job = BatchQueryJob.objects.create(
        owner=owner, project_name="P", project_description="D", status=Status.FAILURE
    )
    found = BatchQueryTask.objects.create(
        job=job,
        source=source,
        lines=[2],
        patient_id="0001",
        modalities=["CT"],
        pseudonym="A",
        status=DicomTask.Status.SUCCESS,
        message="2 studies found.",
    )
    BatchQueryTask.objects.create(
        job=job,
        source=source,
        lines=[3],
        patient_id="0002",
        modalities=["MR"],
        status=DicomTask.Status.WARNING,
        message="Nothing found: no such patient at the source.",
    )
    BatchQueryTask.objects.create(
        job=job,
        source=source,
        lines=[4],
        patient_name="Doe^Jane",
        patient_birth_date=dt.date(1970, 1, 2),
        modalities=["CT"],
        status=DicomTask.Status.FAILURE,
        message="The source could not be reached.",
    )
    for n, modalities in ((1, ["CT"]), (2, ["CT", "PR"])):
        BatchQueryResult.objects.create(
            job=job,
            task=found,
            patient_id="0001",
            patient_name="Doe^John",
            patient_birth_date=dt.date(1960, 5, 6),
            accession_number=f"00{n}",
            study_date=dt.date(2024, 1, n),
            study_time=dt.time(8, 30),
            modalities=modalities,
            image_count=10 * n,
            study_description=f"CT Thorax {n}",
            pseudonym="A",
            study_uid=f"1.2.3.{n}",
        )
    return job


EXPORT_HEADER = [
    "Line", "Pseudonym", "PatientID", "PatientName", "PatientBirthDate", "AccessionNumber",
    "StudyDate", "StudyTime", "StudyDescription", "ModalitiesInStudy", "NumberOfInstances",
    "StudyInstanceUID",
]  # fmt: skip


def test_export_of_found_studies(researcher, source_server):
    job = job_with_outcomes(researcher, source_server)
    header, rows = export_table(job, include_failures=False)
    assert header == EXPORT_HEADER
    assert rows == [
        ["2", "A", "0001", "Doe, John", "1960-05-06", "001", "2024-01-01", "08:30:00",
         "CT Thorax 1", "CT", 10, "1.2.3.1"],
        ["2", "A", "0001", "Doe, John", "1960-05-06", "002", "2024-01-02", "08:30:00",
         "CT Thorax 2", "CT, PR", 20, "1.2.3.2"],
    ]  # fmt: skip


def test_export_with_failures_lists_every_line_with_its_reason(researcher, source_server):
    job = job_with_outcomes(researcher, source_server)
    header, rows = export_table(job, include_failures=True)
    assert header[:4] == ["Line", "Status", "Reason", "Pseudonym"]
    assert [row[:5] for row in rows] == [
        ["2", "Found", "", "A", "0001"],
        ["2", "Found", "", "A", "0001"],
        ["3", "Nothing found", "Nothing found: no such patient at the source.", "", "0002"],
        ["4", "Failed", "The source could not be reached.", "", ""],
    ]
    assert rows[3][5:7] == ["Doe, Jane", "1970-01-02"]


def test_download_as_xlsx_and_csv(client, researcher, source_server):
    job = job_with_outcomes(researcher, source_server)
    client.force_login(researcher)
    url = reverse("batch_query:download", args=[job.pk])

    response = client.get(url, {"format": "xlsx", "failures": "1"})
    assert response["Content-Type"].startswith("application/vnd.openxmlformats")
    assert (
        f'filename="batch_query_job_{job.pk}_results_with_failures.xlsx"'
        in response["Content-Disposition"]
    )
    sheet = openpyxl.load_workbook(io.BytesIO(response.content)).active
    assert sheet is not None
    values = [[cell.value for cell in row] for row in sheet.iter_rows()]
    assert values[0][:3] == ["Line", "Status", "Reason"]
    assert values[1][7] == "001"  # AccessionNumber: a text cell keeps its leading zeros
    assert len(values) == 5

    response = client.get(url, {"format": "csv"})
    text = response.content.decode("utf-8")
    assert text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert rows[0] == EXPORT_HEADER
    assert rows[1][5] == "001"
    assert len(rows) == 3

    assert client.get(url, {"format": "pdf"}).status_code == 404


def test_other_users_cannot_see_or_export_a_job(client, researcher, source_server):
    job = job_with_outcomes(researcher, source_server)
    client.force_login(UserFactory())
    assert client.get(reverse("batch_query:download", args=[job.pk])).status_code == 404
    assert client.get(reverse("batch_query:results", args=[job.pk])).status_code == 404


def test_results_page_filters(client, researcher, source_server):
    job = job_with_outcomes(researcher, source_server)
    client.force_login(researcher)
    url = reverse("batch_query:results", args=[job.pk])
    assert client.get(url).context["page"].paginator.count == 2
    assert client.get(url, {"q": "thorax 2"}).context["page"].paginator.count == 1
    assert client.get(url, {"modality": "pr"}).context["page"].paginator.count == 1
    assert client.get(url, {"line": "3"}).context["page"].paginator.count == 0
    assert client.get(url, {"line": "2"}).context["page"].paginator.count == 2


def test_job_and_task_pages_show_exports_and_results(client, researcher, source_server):
    job = job_with_outcomes(researcher, source_server)
    client.force_login(researcher)
    html = client.get(reverse("batch_query:job_detail", args=[job.pk])).content.decode()
    assert reverse("batch_query:download", args=[job.pk]) in html
    assert "Lung study" not in html and "<strong>P</strong>" in html
    task = job.tasks.get(lines=[2])
    html = client.get(reverse("batch_query:task_detail", args=[task.pk])).content.decode()
    assert "CT Thorax 1" in html and "1960-05-06" in html
