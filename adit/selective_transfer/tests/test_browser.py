"""The selective transfer page in a real browser against daphne (HTTP + WebSockets), a real
worker and two real Orthanc servers.

pytest-django's `live_server` speaks WSGI only, so these tests run daphne in a subprocess on
the test database. Set ADIT_SCREENSHOT_DIR to keep screenshots of the pages (for reviews).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect

from adit.accounts.factories import DEFAULT_PASSWORD
from adit.core.dicom.testing.peers import free_port
from adit.core.dicom.testing.synthetic import make_study
from adit.core.factories import DicomServerFactory
from adit.core.testing import wait_until
from adit.core.testing.browser import login
from adit.core.testing.workers import PROJECT_DIR, worker_command, worker_environment

from .conftest import give_access
from .test_consumer import SlowFindScp

pytestmark = [pytest.mark.acceptance, pytest.mark.peers, pytest.mark.django_db(transaction=True)]

JOB_TIMEOUT_MS = 120_000


def _environment() -> dict[str, str]:
    # The subprocesses use the settings of this test run (pytest-django exports them).
    return {
        **worker_environment(),
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "adit.settings.test"),
    }


def _stop(process: subprocess.Popen) -> str:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    return process.stdout.read() if process.stdout else ""


@pytest.fixture
def daphne_url(transactional_db) -> Iterator[str]:
    """Base URL of daphne serving ADIT (ASGI: pages and WebSockets) on the test database."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "adit.asgi:application",
        ],
        env=_environment(),
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if process.poll() is not None:
            pytest.fail(f"daphne exited while starting:\n{_stop(process)}")
        try:
            return requests.get(f"{url}/accounts/login/", timeout=2).ok
        except requests.RequestException:
            return False

    if not wait_until(answers, 60, interval=0.2, raising=False):
        pytest.fail(f"daphne did not answer within 60 s:\n{_stop(process)}")
    try:
        yield url
    finally:
        _stop(process)


@pytest.fixture
def dicom_worker(transactional_db) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(
        worker_command("dicom", burst=False),
        env=_environment(),
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        _stop(process)


def screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("ADIT_SCREENSHOT_DIR")
    if folder:
        page.screenshot(path=str(Path(folder) / f"selective-{name}.png"), full_page=True)


def open_page(page: Page, base_url: str) -> None:
    login(page, base_url, "rita", DEFAULT_PASSWORD)
    page.goto(f"{base_url}/selective-transfer/")
    # The live connection is up (otherwise the form would fall back to plain POSTs).
    expect(page.locator("#st-form")).to_have_attribute("data-ws", "open")


def test_query_select_and_transfer_pseudonymized(
    page: Page, daphne_url, dicom_worker, researcher, orthanc_a, orthanc_b, node_a, node_b
):
    patient_id = "ST-UI-" + make_study("x")[0].StudyInstanceUID[-8:]
    studies = {
        date: make_study(
            patient_id, patient_name="Muster^Erika", study_date=date, series=(("CT", 2), ("MR", 1))
        )
        for date in ("20220315", "20240601", "20230920")
    }
    for study in studies.values():
        orthanc_a.upload(study)
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda frame: frames.append(str(frame))))

    open_page(page, daphne_url)
    page.get_by_label("Source").select_option(label="Orthanc A")
    page.get_by_label("Destination").select_option(label="Orthanc B")
    page.get_by_label("Patient ID").fill(patient_id)
    page.get_by_role("button", name="Query").click()

    rows = page.locator("#st-result-rows tr")
    expect(rows).to_have_count(3)
    expect(page.locator("#st-done")).to_have_text("3 studies found.")
    # Newest first, and the results came over the WebSocket (the page did not reload).
    expect(rows.nth(0)).to_contain_text("2024-06-01")
    expect(rows.nth(2)).to_contain_text("2022-03-15")
    expect(rows.nth(0)).to_contain_text("Muster, Erika")
    assert page.url == f"{daphne_url}/selective-transfer/"
    kinds = [frame.split('"type": "', 1)[1].split('"', 1)[0] for frame in frames]
    assert kinds[:2] == ["form", "started"] and "rows" in kinds and kinds[-1] == "done"

    # Sort by study date ascending and back.
    page.locator("th[data-sort-col='4']").click()
    expect(rows.nth(0)).to_contain_text("2022-03-15")
    page.locator("th[data-sort-col='4']").click()
    expect(rows.nth(0)).to_contain_text("2024-06-01")

    rows.nth(0).get_by_role("checkbox").check()
    rows.nth(1).get_by_role("checkbox").check()
    expect(page.locator("#st-selection-count")).to_contain_text("2 selected")
    pseudonym = "PSEUDO-" + patient_id[-8:]
    page.get_by_label("Pseudonym").fill(pseudonym)
    # The Basic Profile empties dates; this option keeps them (sent over the WebSocket).
    page.get_by_label("Retain Longitudinal Temporal Information with Full Dates").check()
    screenshot(page, "deid-options")
    page.get_by_role("button", name="Transfer selected studies").click()

    expect(page.locator("#st-job-created")).to_contain_text("with 2 studies was created")
    page.locator("#st-job-link").click()
    expect(page.locator("h1")).to_contain_text("Selective transfer job")
    expect(page.locator("#job-deid")).to_contain_text("with Full Dates")
    screenshot(page, "job-running")
    expect(page.locator("#job-progress")).to_contain_text("Success", timeout=JOB_TIMEOUT_MS)
    expect(page.locator("#job-progress-count")).to_have_text("2 of 2 tasks finished")
    screenshot(page, "job-done")

    # Orthanc B holds the two newest studies, pseudonymized, and nothing under the real ID.
    found = orthanc_b.rest(
        "POST",
        "/tools/find",
        json={"Level": "Study", "Query": {"PatientID": pseudonym}, "Expand": True},
    ).json()
    assert len(found) == 2
    original_uids = {s[0].StudyInstanceUID for s in studies.values()}
    assert not {s["MainDicomTags"]["StudyInstanceUID"] for s in found} & original_uids
    assert {s["MainDicomTags"]["StudyDate"] for s in found} == {"20240601", "20230920"}
    assert all(s["PatientMainDicomTags"]["PatientName"] == pseudonym for s in found)
    assert (
        orthanc_b.rest(
            "POST", "/tools/find", json={"Level": "Study", "Query": {"PatientID": patient_id}}
        ).json()
        == []
    )


def test_results_stream_in_and_cancel_stops_them(page: Page, daphne_url, researcher, researchers):
    scp = SlowFindScp(total=40, delay=0.3)
    try:
        slow = DicomServerFactory(name="Slow PACS", ae_title="SLOWSCP", port=scp.port)
        give_access(researchers, slow)
        open_page(page, daphne_url)
        page.get_by_label("Source").select_option(label="Slow PACS")
        page.get_by_label("Patient ID").fill("SLOW")
        page.get_by_role("button", name="Query").click()

        expect(page.locator("#st-running")).to_contain_text("Querying Slow PACS")
        rows = page.locator("#st-result-rows tr")
        expect(rows).not_to_have_count(0)
        page.wait_for_function("document.querySelectorAll('#st-result-rows tr').length >= 4")
        screenshot(page, "query-streaming")

        page.get_by_role("button", name="Cancel").click()
        expect(page.locator("#st-alert")).to_have_text("The query was canceled.")
        assert scp.aborted.wait(5)
        shown = rows.count()
        page.wait_for_timeout(1000)
        assert rows.count() == shown < scp.total
    finally:
        scp.stop()


def test_refusals_show_above_the_results_and_keep_them(
    page: Page, daphne_url, researcher, orthanc_a, node_a
):
    """A form error clears the old "N studies found."; a download refused for a missing
    pseudonym says so next to the results instead of navigating away from them."""
    patient_id = "ST-KEEP-" + make_study("y")[0].StudyInstanceUID[-8:]
    orthanc_a.upload(make_study(patient_id, series=(("CT", 1),)))
    open_page(page, daphne_url)
    page.get_by_label("Source").select_option(label="Orthanc A")
    page.get_by_label("Patient ID").fill(patient_id)
    page.get_by_role("button", name="Query").click()
    rows = page.locator("#st-result-rows tr")
    expect(rows).to_have_count(1)
    expect(page.locator("#st-done")).to_have_text("1 study found.")

    # Download without a pseudonym: rita's group may download pseudonymized data only.
    rows.nth(0).locator("a.st-download").click()
    expect(page.locator("#st-alert")).to_contain_text("A pseudonym is required")
    expect(rows).to_have_count(1)
    assert page.url == f"{daphne_url}/selective-transfer/"
    screenshot(page, "download-refused")

    # A query the form refuses: its error shows and the old count is gone.
    page.get_by_label("Patient ID").fill("bad\\id")
    page.get_by_role("button", name="Query").click()
    expect(page.locator("#st-fields")).to_contain_text("Backslashes are not allowed")
    expect(page.locator("#st-done")).to_have_count(0)
