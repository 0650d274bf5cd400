"""The "Use ADIT from Python" page and the API docs, reached from the user menu in a real
browser, for a researcher and for staff, at desktop and phone width.

Set ADIT_SCREENSHOT_DIR to keep screenshots of the pages (for reviews).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from playwright.sync_api import Page, expect

from adit.accounts.factories import GroupFactory, UserFactory
from adit.core.models import DicomNodeGroupAccess, DicomServer
from adit.core.testing.browser import login

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-long-test-password"


def screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("ADIT_SCREENSHOT_DIR")
    if folder:
        page.screenshot(path=str(Path(folder) / f"python-{name}.png"), full_page=True)


def _researcher():
    group = GroupFactory(name="Radiology research")
    for codename in ("can_query", "can_retrieve"):
        group.permissions.add(
            Permission.objects.get(codename=codename, content_type__app_label="dicom_web")
        )
    user = UserFactory(username="rita", password=PASSWORD, groups=[group])
    pacs = DicomServer.objects.create(name="Clinical PACS", ae_title="CLIN_PACS", host="pacs")
    hidden = DicomServer.objects.create(name="Other PACS", ae_title="OTHER_PACS", host="other")
    DicomNodeGroupAccess.objects.create(node=pacs, group=group, source=True, destination=False)
    assert hidden.pk  # exists, but rita's group has no access to it
    return user


@pytest.mark.parametrize("width", (1280, 390))
def test_a_researcher_finds_the_python_page_and_the_api_docs(page: Page, live_server, width):
    _researcher()
    page.set_viewport_size({"width": width, "height": 900})
    login(page, live_server.url, "rita", PASSWORD)
    if width < 992:
        page.get_by_role("button", name="Toggle navigation").click()
    page.locator("#user-menu-toggle").click()
    page.get_by_role("link", name="Use ADIT from Python").click()

    expect(page.get_by_role("heading", name="Use ADIT from Python")).to_be_visible()
    example = page.locator("#python-example")
    expect(example).to_contain_text(f'AditClient("{live_server.url}"')
    expect(example).to_contain_text('search_for_studies("CLIN_PACS"')
    expect(page.locator("#python-steps")).to_contain_text("CLIN_PACS")
    expect(page.locator("#python-steps")).not_to_contain_text("OTHER_PACS")
    expect(page.locator("#token-count")).to_contain_text("no token yet")
    permissions = page.locator("#python-permissions")
    expect(permissions).to_contain_text("search (QIDO-RS) through the API")
    expect(permissions).to_contain_text("store (STOW-RS) through the API: not granted")
    screenshot(page, f"researcher-{width}")

    page.get_by_role("link", name="API tokens").first.click()
    expect(page.get_by_role("heading", name="API tokens")).to_be_visible()
    page.get_by_role("link", name="API documentation").click()
    # Swagger UI renders the schema, DICOMweb operations with their user-facing summaries.
    expect(page.get_by_text("Search for studies (QIDO-RS)").first).to_be_visible(timeout=30_000)
    expect(page.get_by_text("Retrieve the study (WADO-RS)").first).to_be_visible()
    screenshot(page, f"api-docs-{width}")


def test_staff_see_the_same_page(page: Page, live_server):
    UserFactory(username="sam", password=PASSWORD, is_staff=True, is_superuser=True)
    DicomServer.objects.create(name="Clinical PACS", ae_title="CLIN_PACS", host="pacs")
    login(page, live_server.url, "sam", PASSWORD)
    page.goto(f"{live_server.url}/accounts/python/")
    expect(page.get_by_role("heading", name="Use ADIT from Python")).to_be_visible()
    expect(page.locator("#python-example")).to_contain_text('"CLIN_PACS"')
    expect(page.locator("#python-permissions")).not_to_contain_text("not granted")
    screenshot(page, "staff-1280")


def test_the_page_needs_a_login(client):
    response = client.get("/accounts/python/")
    assert response.status_code == 302
    assert "/login/" in response["Location"]
