"""Batch transfer upload: job and grouped tasks, rules of the form, bulk creation of 10,000 rows."""

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from procrastinate.contrib.django.models import ProcrastinateJob

from adit.batch_transfer.models import BatchTransferJob, BatchTransferTask
from adit.core.models import GroupDeidentificationDefaults
from adit.core.statuses import Status
from adit.core.testing.sheets import csv_upload, xlsx_upload

pytestmark = pytest.mark.django_db

URL = reverse("batch_transfer:job_create")
HEADER = ["PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Pseudonym"]


def form_data(source, destination, batch_file, **extra):
    return {
        "source": source.pk,
        "destination": destination.pk,
        "project_name": "Lung study",
        "project_description": "CTs of the cohort",
        "ethics_application_id": "EK-2024-17",
        "trial_protocol_id": "LUNG",
        "batch_file": batch_file,
        **extra,
    }


def test_upload_groups_rows_by_study_into_queued_tasks(
    client, researcher, source_server, destination_server
):
    client.force_login(researcher)
    file = xlsx_upload(
        [
            HEADER,
            ["0001", "1.2.3", "1.2.3.1", "A"],
            ["0002", "1.2.4", "", "B"],
            ["0001", "1.2.3", "1.2.3.2", "A"],
        ]
    )
    response = client.post(URL, form_data(source_server, destination_server, file))

    job = BatchTransferJob.objects.get()
    assert response.status_code == 302
    assert (job.status, job.ethics_application_id, job.trial_protocol_id) == (
        Status.PENDING,
        "EK-2024-17",
        "LUNG",
    )
    tasks = [
        (t.lines, t.patient_id, t.study_uid, t.series_uids, t.pseudonym, t.destination_id)
        for t in job.tasks.order_by("id")
    ]
    assert tasks == [
        ([2, 4], "0001", "1.2.3", ["1.2.3.1", "1.2.3.2"], "A", destination_server.pk),
        ([3], "0002", "1.2.4", [], "B", destination_server.pk),
    ]
    assert (
        ProcrastinateJob.objects.filter(
            id__in=job.tasks.values("queued_job_id"), queue_name="dicom"
        ).count()
        == 2
    )


def test_ethics_approval_is_required_when_the_setting_says_so(
    client, researcher, source_server, destination_server, settings
):
    client.force_login(researcher)
    file = csv_upload([HEADER, ["1", "1.2.3", "", "A"]])
    response = client.post(
        URL, form_data(source_server, destination_server, file, ethics_application_id="")
    )
    assert response.context["form"].errors["ethics_application_id"] == ["This field is required."]
    assert not BatchTransferJob.objects.exists()

    settings.ETHICS_APPROVAL_REQUIRED = False
    file = csv_upload([HEADER, ["1", "1.2.3", "", "A"]])
    response = client.post(
        URL, form_data(source_server, destination_server, file, ethics_application_id="")
    )
    assert response.status_code == 302


def test_pseudonyms_may_be_left_out_only_with_the_permission(
    client, researcher, researchers, source_server, destination_server
):
    client.force_login(researcher)
    rows = [HEADER, ["1", "1.2.3", "", ""]]
    response = client.post(URL, form_data(source_server, destination_server, csv_upload(rows)))
    assert "A Pseudonym is required" in response.content.decode()
    assert not BatchTransferJob.objects.exists()

    researchers.permissions.add(
        Permission.objects.get(
            codename="can_transfer_unpseudonymized", content_type__app_label="batch_transfer"
        )
    )
    researcher = type(researcher).objects.get(pk=researcher.pk)  # fresh permission cache
    client.force_login(researcher)
    response = client.post(URL, form_data(source_server, destination_server, csv_upload(rows)))
    assert response.status_code == 302
    assert BatchTransferTask.objects.get().pseudonym == ""


def test_cross_row_conflicts_are_shown_and_nothing_is_created(
    client, researcher, source_server, destination_server
):
    client.force_login(researcher)
    file = csv_upload([HEADER, ["P1", "1.2.3", "", "A"], ["P2", "1.2.3", "", "B"]])
    html = client.post(URL, form_data(source_server, destination_server, file)).content.decode()
    assert "Lines 2, 3" in html
    assert "The study 1.2.3 is listed with different PatientIDs" in html
    assert not BatchTransferJob.objects.exists()


def test_source_and_destination_must_differ(client, researcher, researchers, source_server):
    from adit.batch_query.tests.conftest import give_access

    researchers.dicom_node_accesses.filter(node=source_server).update(destination=True)
    client.force_login(researcher)
    file = csv_upload([HEADER, ["1", "1.2.3", "", "A"]])
    response = client.post(URL, form_data(source_server, source_server, file))
    assert response.context["form"].errors["destination"] == [
        "The destination must differ from the source."
    ]
    assert give_access  # the helper is shared with the batch query tests


def test_ten_thousand_rows_become_a_job_with_bulk_inserts_and_one_queue_round_trip(
    client, researcher, source_server, destination_server, settings
):
    researcher.is_staff = True
    researcher.save()
    client.force_login(researcher)
    rows = [HEADER] + [
        [f"{n:07d}", f"1.2.826.0.1.3680043.10.1.{n}", "", f"PSN{n:07d}"] for n in range(10_000)
    ]
    file = xlsx_upload(rows, name="big.xlsx")

    with CaptureQueriesContext(connection) as queries:
        response = client.post(URL, form_data(source_server, destination_server, file))

    assert response.status_code == 302
    job = BatchTransferJob.objects.get()
    assert job.tasks.count() == 10_000
    assert job.tasks.filter(queued_job_id=None).count() == 0
    assert job.tasks.order_by("id")[0].patient_id == "0000000"  # leading zeros kept
    # Bulk inserts in batches and one deferral of all tasks; nothing per row.
    inserts = [
        q
        for q in queries.captured_queries
        if "batch_transfer_batchtransfertask" in q["sql"]
        and q["sql"].lstrip().upper().startswith("INSERT")
    ]
    assert len(inserts) <= 5
    defers = [q for q in queries.captured_queries if "procrastinate_defer" in q["sql"]]
    assert len(defers) == 1
    assert len(queries.captured_queries) < 100


def test_group_default_preselects_options_and_the_job_keeps_and_shows_its_own(
    client, researcher, researchers, source_server, destination_server
):
    GroupDeidentificationDefaults.objects.create(
        group=researchers, options=["retain_modified_dates"]
    )
    client.force_login(researcher)

    page = client.get(URL)
    assert page.context["form"]["deid_options"].value() == ["retain_modified_dates"]
    assert b'value="retain_modified_dates"' in page.content

    file = csv_upload([HEADER, ["0001", "1.2.3", "", "A"]])
    chosen = ["clean_descriptors", "retain_device_identity"]
    response = client.post(
        URL, form_data(source_server, destination_server, file, deid_options=chosen)
    )
    assert response.status_code == 302
    job = BatchTransferJob.objects.get()
    assert job.deid_options == ["retain_device_identity", "clean_descriptors"]

    detail = client.get(reverse("batch_transfer:job_detail", args=[job.pk])).content.decode()
    assert "Basic Application Level Confidentiality Profile" in detail
    assert "Retain Device Identity" in detail and "Clean Descriptors" in detail
    assert "Modified Dates" not in detail


def test_contradicting_date_options_are_refused_by_name(
    client, researcher, source_server, destination_server
):
    client.force_login(researcher)
    file = csv_upload([HEADER, ["0001", "1.2.3", "", "A"]])
    both = ["retain_full_dates", "retain_modified_dates"]

    response = client.post(
        URL, form_data(source_server, destination_server, file, deid_options=both)
    )

    assert response.status_code == 400  # an invalid upload is a client error
    assert "Full Dates or with Modified Dates, not both" in " ".join(
        response.context["form"].errors["deid_options"]
    )
    assert not BatchTransferJob.objects.exists()
