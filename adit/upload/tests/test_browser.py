"""The upload page in a real browser (Chromium) against daphne, a real worker and real Orthanc.

The page must pseudonymize before anything leaves the browser: every request body it sends is
recorded and searched for the original identifying values. Set ADIT_SCREENSHOT_DIR to keep
screenshots of the pages.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import Dialog, Page, expect
from pydicom import Dataset

from adit.accounts.factories import DEFAULT_PASSWORD
from adit.core.dicom.testing.synthetic import make_study, write_study
from adit.core.testing.browser import login

# daphne (ASGI) on the test database and a dicom worker, as the other browser tests use them.
from adit.selective_transfer.tests.test_browser import daphne_url, dicom_worker  # noqa: F401

from .conftest import PSEUDONYM, give_access, recording_proxy, server_from_orthanc

pytestmark = [pytest.mark.acceptance, pytest.mark.peers, pytest.mark.django_db(transaction=True)]

JOB_TIMEOUT_MS = 180_000
PATIENT_NAME = "Quaxworth^Eulalia"
BIRTH_DATE = "19570823"
ACCESSION = "ACC-5521-ZW"
INSTITUTION = "Zebulon Cottage Infirmary"
REFERRING = "Brimblecombe^Ignatius"
COMMENT = "Patient Quaxworth is claustrophobic"
PRIVATE_VALUE = "secret MRN {patient_id}"


@pytest.fixture(autouse=True)
def staging(tmp_path, monkeypatch):
    # daphne and the worker (subprocesses started after this) stage and read files here.
    monkeypatch.setenv("UPLOAD_STAGING_DIR", str(tmp_path / "staging"))


def screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("ADIT_SCREENSHOT_DIR")
    if folder:
        page.screenshot(path=str(Path(folder) / f"upload-{name}.png"), full_page=True)


def _with_phi(ds: Dataset, patient_id: str) -> Dataset:
    ds.ReferringPhysicianName = REFERRING
    ds.InstitutionName = INSTITUTION
    ds.ImageComments = COMMENT
    ds.PatientComments = f"{PATIENT_NAME} {patient_id}"
    block = ds.private_block(0x0011, "ACME PHI", create=True)
    block.add_new(0x01, "LO", PRIVATE_VALUE.format(patient_id=patient_id))
    block.add_new(0x02, "PN", PATIENT_NAME)
    return ds


def make_folder(root: Path, patient_id: str) -> tuple[list[Dataset], dict[str, bytes]]:
    """50 instances (two studies, one patient, nested folders) and two files that are no DICOM.

    Returns the datasets and the identifying values to look for (name → bytes).
    """
    datasets: list[Dataset] = []
    for number, (date, series) in enumerate(
        [("20190312", (("CT", 15), ("MR", 10))), ("20210704", (("CT", 20), ("MR", 5)))]
    ):
        study = make_study(
            patient_id,
            PATIENT_NAME,
            birth_date=BIRTH_DATE,
            study_date=date,
            accession_number=f"{ACCESSION}-{number}",
            institution_name=INSTITUTION,
            series=series,
            compressed_series=number == 1,  # one RLE Lossless series: encapsulated pixels
        )
        study = [_with_phi(ds, patient_id) for ds in study]
        write_study(study, root / f"study-{number}" / "images")
        datasets.extend(study)
    (root / "README.txt").write_text(f"CD of {PATIENT_NAME}\n")
    (root / "study-0" / "report.pdf").write_bytes(b"%PDF-1.4\n% not an image\n" * 10)
    identifying = {
        "PatientID": patient_id,
        "PatientName": PATIENT_NAME,
        "last name": "Quaxworth",
        "first name": "Eulalia",
        "PatientBirthDate": BIRTH_DATE,
        "AccessionNumber": ACCESSION,
        "InstitutionName": INSTITUTION,
        "ReferringPhysicianName": REFERRING,
        "referring last name": "Brimblecombe",
        "ImageComments": COMMENT,
        "private MRN": PRIVATE_VALUE.format(patient_id=patient_id),
        "StudyDate 1": "20190312",
        "StudyDate 2": "20210704",
    }
    for ds in datasets:
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            identifying[f"{keyword} {ds[keyword].value}"] = str(ds[keyword].value)
    forms: dict[str, bytes] = {}
    for name, value in identifying.items():
        raw = value.encode()
        forms[name] = raw
        # As DICOM stores them: padded to even length with a space (text) or NUL (UIDs).
        forms[f"{name} (space-padded)"] = raw + b" " if len(raw) % 2 else raw
        forms[f"{name} (NUL-padded)"] = raw + b"\0" if len(raw) % 2 else raw
    return datasets, forms


def pick_folder(page: Page, folder: Path) -> None:
    page.locator("#upload-folder-input").set_input_files(folder)
    expect(page.locator("#upload-summary")).to_be_visible()


INSTANCE_POST = re.compile(rb"POST /upload/jobs/\d+/instances/ HTTP/1\.1\r\n")
DICOM_PART = b"Content-Type: application/dicom\r\n\r\n"


def test_upload_a_folder_pseudonymized_in_the_browser(
    page: Page,
    daphne_url,  # noqa: F811
    dicom_worker,  # noqa: F811
    uploader,
    uploaders,
    orthanc_b,
    tmp_path,
):
    destination = server_from_orthanc(orthanc_b, "Orthanc B")
    give_access(uploaders, destination)
    patient_id = "MRN-UPL-" + make_study("x")[0].StudyInstanceUID[-6:]
    folder = tmp_path / "cd"
    datasets, identifying = make_folder(folder, patient_id)
    warnings: list[str] = []

    def keep_warning(message) -> None:
        if message.type == "warning":
            warnings.append(message.text)

    page.on("console", keep_warning)
    # Every byte the browser sends to ADIT passes the recording proxy (the page is opened
    # through it): that is what is searched for identifying values below.
    with recording_proxy(daphne_url) as proxy:
        url = proxy.url
        login(page, url, "uma", DEFAULT_PASSWORD)
        page.goto(f"{url}/upload/")
        pick_folder(page, folder)
        expect(page.locator("#upload-summary-patients")).to_have_text("1")
        expect(page.locator("#upload-summary-studies")).to_have_text("2")
        expect(page.locator("#upload-summary-series")).to_have_text("4")
        expect(page.locator("#upload-summary-instances")).to_have_text("50")
        skipped = page.locator("#upload-skipped")
        expect(skipped).to_contain_text("2 file(s) skipped")
        expect(skipped).to_contain_text("cd/README.txt: not DICOM")
        expect(skipped).to_contain_text("cd/study-0/report.pdf: not DICOM")
        page.get_by_label("Destination").select_option(label="Orthanc B")
        page.get_by_label("Pseudonym").fill(PSEUDONYM)
        page.get_by_label("Trial protocol ID").fill("TRIAL-UPL")
        screenshot(page, "summary")
        page.locator("#upload-start").click()
        expect(page.locator("#upload-done")).to_be_visible(timeout=JOB_TIMEOUT_MS)
        expect(page.locator("#upload-done")).to_contain_text("50 file(s) sent, 0 already stored")
        screenshot(page, "sent")

        sent = proxy.sent()
        everything = b"".join(sent)
        # Batches of files (multipart/related), a part per file, all of them seen here: the
        # capture holds the bodies (each file's pixel data went out unchanged, the pseudonym
        # is in every file as PatientID and PatientName), so the search below is not vacuous.
        assert everything.count(DICOM_PART) == 50
        assert 0 < len(INSTANCE_POST.findall(everything)) < 50
        assert everything.count(PSEUDONYM.encode()) >= 100
        assert [i for i, ds in enumerate(datasets) if bytes(ds.PixelData) not in everything] == []
        leaks = {name for name, value in identifying.items() for data in sent if value in data}
        assert leaks == set(), f"identifying values sent by the page: {sorted(leaks)}"
        # The files were de-identified in the page's Web Workers (the page says when it cannot).
        assert [text for text in warnings if "de-identification workers" in text] == []

        page.locator("#upload-job-link").click()
        expect(page.locator("h1")).to_contain_text("Upload job")
        expect(page.locator("#job-progress")).to_contain_text("Success", timeout=JOB_TIMEOUT_MS)
        screenshot(page, "job-done")

        # Orthanc holds patient UPL-1 with all 50 instances; the original patient is not there.
        patients = orthanc_b.rest(
            "POST", "/tools/find", json={"Level": "Patient", "Query": {"PatientID": PSEUDONYM}}
        ).json()
        assert len(patients) == 1
        studies = orthanc_b.rest(
            "POST",
            "/tools/find",
            json={"Level": "Study", "Query": {"PatientID": PSEUDONYM}, "Expand": True},
        ).json()
        assert len(studies) == 2
        counts = []
        for study in studies:
            series = [
                orthanc_b.rest("GET", f"/series/{series_id}").json()
                for series_id in study["Series"]
            ]
            # Each study keeps its series (consistent UIDs: one new UID per original one).
            counts.append(sorted(len(s["Instances"]) for s in series))
            assert study["MainDicomTags"]["StudyInstanceUID"].startswith("2.25.")
            assert study["PatientMainDicomTags"]["PatientName"] == PSEUDONYM
            assert study["MainDicomTags"].get("StudyDate") not in ("20190312", "20210704")
        assert sorted(counts) == [[5, 20], [10, 15]]
        assert (
            orthanc_b.rest(
                "POST",
                "/tools/find",
                json={"Level": "Patient", "Query": {"PatientID": patient_id}},
            ).json()
            == []
        )
        instances = orthanc_b.rest(
            "POST", "/tools/find", json={"Level": "Instance", "Query": {"PatientID": PSEUDONYM}}
        ).json()
        assert len(instances) == 50

        # The same folder again: the page resumes the job and sends nothing.
        proxy.clear()
        page.goto(f"{url}/upload/")
        pick_folder(page, folder)
        page.get_by_label("Destination").select_option(label="Orthanc B")
        page.get_by_label("Pseudonym").fill(PSEUDONYM)
        page.locator("#upload-start").click()
        expect(page.locator("#upload-done")).to_contain_text(
            "0 file(s) sent, 50 already stored", timeout=JOB_TIMEOUT_MS
        )
        expect(page.locator("#upload-resume-note")).to_contain_text("Continuing upload job")
        screenshot(page, "again")
        assert INSTANCE_POST.findall(b"".join(proxy.sent())) == []
    instances = orthanc_b.rest(
        "POST", "/tools/find", json={"Level": "Instance", "Query": {"PatientID": PSEUDONYM}}
    ).json()
    assert len(instances) == 50


def test_failed_requests_are_retried_and_a_stopped_upload_resumes(
    page: Page,
    daphne_url,  # noqa: F811
    dicom_worker,  # noqa: F811
    uploader,
    uploaders,
    orthanc_b,
    tmp_path,
):
    destination = server_from_orthanc(orthanc_b, "Orthanc B")
    give_access(uploaders, destination)
    patient_id = "MRN-RES-" + make_study("x")[0].StudyInstanceUID[-6:]
    make_folder(tmp_path / "cd", patient_id)
    overloaded = {"on": True}

    def instances(route) -> None:
        if overloaded["on"]:
            route.fulfill(status=503, content_type="application/json", body='{"error": "busy"}')
        else:
            route.continue_()

    page.route("**/upload/jobs/*/instances/", instances)
    with recording_proxy(daphne_url) as proxy:
        url = proxy.url
        login(page, url, "uma", DEFAULT_PASSWORD)
        page.goto(f"{url}/upload/")
        pick_folder(page, tmp_path / "cd")
        page.get_by_label("Destination").select_option(label="Orthanc B")
        page.get_by_label("Pseudonym").fill("UPL-2")
        page.locator("#upload-start").click()
        files = page.locator("#upload-files")
        expect(files).to_contain_text("busy — retrying in")
        # Leaving the page mid-upload asks first; staying keeps the upload as it was.
        asked: list[str] = []

        def stay(dialog: Dialog) -> None:
            asked.append(dialog.type)
            dialog.dismiss()

        page.once("dialog", stay)
        page.evaluate("setTimeout(() => location.reload(), 0)")
        page.wait_for_timeout(500)
        assert asked == ["beforeunload"]
        expect(files).to_contain_text("busy — retrying in")
        page.locator("#upload-stop").click()
        expect(page.locator("#upload-resume-note")).to_contain_text("Stopped")
        expect(page.locator("#upload-start")).to_have_text("Resume upload")
        screenshot(page, "stopped")
        assert INSTANCE_POST.findall(b"".join(proxy.sent())) == []  # none got through

        overloaded["on"] = False
        page.locator("#upload-start").click()
        expect(page.locator("#upload-done")).to_contain_text(
            "50 file(s) sent, 0 already stored", timeout=JOB_TIMEOUT_MS
        )
        # Every file reached ADIT once.
        assert b"".join(proxy.sent()).count(DICOM_PART) == 50
        page.locator("#upload-job-link").click()
        expect(page.locator("#job-progress")).to_contain_text("Success", timeout=JOB_TIMEOUT_MS)
    instances_at_b = orthanc_b.rest(
        "POST", "/tools/find", json={"Level": "Instance", "Query": {"PatientID": "UPL-2"}}
    ).json()
    assert len(instances_at_b) == 50
