"""The menu bar of a staff user with groups (the longest it gets) fits one row on a laptop
screen, collapses into the toggler below 1200 px, and keeps the administration link in the
user menu. Screenshots go to ADIT_SCREENSHOT_DIR when set."""

import os
from pathlib import Path

import pytest
from playwright.sync_api import Page

from adit.accounts.factories import DEFAULT_PASSWORD, GroupFactory, UserFactory
from adit.core.testing.browser import login

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]


def _staff_with_groups() -> None:
    groups = [GroupFactory(name="Radiology research"), GroupFactory(name="Data managers")]
    UserFactory(username="admin-user", is_staff=True, is_superuser=True, groups=groups)


def _screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("ADIT_SCREENSHOT_DIR")
    if folder:
        page.screenshot(path=str(Path(folder) / f"navbar-{name}.png"))


@pytest.mark.parametrize("width", [1280, 1920])
def test_the_menu_bar_fits_one_row(page: Page, live_server, width: int):
    _staff_with_groups()
    page.set_viewport_size({"width": width, "height": 600})
    login(page, live_server.url, "admin-user", DEFAULT_PASSWORD)
    _screenshot(page, str(width))
    boxes = [
        item.bounding_box()
        for item in page.locator("#navbar-content .nav-item").all()
        if item.is_visible()
    ]
    assert len(boxes) >= 8  # the apps, Jobs, the group switcher, theme and user menu
    tops = {round(box["y"] + box["height"] / 2) for box in boxes if box}
    assert max(tops) - min(tops) <= 4, f"the menu bar wraps: item centers at {sorted(tops)}"
    right_edge = max(box["x"] + box["width"] for box in boxes if box)
    assert right_edge <= width, f"the menu bar overflows: {right_edge} > {width}"

    page.locator("#user-menu-toggle").click()
    page.locator("#admin-link").click()
    page.wait_for_url(f"{live_server.url}/admin/")


def test_below_1200_px_the_menu_collapses(page: Page, live_server):
    _staff_with_groups()
    page.set_viewport_size({"width": 1100, "height": 700})
    login(page, live_server.url, "admin-user", DEFAULT_PASSWORD)
    assert not page.locator("#main-menu").is_visible()
    page.get_by_role("button", name="Toggle navigation").click()
    page.locator("#main-menu").wait_for(state="visible")
    _screenshot(page, "1100-open")
