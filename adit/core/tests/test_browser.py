"""Browser tests of the base UI (Chromium through Playwright against a live server)."""

import pytest
from playwright.sync_api import Page, expect

from adit.accounts.factories import DEFAULT_PASSWORD, GroupFactory, UserFactory
from adit.accounts.models import User
from adit.core.models import ProjectSettings
from adit.core.testing.browser import login

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]


def test_login_and_switch_active_group(page: Page, live_server):
    readers = GroupFactory(name="Readers")
    transferers = GroupFactory(name="Transferers")
    # Different permissions, so the switch matters to what the user may do.
    from django.contrib.auth.models import Permission

    transferers.permissions.add(Permission.objects.get(codename="add_token"))
    user = UserFactory(username="alice", groups=[readers, transferers])
    assert user.active_group == readers

    login(page, live_server.url, "alice", DEFAULT_PASSWORD)
    expect(page.locator("#active-group-name")).to_have_text("Readers")
    expect(page.locator("#home-active-group")).to_have_text("Readers")

    page.locator("#active-group-toggle").click()
    page.locator("#active-group-switcher").get_by_role("button", name="Transferers").click()

    # The view answers HX-Refresh: the page reloads and shows the new group and a toast.
    expect(page.locator("#active-group-name")).to_have_text("Transferers")
    expect(page.locator("#home-active-group")).to_have_text("Transferers")
    expect(page.locator("#toast-container .toast.show")).to_contain_text(
        "Active group is now Transferers"
    )
    user.refresh_from_db()
    assert user.active_group == transferers
    assert user.has_perm("accounts.add_token")


def test_theme_toggle_is_remembered(page: Page, live_server):
    UserFactory(username="bob", groups=[GroupFactory(name="Radiology")])
    login(page, live_server.url, "bob", DEFAULT_PASSWORD)
    html = page.locator("html")
    page.evaluate("localStorage.setItem('adit-theme', 'light')")
    page.reload()
    expect(html).to_have_attribute("data-bs-theme", "light")

    page.locator("#theme-toggle").click()
    expect(html).to_have_attribute("data-bs-theme", "dark")
    page.reload()
    expect(html).to_have_attribute("data-bs-theme", "dark")
    page.locator("#theme-toggle").click()
    expect(html).to_have_attribute("data-bs-theme", "light")


def test_staff_edits_announcement_with_htmx(page: Page, live_server):
    UserFactory(username="carol", is_staff=True, groups=[GroupFactory(name="Staff")])
    login(page, live_server.url, "carol", DEFAULT_PASSWORD)

    page.get_by_text("Edit announcement").click()
    page.get_by_label("Announcement").fill("PACS downtime on <b>Friday</b>\nfrom 6 to 8 pm")
    page.get_by_role("button", name="Save announcement").click()

    announcement = page.locator("#announcement")
    expect(announcement).to_contain_text("PACS downtime on <b>Friday</b>")
    expect(announcement.locator("b")).to_have_count(0)  # shown as text, not markup
    expect(page.locator("#toast-container .toast.show")).to_contain_text(
        "The announcement was saved."
    )
    assert ProjectSettings.get().announcement == "PACS downtime on <b>Friday</b>\nfrom 6 to 8 pm"


def test_logout_from_user_menu(page: Page, live_server):
    UserFactory(username="dave", groups=[GroupFactory(name="Radiology")])
    login(page, live_server.url, "dave", DEFAULT_PASSWORD)
    page.locator("#user-menu-toggle").click()
    page.locator("#logout-button").click()
    page.wait_for_url(f"{live_server.url}/accounts/login/")
    assert not User.objects.get(username="dave").is_anonymous
