"""What the job pages say (from where, to where, as whom, how much) and the global Jobs page
with its filters and search."""

import pytest
from django.urls import reverse

from adit.accounts.factories import UserFactory
from adit.core.factories import DicomFolderFactory, DicomServerFactory
from adit.core.job_overview import format_duration
from adit.core.models import DicomJob, DicomTask
from adit.core.testing.jobs import batch_query_job, transfer_job

pytestmark = pytest.mark.django_db

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"


@pytest.fixture
def nodes():
    return DicomServerFactory(name="Clinical PACS"), DicomServerFactory(name="Research PACS")


@pytest.fixture
def rita():
    return UserFactory(username="rita")


def text(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def job_page(client, job) -> str:
    return text(client.get(reverse(f"{job._meta.app_label}:job_detail", args=[job.pk])))


def test_job_page_says_from_where_to_where_as_whom_and_how_much(client, nodes, rita):
    job = transfer_job(
        rita,
        nodes[0],
        nodes[1],
        [("PAT1", STUDY_UID, "LUNG-001"), ("PAT2", STUDY_UID + "1", "LUNG-002")],
        trial_protocol_id="TP-7",
        trial_protocol_name="Lung screening",
    )
    client.force_login(rita)
    page = job_page(client, job)
    summary = page[page.index('id="job-summary"') :]
    assert "Clinical PACS" in summary[summary.index('id="job-source"') :][:200]
    assert "Research PACS" in summary[summary.index('id="job-destination"') :][:200]
    pseudonyms = summary[summary.index('id="job-pseudonym"') :][:400]
    assert "LUNG-001" in pseudonyms and "LUNG-002" in pseudonyms
    assert "TP-7" in page and "Lung screening" in page
    assert "Basic Application Level Confidentiality Profile" in page  # profile applied
    transferred = summary[summary.index('id="job-transferred"') :][:300]
    assert "2 of 2 studies" in transferred and "6 instances" in transferred
    assert "5.9\xa0KB" in transferred or "5.9 KB" in transferred
    assert "1 min 5 s" in page  # duration


def test_job_page_of_a_folder_destination_names_the_output(client, rita):
    folder = DicomFolderFactory(name="Exports", path="/data/exports")
    job = transfer_job(rita, DicomServerFactory(), folder, [("P", STUDY_UID, "")])
    client.force_login(rita)
    page = job_page(client, job)
    assert f"/data/exports/adit_selective_transfer_{job.pk}_" in page
    assert "not pseudonymized" in page
    job.archive_password = "secret"
    job.save()
    assert "_task&lt;N&gt;.7z" in job_page(client, job)


def test_job_without_tasks_shows_no_full_bar(client, rita):
    job = transfer_job(rita, DicomServerFactory(), DicomServerFactory(), [], status="PE")
    client.force_login(rita)
    page = job_page(client, job)
    assert 'aria-valuenow="0"' in page and "The job has no tasks" in page


def test_running_task_makes_the_badge_say_in_progress(client, nodes, rita):
    job = transfer_job(
        rita, nodes[0], nodes[1], [("P", STUDY_UID, "X")], status=DicomJob.Status.PENDING
    )
    job.tasks.update(status=DicomTask.Status.IN_PROGRESS)
    client.force_login(rita)
    progress = job_page(client, job).split('id="job-progress"')[1][:600]
    assert 'data-status="IP"' in progress and "Pending" not in progress


def test_batch_query_tasks_show_their_row_and_query(client, rita):
    job = batch_query_job(
        rita,
        DicomServerFactory(),
        [{"patient_id": "4711", "modalities": ["CT"], "accession_number": "ACC9"}],
    )
    client.force_login(rita)
    page = job_page(client, job)
    assert "Line 2:" in page
    assert "PatientID=4711, AccessionNumber=ACC9, Modality=CT" in page


def test_task_table_is_paginated_before_it_pushes_results_down(client, nodes, rita):
    studies = [(f"P{n}", f"{STUDY_UID}.{n}", "") for n in range(45)]
    job = transfer_job(rita, nodes[0], nodes[1], studies)
    client.force_login(rita)
    page = job_page(client, job)
    table = page[page.index('id="task-table"') :]
    assert table.count("<tr>") == 21  # header + 20 tasks
    assert "Page 1 of 3" in page


# --- the global Jobs page --------------------------------------------------------------------


def jobs_page(client, **params):
    response = client.get(reverse("all_jobs"), params)
    assert response.status_code == 200
    return response


def found(response) -> list:
    return [(row.app_name, row.job.pk) for row in response.context["rows"]]


def test_jobs_page_lists_jobs_of_every_app_newest_first(client, nodes, rita):
    transfer = transfer_job(rita, nodes[0], nodes[1], [("P1", STUDY_UID, "LUNG-001")])
    query = batch_query_job(rita, nodes[0], [{"patient_id": "4711"}])
    client.force_login(rita)
    response = jobs_page(client)
    assert found(response) == [
        ("Batch query job", query.pk),
        ("Selective transfer job", transfer.pk),
    ]
    assert found(jobs_page(client, app="batch_query")) == [("Batch query job", query.pk)]
    assert found(jobs_page(client, status="SU")) == [("Selective transfer job", transfer.pk)]


@pytest.mark.parametrize(
    "search", ["LUNG-001", "lung-001", "P1", STUDY_UID, "4711", "ACC9", "Lung study"]
)
def test_jobs_page_finds_a_job_by_pseudonym_patient_accession_or_study(client, nodes, rita, search):
    transfer = transfer_job(rita, nodes[0], nodes[1], [("P1", STUDY_UID, "LUNG-001")])
    query = batch_query_job(rita, nodes[0], [{"patient_id": "4711", "accession_number": "ACC9"}])
    transfer_job(rita, nodes[0], nodes[1], [("P2", STUDY_UID + "9", "OTHER")])
    client.force_login(rita)
    wanted = query if search in ("4711", "ACC9", "Lung study") else transfer
    assert [pk for _app, pk in found(jobs_page(client, q=search))] == [wanted.pk]


def test_non_staff_never_find_other_users_jobs(client, nodes, rita):
    transfer_job(UserFactory(), nodes[0], nodes[1], [("P1", STUDY_UID, "LUNG-001")])
    client.force_login(rita)
    assert found(jobs_page(client, q="LUNG-001", scope="all")) == []
    assert found(jobs_page(client, scope="all", owner="rita")) == []


def test_staff_toggle_between_their_jobs_and_everyones(client, nodes, rita):
    staff = UserFactory(username="sam", is_staff=True)
    own = transfer_job(staff, nodes[0], nodes[1], [("P1", STUDY_UID, "A")])
    ritas = transfer_job(rita, nodes[0], nodes[1], [("P2", STUDY_UID + "2", "B")])
    client.force_login(staff)
    response = jobs_page(client)
    assert [pk for _app, pk in found(response)] == [own.pk]
    assert "My jobs" in response.content.decode()
    response = jobs_page(client, scope="all")
    assert [pk for _app, pk in found(response)] == [ritas.pk, own.pk]
    assert "Jobs of everyone" in response.content.decode()
    assert [pk for _app, pk in found(jobs_page(client, scope="all", owner="RITA"))] == [ritas.pk]
    # The app's own list has the same toggle.
    url = reverse("selective_transfer:job_list")
    assert [row.job.pk for row in client.get(url).context["rows"]] == [own.pk]
    everyone = client.get(url, {"scope": "all"}).context["rows"]
    assert [row.job.pk for row in everyone] == [ritas.pk, own.pk]


def test_jobs_page_filters_by_created_date_and_names_bad_filters(client, nodes, rita):
    job = transfer_job(rita, nodes[0], nodes[1], [("P1", STUDY_UID, "A")])
    today = job.created.date().isoformat()
    client.force_login(rita)
    assert found(jobs_page(client, created_from=today, created_to=today)) != []
    assert found(jobs_page(client, created_from="2000-01-01", created_to="2000-01-02")) == []
    response = jobs_page(client, created_from="yesterday", status="<b>", created_to="2000-01-01")
    page = response.content.decode()
    assert "Enter a valid date." in page
    assert "Select a valid choice." in page and "<b>" not in page
    response = jobs_page(client, created_from="2020-01-02", created_to="2020-01-01")
    assert "The end date lies before the start date." in response.content.decode()


def test_jobs_menu_entry_only_for_users_with_an_app(client, rita):
    client.force_login(rita)
    assert 'href="/jobs/"' not in text(client.get("/"))


def test_format_duration():
    from datetime import timedelta

    assert format_duration(None) == ""
    assert format_duration(timedelta(seconds=4.4)) == "4 s"
    assert format_duration(timedelta(minutes=3, seconds=12)) == "3 min 12 s"
    assert format_duration(timedelta(hours=2, minutes=5, seconds=9)) == "2 h 5 min"
