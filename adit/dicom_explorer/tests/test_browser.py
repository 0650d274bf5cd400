"""The explorer in a real browser (Chromium via Playwright) against a real Orthanc, once with
DICOMweb (Orthanc renders) and once over DIMSE only (ADIT fetches by C-GET and renders).

Set ADIT_SCREENSHOT_DIR to keep screenshots; ADIT_BROWSER_WIDTH=390 runs at phone width.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.core.cache import cache
from playwright.sync_api import Locator, Page, expect

from adit.accounts.factories import DEFAULT_PASSWORD
from adit.core.testing.browser import login
from adit.selective_transfer.tests import test_browser as selective_transfer_browser

from .conftest import grant

# daphne (ASGI: the selective transfer page needs its WebSocket) and a dicom worker.
daphne_url = selective_transfer_browser.daphne_url
dicom_worker = selective_transfer_browser.dicom_worker

pytestmark = [pytest.mark.acceptance, pytest.mark.peers, pytest.mark.django_db(transaction=True)]

# How many different grey values (red channel) the image has once drawn on a canvas: 1 means
# the image is blank (all one value), 0 that it did not load.
DISTINCT_VALUES_JS = """(img) => {
  if (!img.complete || img.naturalWidth === 0) return 0;
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(img, 0, 0);
  const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
  const seen = new Set();
  for (let i = 0; i < data.length; i += 4) seen.add(data[i]);
  return seen.size;
}"""


def screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("ADIT_SCREENSHOT_DIR")
    if folder:
        width = page.viewport_size["width"] if page.viewport_size else 0
        path = Path(folder) / f"explorer-{name}-{width}.png"
        page.screenshot(path=str(path), full_page=True)


def assert_image_shows_something(image: Locator) -> None:
    expect(image).to_be_visible()
    image.evaluate("img => img.decode ? img.decode().catch(() => null) : null")
    image.page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
    )
    assert image.evaluate(DISTINCT_VALUES_JS) > 1


@pytest.mark.parametrize("node_fixture", ["orthanc_node", "dimse_node"])
def test_search_drill_down_and_look(
    page: Page, live_server, explorer_user, uploaded_study, request, node_fixture
):
    cache.clear()
    node = request.getfixturevalue(node_fixture)
    first = uploaded_study[0]
    login(page, live_server.url, "erin", DEFAULT_PASSWORD)

    # Open the explorer from the navigation (collapsed behind the toggler at phone width).
    toggler = page.locator(".navbar-toggler")
    if toggler.is_visible():
        toggler.click()
    page.locator("#main-menu").get_by_role("link", name="DICOM explorer").click()
    page.get_by_role("link", name=node.name, exact=False).first.click()
    expect(page.locator("h1")).to_have_text(f"Search {node.name}")

    page.get_by_label("Patient ID").fill(first.PatientID)
    page.get_by_label("Study date").fill("2024-03-01 - 2024-03-31")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#ex-summary")).to_contain_text("1 patient with 1 matching study")
    screenshot(page, f"search-{node_fixture}")

    page.locator("#ex-patients").get_by_role("link", name=first.PatientID).click()
    expect(page.locator("#ex-studies")).to_contain_text("Chest CT")
    page.locator("#ex-studies").get_by_role("link", name="2024-03-02").click()

    # The study page: one thumbnail per series, each showing an image.
    thumbnails = page.locator("img.ex-thumb")
    expect(thumbnails).to_have_count(2)
    for index in range(2):
        assert_image_shows_something(thumbnails.nth(index))
    expect(page.locator("#ex-breadcrumb")).to_contain_text(f"Patient {first.PatientID}")
    screenshot(page, f"study-{node_fixture}")

    page.locator(".ex-series-card").first.click()
    expect(page.locator("#ex-instances tbody tr")).to_have_count(3)
    page.locator("#ex-instances tbody tr").first.get_by_role("link").click()

    # The instance: the image and the header table with its filter.
    assert_image_shows_something(page.locator("#ex-image"))

    def row(tag: str) -> Locator:
        return page.locator(f"#ex-header-table > tbody > tr[data-tag='{tag}']")

    expect(row("(0008,0050)")).to_be_visible()  # AccessionNumber
    page.get_by_label("Filter the header").fill("patientname")
    expect(row("(0010,0010)")).to_be_visible()
    expect(row("(0010,0010)")).to_contain_text("Explorer^Eva")
    expect(row("(0008,0050)")).to_be_hidden()
    expect(page.locator("#ex-header-table > tbody > tr:visible")).to_have_count(1)
    screenshot(page, f"instance-{node_fixture}")


def test_transfer_from_the_explorer(
    page: Page,
    daphne_url,
    dicom_worker,
    explorer_user,
    explorers,
    orthanc_node,
    destination_node,
    uploaded_study,
    orthanc_b,
):
    """Study page → "Transfer…" → selective transfer with server and study prefilled → the
    transfer (pseudonymized, as the group requires) arrives on Orthanc B."""
    grant(explorers, "selective_transfer", "add_selectivetransferjob")
    first = uploaded_study[0]
    login(page, daphne_url, "erin", DEFAULT_PASSWORD)
    page.goto(f"{daphne_url}/explorer/servers/{orthanc_node.pk}/studies/{first.StudyInstanceUID}/")
    expect(page.locator("#ex-pseudonym-required")).to_contain_text("Pseudonymization required")
    page.locator("#ex-transfer").click()

    expect(page.locator("#st-form")).to_have_attribute("data-ws", "open")
    expect(page.get_by_label("Source")).to_have_value(str(orthanc_node.pk))
    expect(page.get_by_label("Study Instance UID")).to_have_value(first.StudyInstanceUID)
    page.get_by_label("Destination").select_option(label="Orthanc B")
    page.get_by_role("button", name="Query").click()
    rows = page.locator("#st-result-rows tr")
    expect(rows).to_have_count(1)
    rows.first.get_by_role("checkbox").check()
    pseudonym = "EXPL-" + first.PatientID[-6:]
    page.get_by_label("Pseudonym").fill(pseudonym)
    page.get_by_role("button", name="Transfer selected studies").click()
    page.locator("#st-job-link").click()
    expect(page.locator("#job-progress")).to_contain_text("Success", timeout=120_000)
    screenshot(page, "transfer-done")
    found = orthanc_b.rest(
        "POST", "/tools/find", json={"Level": "Instance", "Query": {"PatientID": pseudonym}}
    ).json()
    assert len(found) == len(uploaded_study)
