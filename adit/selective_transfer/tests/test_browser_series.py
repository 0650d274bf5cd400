"""Series picking in a real browser, as a non-staff researcher and as an admin: expand a study,
tick two of its three series, transfer (daphne + a real worker), and Orthanc B then holds those
two series only. The same page at 390 px (a phone) does not overflow sideways.

Set ADIT_SCREENSHOT_DIR to keep screenshots (desktop and phone width of each user).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from adit.accounts.factories import DEFAULT_PASSWORD, UserFactory
from adit.core.dicom.testing.synthetic import make_study
from adit.core.testing.browser import login

from . import test_browser as selective_transfer_browser

# daphne (ASGI: the page needs its WebSocket) and a dicom worker.
daphne_url = selective_transfer_browser.daphne_url
dicom_worker = selective_transfer_browser.dicom_worker

pytestmark = [pytest.mark.acceptance, pytest.mark.peers, pytest.mark.django_db(transaction=True)]

JOB_TIMEOUT_MS = 120_000
PHONE_WIDTH = 390


def screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("ADIT_SCREENSHOT_DIR")
    if folder:
        width = page.viewport_size["width"] if page.viewport_size else 0
        page.screenshot(path=str(Path(folder) / f"selective-{name}-{width}.png"), full_page=True)


def page_scroll_width(page: Page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


# The outermost elements that reach past the viewport (to name the culprit when a check fails).
WIDE_ELEMENTS_JS = """() => {
  const width = document.documentElement.clientWidth;
  const wide = [];
  for (const el of document.querySelectorAll("body *")) {
    const right = el.getBoundingClientRect().right;
    if (right > width + 1 && !(el.parentElement && wide.includes(el.parentElement))) {
      wide.push(el);
    }
  }
  return wide.slice(0, 8).map((el) => el.tagName + "#" + el.id + "." + el.className + " "
    + Math.round(el.getBoundingClientRect().right));
}"""


def assert_fits(page: Page, width: int) -> None:
    scroll_width = page_scroll_width(page)
    assert scroll_width <= width, (scroll_width, page.evaluate(WIDE_ELEMENTS_JS))


@pytest.mark.parametrize("role", ["researcher", "admin"])
def test_picked_series_only_are_transferred(
    role, page: Page, daphne_url, dicom_worker, researchers, orthanc_a, orthanc_b, node_a, node_b
):
    if role == "admin":
        UserFactory(username="ada", is_staff=True, is_superuser=True, groups=[researchers])
        username = "ada"
    else:
        UserFactory(username="rita", groups=[researchers])
        username = "rita"
    patient_id = f"ST-PICK-{role[:3]}-" + make_study("p")[0].StudyInstanceUID[-8:]
    study = make_study(
        patient_id,
        patient_name="Muster^Erika",
        study_description="CT Thorax nativ",
        series=(("CT", 2), ("MR", 1), ("PT", 1)),
    )
    orthanc_a.upload(study)
    modality_of = {ds.SeriesInstanceUID: ds.Modality for ds in study}

    login(page, daphne_url, username, DEFAULT_PASSWORD)
    page.goto(f"{daphne_url}/selective-transfer/")
    expect(page.locator("#st-form")).to_have_attribute("data-ws", "open")
    # The form says how to search in parts of a description.
    expect(page.locator("#st-fields")).to_contain_text("*Thorax* finds")
    page.get_by_label("Source").select_option(label="Orthanc A")
    page.get_by_label("Destination").select_option(label="Orthanc B")
    page.get_by_label("Patient ID").fill(patient_id)
    page.get_by_label("Study description").fill("*Thorax*")
    page.get_by_role("button", name="Query").click()
    rows = page.locator("#st-result-rows tr[data-key]")
    expect(rows).to_have_count(1)

    rows.nth(0).locator(".st-series-toggle").click()
    series = page.locator("#st-result-rows tr.st-series-row input[name=selected_series]")
    expect(series).to_have_count(3)
    expect(page.locator("#st-result-rows tr.st-series-row")).to_contain_text("2 instances")
    picked = {"CT", "PT"}
    for index in range(3):
        box = series.nth(index)
        uid = box.get_attribute("value").rsplit("\\", 1)[1]  # type: ignore[union-attr]
        if modality_of[uid] in picked:
            box.check()
    # Picking a series selects its study.
    expect(rows.nth(0).locator("input[name=selected_studies]")).to_be_checked()
    expect(page.locator("#st-selection-count")).to_contain_text("1 selected")
    pseudonym = f"PICK-{role[:3]}-" + patient_id[-8:]
    page.get_by_label("Pseudonym").fill(pseudonym)
    screenshot(page, f"series-picked-{role}")

    # At phone width the page does not scroll sideways (the table scrolls in its own box).
    page.set_viewport_size({"width": PHONE_WIDTH, "height": 800})
    page.wait_for_timeout(200)
    assert_fits(page, PHONE_WIDTH)
    screenshot(page, f"series-picked-{role}")
    page.set_viewport_size({"width": 1280, "height": 800})

    page.get_by_role("button", name="Transfer selected studies").click()
    expect(page.locator("#st-job-created")).to_contain_text("with 1 study was created")
    page.locator("#st-job-link").click()
    expect(page.locator("#job-progress")).to_contain_text("Success", timeout=JOB_TIMEOUT_MS)

    found = orthanc_b.rest(
        "POST",
        "/tools/find",
        json={"Level": "Series", "Query": {"PatientID": pseudonym}, "Expand": True},
    ).json()
    assert sorted(s["MainDicomTags"]["Modality"] for s in found) == ["CT", "PT"]
    assert sum(len(s["Instances"]) for s in found) == 3


@pytest.mark.parametrize("role", ["researcher", "admin"])
def test_query_page_and_results_fit_a_phone(
    role, page: Page, daphne_url, researchers, orthanc_a, node_a, node_b
):
    if role == "admin":
        UserFactory(username="ada", is_staff=True, is_superuser=True, groups=[researchers])
        username = "ada"
    else:
        UserFactory(username="rita", groups=[researchers])
        username = "rita"
    patient_id = "ST-PHONE-WITH-A-LONG-IDENTIFIER-" + make_study("q")[0].StudyInstanceUID[-8:]
    for date in ("20220315", "20240601"):
        orthanc_a.upload(
            make_study(
                patient_id,
                patient_name="Mustermann-Schmidt^Erika-Josephine",
                study_date=date,
                study_description="CT Thorax Abdomen Becken mit Kontrastmittel venoes",
                series=(("CT", 1), ("MR", 1)),
            )
        )
    page.set_viewport_size({"width": PHONE_WIDTH, "height": 800})
    login(page, daphne_url, username, DEFAULT_PASSWORD)
    page.goto(f"{daphne_url}/selective-transfer/")
    expect(page.locator("#st-form")).to_have_attribute("data-ws", "open")
    assert_fits(page, PHONE_WIDTH)
    screenshot(page, f"form-{role}")

    # A too long value is an error that names the field; the value stays as pasted.
    page.get_by_label("Source").select_option(label="Orthanc A")
    page.get_by_label("Patient ID").fill("X" * 70)
    page.get_by_role("button", name="Query").click()
    expect(page.locator("[data-error-for=patient_id]")).to_contain_text(
        "at most 64 characters; you entered 70"
    )
    expect(page.get_by_label("Patient ID")).to_have_value("X" * 70)

    page.get_by_label("Patient ID").fill(patient_id)
    page.get_by_role("button", name="Query").click()
    expect(page.locator("#st-result-rows tr[data-key]")).to_have_count(2)
    page.locator("#st-result-rows .st-series-toggle").first.click()
    expect(page.locator("#st-result-rows tr.st-series-row input")).to_have_count(2)
    page.wait_for_timeout(200)
    assert_fits(page, PHONE_WIDTH)
    screenshot(page, f"results-{role}")
