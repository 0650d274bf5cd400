""" "Transfer these studies…": a batch transfer made from what a batch query found.

The views with stored query results (rules, permissions, refusals), then the whole flow in a
real browser as a researcher and as an admin: batch query at Orthanc A run by a real worker,
the results page's button, the transfer job run by a real worker, the pseudonymized studies at
Orthanc B. Set ADIT_SCREENSHOT_DIR to keep screenshots.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from adit.accounts.factories import DEFAULT_PASSWORD, GroupFactory, UserFactory
from adit.batch_query.models import BatchQueryJob, BatchQueryResult, BatchQueryTask
from adit.batch_query.tests.conftest import give_access, grant, server_from_orthanc
from adit.batch_transfer.models import BatchTransferJob
from adit.core.dicom.testing.synthetic import make_study
from adit.core.testing.browser import login
from adit.core.testing.sheets import xlsx_data
from adit.core.testing.workers import run_worker_burst

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
OPTIONS = {
    "project_name": "From query",
    "project_description": "Found studies",
    "ethics_application_id": "EK-7",
}


def query_job_with_results(owner, source, rows) -> BatchQueryJob:
    """A finished batch query job; `rows` are (line, patient_id, pseudonym, study, series)."""
    job = BatchQueryJob.objects.create(
        owner=owner,
        project_name="Query",
        project_description="Q",
        status=BatchQueryJob.Status.SUCCESS,
    )
    for line, patient_id, pseudonym, study_uid, series_uid in rows:
        task = BatchQueryTask.objects.create(
            job=job,
            source=source,
            lines=[line],
            patient_id=patient_id,
            pseudonym=pseudonym,
            status=BatchQueryTask.Status.SUCCESS,
        )
        BatchQueryResult.objects.create(
            job=job,
            task=task,
            patient_id=patient_id,
            pseudonym=pseudonym,
            study_uid=study_uid,
            series_uid=series_uid,
        )
    return job


def url(job: BatchQueryJob) -> str:
    return reverse("batch_transfer:job_create_from_query", args=[job.pk])


@pytest.mark.django_db
def test_found_studies_become_the_transfers_tasks(
    client, researcher, source_server, destination_server
):
    job = query_job_with_results(
        researcher,
        source_server,
        [
            (2, "P1", "PSN-1", "1.2.1", ""),
            (3, "P1", "PSN-1", "1.2.2", "1.2.2.5"),  # a series query: two series of one study
            (3, "P1", "PSN-1", "1.2.2", "1.2.2.7"),
            (4, "P2", "PSN-2", "1.2.3", "1.2.3.1"),  # found by a series query and whole
            (5, "P2", "PSN-2", "1.2.3", ""),
        ],
    )
    client.force_login(researcher)

    results_page = client.get(reverse("batch_query:results", args=[job.pk])).content.decode()
    assert url(job) in results_page and "Transfer these studies…" in results_page
    page = client.get(url(job))
    assert page.status_code == 200
    assert "3 studies found by" in page.content.decode()

    response = client.post(
        url(job), {"source": source_server.pk, "destination": destination_server.pk, **OPTIONS}
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    transfer = BatchTransferJob.objects.get()
    assert transfer.project_name == "From query"
    tasks = {
        t.study_uid: (t.patient_id, t.pseudonym, t.series_uids, t.lines)
        for t in transfer.tasks.all()
    }
    assert tasks == {
        "1.2.1": ("P1", "PSN-1", [], [2]),
        "1.2.2": ("P1", "PSN-1", ["1.2.2.5", "1.2.2.7"], [3]),
        "1.2.3": ("P2", "PSN-2", [], [4, 5]),
    }
    assert all(t.source_id == source_server.pk for t in transfer.tasks.all())
    assert transfer.status == BatchTransferJob.Status.PENDING


@pytest.mark.django_db
def test_refusals_name_the_lines_and_store_nothing(
    client, researcher, source_server, destination_server
):
    client.force_login(researcher)
    post = {"source": source_server.pk, "destination": destination_server.pk, **OPTIONS}

    no_pseudonym = query_job_with_results(
        researcher, source_server, [(2, "P1", "PSN-1", "1.2.1", ""), (7, "P2", "", "1.2.2", "")]
    )
    page = client.get(url(no_pseudonym)).content.decode()
    assert "Studies found by lines 7 have no pseudonym" in page  # said before submitting
    response = client.post(url(no_pseudonym), post)
    assert response.status_code == 400
    assert "Studies found by lines 7 have no pseudonym" in response.content.decode()

    two_pseudonyms = query_job_with_results(
        researcher, source_server, [(2, "P1", "A", "1.2.1", ""), (3, "P1", "B", "1.2.2", "")]
    )
    response = client.post(url(two_pseudonyms), post)
    assert "One patient has different pseudonyms (lines 2, 3)" in response.content.decode()

    nothing = query_job_with_results(researcher, source_server, [])
    BatchQueryTask.objects.create(job=nothing, source=source_server, lines=[2])
    response = client.post(url(nothing), post)
    assert "found no studies" in response.content.decode()

    # The source must be the query's, and one the group may (still) use as source.
    ok = query_job_with_results(researcher, source_server, [(2, "P1", "A", "1.2.1", "")])
    response = client.post(url(ok), {**post, "source": destination_server.pk})
    assert "The source must be the server the query asked" in response.content.decode()
    assert not BatchTransferJob.objects.exists()


@pytest.mark.django_db
def test_permission_and_ownership_are_checked(client, researcher, researchers, source_server):
    job = query_job_with_results(researcher, source_server, [(2, "P1", "A", "1.2.1", "")])

    other = UserFactory(username="otto", groups=[researchers])
    client.force_login(other)
    assert client.get(url(job)).status_code == 404  # not their job

    query_only = GroupFactory(name="Query only")
    grant(query_only, "batch_query", "add_batchqueryjob")
    quentin = UserFactory(username="quentin", groups=[query_only])
    job.owner = quentin
    job.save()
    client.force_login(quentin)
    assert client.get(url(job)).status_code == 403
    results_page = client.get(reverse("batch_query:results", args=[job.pk])).content.decode()
    assert "Transfer these studies" not in results_page


# --- the whole flow in a browser ---------------------------------------------------------------


def screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("ADIT_SCREENSHOT_DIR")
    if folder:
        width = page.viewport_size["width"] if page.viewport_size else 0
        page.screenshot(path=str(Path(folder) / f"batch-{name}-{width}.png"), full_page=True)


def run_dicom_worker() -> None:
    result = run_worker_burst("dicom", timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.acceptance
@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("role", ["researcher", "admin"])
def test_batch_query_then_transfer_these_studies(
    role, page: Page, live_server, researchers, orthanc_a, orthanc_b
):
    if role == "admin":
        UserFactory(username="ada", is_staff=True, is_superuser=True, groups=[researchers])
        username = "ada"
    else:
        UserFactory(username="rita", groups=[researchers])
        username = "rita"
    source = server_from_orthanc(orthanc_a, "Orthanc A")
    destination = server_from_orthanc(orthanc_b, "Orthanc B")
    give_access(researchers, source, source=True, destination=False)
    give_access(researchers, destination, source=False, destination=True)
    tag = uuid.uuid4().hex[:8]
    patients = {f"BQT-{tag}-1": f"PSN-{tag}-A", f"BQT-{tag}-2": f"PSN-{tag}-B"}
    for patient_id in patients:
        orthanc_a.upload(make_study(patient_id, series=(("CT", 2), ("MR", 1))))

    login(page, live_server.url, username, DEFAULT_PASSWORD)
    page.goto(f"{live_server.url}{reverse('batch_query:job_create')}")
    page.get_by_label("Source").select_option(label="Orthanc A")
    page.get_by_label("Project name").fill("Query then transfer")
    page.get_by_label("Project description").fill("Browser flow")
    rows = [["PatientID", "Modality", "Pseudonym"], *([p, "CT", s] for p, s in patients.items())]
    page.get_by_label("Batch file").set_input_files(
        files=[{"name": "query.xlsx", "mimeType": XLSX_TYPE, "buffer": xlsx_data(rows)}]
    )
    page.get_by_role("button", name="Create job").click()
    assert page.locator(".invalid-feedback").all_inner_texts() == []
    expect(page.locator("h1")).to_contain_text("Batch query job")
    run_dicom_worker()
    query_job = BatchQueryJob.objects.get()
    assert query_job.results.count() == 2

    page.goto(f"{live_server.url}{reverse('batch_query:results', args=[query_job.pk])}")
    screenshot(page, f"query-results-{role}")
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]  # type: ignore[index]
    page.get_by_role("link", name="Transfer these studies…").click()
    expect(page.locator("#from-query-summary")).to_contain_text("2 studies found by")
    expect(page.locator("#from-query-studies")).to_contain_text(f"PSN-{tag}-A")
    page.get_by_label("Destination").select_option(label="Orthanc B")
    page.get_by_label("Ethics committee approval").fill("EK-42")
    screenshot(page, f"transfer-from-query-{role}")
    page.get_by_role("button", name="Create job").click()
    expect(page.locator("h1")).to_contain_text("Batch transfer job")

    run_dicom_worker()
    transfer = BatchTransferJob.objects.get()
    assert transfer.status == BatchTransferJob.Status.SUCCESS, [
        t.message for t in transfer.tasks.all()
    ]
    page.reload()
    screenshot(page, f"transfer-done-{role}")
    for patient_id, pseudonym in patients.items():
        found = orthanc_b.rest(
            "POST", "/tools/find", json={"Level": "Study", "Query": {"PatientID": pseudonym}}
        ).json()
        assert len(found) == 1
        missing = orthanc_b.rest(
            "POST", "/tools/find", json={"Level": "Study", "Query": {"PatientID": patient_id}}
        ).json()
        assert missing == []


@pytest.mark.django_db
def test_too_long_values_are_refused_with_a_message_not_cut(
    client, researcher, source_server, destination_server
):
    job = query_job_with_results(researcher, source_server, [(2, "P1", "A", "1.2.1", "")])
    client.force_login(researcher)
    for page_url in (url(job), reverse("batch_transfer:job_create"), "/batch-query/"):
        assert "maxlength" not in client.get(page_url).content.decode()
    response = client.post(
        url(job),
        {
            "source": source_server.pk,
            "destination": destination_server.pk,
            **OPTIONS,
            "project_name": "N" * 151,
        },
    )
    assert response.status_code == 400
    assert response.context["form"].errors["project_name"] == [
        "Project name may have at most 150 characters; you entered 151. Nothing was cut: "
        "check the value and shorten it."
    ]
    assert f'value="{"N" * 151}"' in response.content.decode()
    assert not BatchTransferJob.objects.exists()
