"""Browser tests of the error pages, the job pages, the global Jobs page and the job actions,
as an admin and as a non-staff researcher, at desktop width and at 390 px (phone).

Set ADIT_SCREENSHOT_DIR to keep screenshots of every page (named by user and width).
"""

import os
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from playwright.sync_api import Page, expect

from adit.accounts.factories import DEFAULT_PASSWORD, GroupFactory, UserFactory
from adit.core.factories import DicomServerFactory
from adit.core.models import DicomJob, DicomNodeGroupAccess, DicomTask
from adit.core.testing.browser import login
from adit.core.testing.jobs import batch_query_job, transfer_job

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

WIDTHS = [1280, 390]
STUDY_UID = "1.2.826.0.1.3680043.8.498.77"


def screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("ADIT_SCREENSHOT_DIR")
    if folder:
        width = page.viewport_size["width"] if page.viewport_size else 0
        page.screenshot(path=str(Path(folder) / f"jobs-{name}-{width}.png"), full_page=True)


def assert_fits_width(page: Page) -> None:
    """Nothing makes the page wider than the window (no sideways scrolling on a phone)."""
    scroll_width, viewport_width = page.evaluate(
        "[document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert scroll_width <= viewport_width, f"{page.url}: {scroll_width} px > {viewport_width} px"


@pytest.fixture
def nodes(db):
    source = DicomServerFactory(name="Clinical PACS")
    destination = DicomServerFactory(name="Research PACS")
    return source, destination


@pytest.fixture
def researcher(nodes):
    """A non-staff user whose group may do selective transfers and batch queries only."""
    group = GroupFactory(name="Lung Research")
    group.permissions.add(
        *Permission.objects.filter(codename__in=["add_selectivetransferjob", "add_batchqueryjob"])
    )
    for node in nodes:
        DicomNodeGroupAccess.objects.create(node=node, group=group, source=True, destination=True)
    return UserFactory(username="rita", groups=[group])


@pytest.fixture
def admin(db):
    return UserFactory(
        username="admin", is_staff=True, is_superuser=True, groups=[GroupFactory(name="Staff")]
    )


@pytest.mark.parametrize("width", WIDTHS)
def test_researcher_sees_styled_403_404_and_finds_her_job_by_pseudonym(
    page: Page, live_server, nodes, researcher, width
):
    page.set_viewport_size({"width": width, "height": 800})
    job = transfer_job(
        researcher,
        nodes[0],
        nodes[1],
        [("PAT-1", STUDY_UID, "LUNG-0042"), ("PAT-2", STUDY_UID + ".2", "LUNG-0043")],
        trial_protocol_id="TP-7",
        trial_protocol_name="Lung screening",
    )
    other = transfer_job(
        UserFactory(), nodes[0], nodes[1], [("PAT-9", STUDY_UID + ".9", "LUNG-0042")]
    )
    batch_query_job(researcher, nodes[0], [{"patient_id": "4711", "modalities": ["CT"]}])
    base = live_server.url
    login(page, base, "rita", DEFAULT_PASSWORD)

    # 403: the styled page names the missing permission and the group, and whom to ask.
    response = page.goto(f"{base}/batch-transfer/")
    assert response is not None and response.status == 403
    expect(page.locator("#error-heading")).to_have_text("You may not open this page")
    expect(page.locator("#missing-permission")).to_have_text("“Can add batch transfer job”")
    expect(page.locator("#error-reason")).to_contain_text("Lung Research")
    expect(page.locator("#error-page")).to_contain_text("administrator")
    expect(page.locator("#main-menu")).to_have_count(1)  # in the site's layout
    assert_fits_width(page)
    screenshot(page, "researcher-403")

    response = page.goto(f"{base}/no-such-page/")
    assert response is not None and response.status == 404
    expect(page.locator("#error-heading")).to_have_text("There is nothing at this address")
    assert_fits_width(page)
    screenshot(page, "researcher-404")

    # Someone else's job is not found either (404, not the job).
    response = page.goto(f"{base}/selective-transfer/jobs/{other.pk}/")
    assert response is not None and response.status == 404

    # The global Jobs page finds her job by pseudonym (and not the other user's).
    page.goto(f"{base}/jobs/")
    expect(page.locator("#job-table tbody tr")).to_have_count(2)
    assert_fits_width(page)
    screenshot(page, "researcher-all-jobs")
    page.locator("#filter-q").fill("lung-0042")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("#job-table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Selective transfer job")
    expect(rows.first).to_contain_text("from Clinical PACS to Research PACS")
    expect(page.locator("#filter-scope")).to_have_count(0)  # no my/all toggle for non-staff
    assert_fits_width(page)
    screenshot(page, "researcher-all-jobs-search")

    # The job page says from where, to where, as whom and how much.
    rows.first.get_by_role("link", name=str(job.pk)).click()
    expect(page.locator("#job-source")).to_have_text("Clinical PACS")
    expect(page.locator("#job-destination")).to_have_text("Research PACS")
    expect(page.locator("#job-pseudonym")).to_contain_text("LUNG-0042, LUNG-0043")
    expect(page.locator("#job-trial-protocol")).to_contain_text("TP-7")
    expect(page.locator("#job-transferred")).to_contain_text("2 of 2 studies, 6 instances")
    expect(page.locator("#job-deid")).to_contain_text("Basic Application Level")
    # A researcher may not restart (staff only); nothing else is allowed on a finished job.
    expect(page.locator("[data-action]")).to_have_count(0)
    assert_fits_width(page)
    screenshot(page, "researcher-job")

    page.goto(f"{base}/batch-query/jobs/")
    expect(page.locator("h1")).to_have_text("My batch query jobs")
    page.locator("#job-table a").first.click()
    expect(page.locator("#task-table")).to_contain_text("Line 2: PatientID=4711, Modality=CT")
    assert_fits_width(page)
    screenshot(page, "researcher-batch-query-job")


@pytest.mark.parametrize("width", WIDTHS)
def test_home_of_a_newcomer_without_apps_says_to_ask_an_admin(page: Page, live_server, width):
    page.set_viewport_size({"width": width, "height": 800})
    UserFactory(username="nina", groups=[GroupFactory(name="Newcomers")])
    login(page, live_server.url, "nina", DEFAULT_PASSWORD)
    expect(page.locator("#home-no-apps")).to_contain_text("Newcomers")
    expect(page.locator("#home-no-apps")).to_contain_text("Ask an administrator")
    assert_fits_width(page)
    screenshot(page, "newcomer-home")
    page.context.clear_cookies()
    page.goto(f"{live_server.url}/accounts/login/")
    expect(page.locator("h1")).to_have_text("Log in to ADIT")


@pytest.mark.parametrize("width", WIDTHS)
def test_admin_actions_explain_themselves_and_ask_before_they_act(
    page: Page, live_server, nodes, researcher, admin, width
):
    page.set_viewport_size({"width": width, "height": 800})
    failed = transfer_job(
        researcher,
        nodes[0],
        nodes[1],
        [("PAT-1", STUDY_UID, "LUNG-0042"), ("PAT-2", STUDY_UID + ".2", "LUNG-0043")],
        status=DicomJob.Status.FAILURE,
    )
    failed.tasks.filter(patient_id="PAT-2").update(status=DicomTask.Status.FAILURE)
    pending = transfer_job(
        researcher,
        nodes[0],
        nodes[1],
        [("PAT-3", STUDY_UID + ".3", "")],
        status=DicomJob.Status.PENDING,
    )
    base = live_server.url
    login(page, base, "admin", DEFAULT_PASSWORD)

    # Staff choose between their own jobs and everyone's.
    page.goto(f"{base}/jobs/")
    expect(page.locator("#no-jobs")).to_be_visible()
    page.locator("#filter-scope").select_option("all")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#job-table tbody tr")).to_have_count(2)
    expect(page.locator("h1")).to_contain_text("Jobs of everyone")
    assert_fits_width(page)
    screenshot(page, "admin-all-jobs")

    page.goto(f"{base}/selective-transfer/jobs/{failed.pk}/")
    retry = page.locator('button[data-action="retry"]')
    restart = page.locator('button[data-action="restart"]')
    tooltip = "data-bs-original-title"  # Bootstrap's tooltip keeps the title here
    expect(retry).to_have_attribute(
        tooltip, "Run only the failed tasks again; tasks that succeeded are not sent again."
    )
    expect(restart).to_have_attribute(
        tooltip, "Run every task again from the start, also those that succeeded."
    )
    expect(page.locator('[data-action="delete"]')).to_have_count(0)
    if width > 500:  # hover is a desktop gesture
        restart.hover()
        expect(page.locator(".tooltip")).to_contain_text("Run every task again")
    assert_fits_width(page)
    screenshot(page, "admin-failed-job")

    # Restart asks first; "Keep as it is" leaves the job alone.
    restart.click()
    modal = page.locator("#confirm-modal")
    expect(modal).to_be_visible()
    expect(modal).to_contain_text("All 2 tasks run again and send their data again")
    screenshot(page, "admin-restart-confirmation")
    modal.get_by_role("button", name="Keep as it is").click()
    expect(modal).to_be_hidden()
    failed.refresh_from_db()
    assert failed.status == DicomJob.Status.FAILURE

    # Retry asks too, and goes on when confirmed.
    retry.click()
    expect(modal).to_contain_text("Retry the 1 failed task?")
    modal.get_by_role("button", name="Yes, retry failed tasks").click()
    expect(page.locator("#toast-container")).to_contain_text(
        "The failed tasks of the job were queued again."
    )
    failed.refresh_from_db()
    assert failed.status in (DicomJob.Status.PENDING, DicomJob.Status.IN_PROGRESS)
    assert failed.end is None
    expect(page.locator('[data-action="cancel"]')).to_be_visible()

    # Cancel of a pending job asks first, then the job ends canceled with an end time.
    page.goto(f"{base}/selective-transfer/jobs/{pending.pk}/")
    expect(page.locator('[data-action="delete"]')).to_be_visible()
    page.locator('button[data-action="cancel"]').click()
    expect(modal).to_contain_text("Cancel this job?")
    modal.get_by_role("button", name="Yes, cancel").click()
    expect(page.locator("#job-progress [data-status]")).to_have_text("Canceled")
    pending.refresh_from_db()
    assert pending.status == DicomJob.Status.CANCELED and pending.end is not None

    # Resume asks, and clears the end time.
    page.locator('button[data-action="resume"]').click()
    expect(modal).to_contain_text("Resume this job? Its 1 canceled task will run")
    modal.get_by_role("button", name="Yes, resume").click()
    expect(page.locator("#job-progress [data-status]")).to_have_text("Pending")
    pending.refresh_from_db()
    assert pending.status == DicomJob.Status.PENDING and pending.end is None
    expect(page.locator("#job-times")).to_contain_text("/ —")
    assert_fits_width(page)
    screenshot(page, "admin-resumed-job")

    # A task's Reset asks as well.
    task = failed.tasks.get(patient_id="PAT-1")
    page.goto(f"{base}/selective-transfer/tasks/{task.pk}/")
    page.locator('button[data-action="reset"]').click()
    expect(modal).to_contain_text("Run this task again?")
    assert_fits_width(page)
    screenshot(page, "admin-task-reset-confirmation")
