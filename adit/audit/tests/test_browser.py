"""The audit log page in a real browser: staff filter it and export it; others are refused.

Set ADIT_SCREENSHOT_DIR to keep screenshots of the page (for reviews).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from adit.accounts.factories import UserFactory
from adit.audit.models import AuditEntry
from adit.audit.services import record
from adit.core.statuses import Status
from adit.core.testing.browser import login

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-long-test-password"


def screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("ADIT_SCREENSHOT_DIR")
    if folder:
        page.screenshot(path=str(Path(folder) / f"audit-{name}.png"), full_page=True)


def test_staff_filter_and_export_the_audit_log(page: Page, live_server):
    UserFactory(username="sam", password=PASSWORD, is_staff=True)
    rita = UserFactory(username="rita")
    record(
        AuditEntry.Action.QUERY,
        user=rita,
        patient_id="PAT-1001",
        source="PACS",
        details={"query": {"PatientID": "PAT-1001", "ModalitiesInStudy": "CT"}, "level": "STUDY"},
    )
    record(
        AuditEntry.Action.TRANSFER,
        user=rita,
        patient_id="PAT-1001",
        pseudonym="STUDY-A-0001",
        study_uid="1.2.826.0.1.3680043.8.498.1001",
        source="PACS",
        destination="Research PACS",
        details={"status": Status.SUCCESS, "message": "12 instance(s) transferred."},
    )
    record(AuditEntry.Action.RETRIEVE, user=rita, patient_id="PAT-2002", source="PACS")

    login(page, live_server.url, "sam", PASSWORD)
    page.locator("#main-menu").get_by_role("link", name="Audit log").click()
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    rows = page.locator("#audit-table tbody tr")
    expect(rows).to_have_count(4)  # three entries and sam's login
    screenshot(page, "list")

    page.get_by_label("Patient ID").fill("PAT-1001")
    page.get_by_label("Action").select_option("transfer")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("STUDY-A-0001")
    expect(rows.first).to_contain_text("Research PACS")
    screenshot(page, "filtered")

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Export CSV").click()
    download = download_info.value
    text = Path(download.path()).read_text(encoding="utf-8-sig")
    exported = list(csv.DictReader(io.StringIO(text)))
    assert [(row["PatientID"], row["Action"]) for row in exported] == [("PAT-1001", "transfer")]
    assert AuditEntry.objects.filter(action=AuditEntry.Action.AUDIT_EXPORT).count() == 1


def test_non_staff_see_no_menu_entry_and_get_403(page: Page, live_server):
    UserFactory(username="rita", password=PASSWORD)
    login(page, live_server.url, "rita", PASSWORD)
    expect(page.locator("#main-menu")).not_to_contain_text("Audit log")
    response = page.goto(f"{live_server.url}/audit/")
    assert response is not None and response.status == 403


def test_trusted_party_exports_a_jobs_mapping_from_the_job_page(page: Page, live_server):
    from django.contrib.auth.models import Permission

    from adit.accounts.factories import GroupFactory
    from adit.audit.models import PseudonymMapping
    from adit.core.tests.example_app.models import ExampleTransferJob

    group = GroupFactory(name="Trusted party")
    group.permissions.add(
        Permission.objects.get(content_type__app_label="audit", codename="export_pseudonym_mapping")
    )
    UserFactory(username="trudy", password=PASSWORD, is_staff=True, groups=[group])
    job = ExampleTransferJob.objects.create(owner=UserFactory(username="rita"))
    PseudonymMapping.objects.create(
        job_type="example_app",
        job_id=job.pk,
        task_id=1,
        patient_id="PAT-1001",
        pseudonym="STUDY-A-0001",
        study_uid="1.2.826.0.1.3680043.8.498.1001",
        pseudonymized_study_uid="2.25.1001",
        series_uid="1.2.826.0.1.3680043.8.498.1002",
        pseudonymized_series_uid="2.25.1002",
    )

    login(page, live_server.url, "trudy", PASSWORD)
    page.goto(f"{live_server.url}/example-app/jobs/{job.pk}/")
    screenshot(page, "job-with-mapping-link")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Mapping CSV").click()
    text = Path(download_info.value.path()).read_text(encoding="utf-8-sig")
    (row,) = list(csv.DictReader(io.StringIO(text)))
    assert (row["PatientID"], row["PseudonymizedStudyInstanceUID"]) == ("PAT-1001", "2.25.1001")
    export = AuditEntry.objects.get(action=AuditEntry.Action.MAPPING_EXPORT)
    assert (export.username, export.outcome) == ("trudy", "success")
