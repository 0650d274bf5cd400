"""Onboarding in the admin: what to register at a PACS, Test connection with its result inline,
the group's node access and role presets, the apps' settings, a new user's active group.

The browser tests run against a live server and a real Orthanc; set ADIT_SCREENSHOT_DIR to keep
screenshots of the pages (ADIT_BROWSER_WIDTH=390 for phone width).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.test import Client, override_settings
from django.urls import reverse
from playwright.sync_api import Page, expect

from adit.accounts.factories import DEFAULT_PASSWORD, GroupFactory, UserFactory
from adit.accounts.models import User
from adit.accounts.roles import ROLES, matching_role, role_permissions
from adit.batch_query.models import BatchQuerySettings
from adit.batch_transfer.models import BatchTransferSettings
from adit.core.dicom.testing.peers import free_port
from adit.core.factories import DicomFolderFactory, DicomServerFactory
from adit.core.models import DicomNodeGroupAccess, DicomServer
from adit.core.testing.browser import login
from adit.selective_transfer.models import SelectiveTransferSettings

RECEIVER = {
    "CALLING_AE_TITLE": "ADITQR",
    "RECEIVER_AE_TITLE": "ADITRECV",
    "STORE_SCP_HOST": "10.1.2.3",
    "STORE_SCP_PORT": 11999,
}


@pytest.fixture
def admin(db) -> Client:
    client = Client()
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


def inline_management(prefix: str, total: int, initial: int = 0) -> dict[str, str]:
    return {
        f"{prefix}-TOTAL_FORMS": str(total),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


def permission_names(group: Group) -> set[str]:
    return {
        f"{p.content_type.app_label}.{p.codename}"
        for p in group.permissions.select_related("content_type")
    }


# --- the server page: what to register at the PACS, Test connection ---------------------------


@pytest.mark.django_db
@override_settings(**RECEIVER)
def test_server_page_shows_what_to_register_at_the_pacs(admin: Client):
    server = DicomServerFactory(name="PACS")
    for url in (
        reverse("admin:core_dicomserver_change", args=[server.pk]),
        reverse("admin:core_dicomserver_add"),
    ):
        page = admin.get(url).content.decode()
        assert '<dd id="adit-calling-ae-title">ADITQR</dd>' in page
        assert '<dd id="adit-receiver-ae-title">ADITRECV</dd>' in page
        assert '<dd id="adit-receiver-host">10.1.2.3</dd>' in page
        assert '<dd id="adit-receiver-port">11999</dd>' in page
        assert "adit-receiver-host-hint" not in page  # a routable address needs no hint


@pytest.mark.django_db
@override_settings(STORE_SCP_HOST="127.0.0.1")
def test_a_loopback_receiver_address_comes_with_a_hint(admin: Client):
    server = DicomServerFactory(name="PACS")
    page = admin.get(reverse("admin:core_dicomserver_change", args=[server.pk])).content.decode()
    assert "set STORE_SCP_HOST to show it here" in page


@pytest.mark.django_db
def test_test_connection_answers_json_for_the_inline_result(admin: Client, orthanc_a):
    config = orthanc_a.server_config(name="Orthanc A")
    server = DicomServer.objects.create(**dataclasses.asdict(config))
    url = reverse("admin:core_dicomserver_test_connection", args=[server.pk])
    answer = admin.post(url, HTTP_ACCEPT="application/json").json()
    assert answer["ok"] is True
    assert "C-ECHO succeeded" in answer["summary"]

    dead = DicomServerFactory(name="Dead", ae_title="DEAD", port=free_port())
    url = reverse("admin:core_dicomserver_test_connection", args=[dead.pk])
    answer = admin.post(url, HTTP_ACCEPT="application/json").json()
    assert answer["ok"] is False
    assert "C-ECHO failed" in answer["summary"]

    refused = admin.get(url, HTTP_ACCEPT="application/json")
    assert refused.status_code == 405
    assert "Test connection button" in refused.json()["summary"]


# --- the apps' settings ------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "model", [SelectiveTransferSettings, BatchQuerySettings, BatchTransferSettings]
)
def test_every_apps_settings_are_in_the_admin(admin: Client, model):
    meta = model._meta
    changelist = admin.get(reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"))
    assert changelist.status_code == 200
    row = model.get()
    change_url = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[row.pk])
    response = admin.post(
        change_url,
        {
            "locked": "on",
            "suspended": "on",
            "transfer_window_start": "22:00",
            "transfer_window_end": "06:00",
        },
    )
    assert response.status_code == 302
    row.refresh_from_db()
    assert row.locked and row.suspended
    assert str(row.transfer_window_start) == "22:00:00"
    # A singleton: no second row, no deleting the one.
    assert admin.get(reverse(f"admin:{meta.app_label}_{meta.model_name}_add")).status_code == 403
    assert model.objects.count() == 1


@pytest.mark.django_db
def test_a_half_transfer_window_is_refused_with_a_reason(admin: Client):
    row = BatchTransferSettings.get()
    response = admin.post(
        reverse("admin:batch_transfer_batchtransfersettings_change", args=[row.pk]),
        {"transfer_window_start": "22:00", "transfer_window_end": ""},
    )
    assert response.status_code == 200
    assert "both a start and an end" in response.content.decode()
    row.refresh_from_db()
    assert row.transfer_window_start is None


# --- groups: role presets and node access -------------------------------------------------------


@pytest.mark.django_db
def test_every_role_names_existing_permissions_and_each_includes_the_one_before():
    previous: set[str] = set()
    for key, role in ROLES.items():
        assert len(role_permissions(key)) == len(set(role.permissions))
        assert previous < set(role.permissions)
        previous = set(role.permissions)


@pytest.mark.django_db
def test_group_admin_sets_a_role_and_node_access(admin: Client):
    pacs = DicomServerFactory(name="PACS")
    folder = DicomFolderFactory(name="Downloads")
    data = {
        "name": "Study team",
        "role": "researcher",
        "users": [],
        **inline_management("dicom_node_accesses", 2),
        "dicom_node_accesses-0-node": pacs.pk,
        "dicom_node_accesses-0-source": "on",
        "dicom_node_accesses-1-node": folder.pk,
        "dicom_node_accesses-1-destination": "on",
    }
    response = admin.post(reverse("admin:auth_group_add"), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    group = Group.objects.get(name="Study team")
    assert permission_names(group) == set(ROLES["researcher"].permissions)
    accesses = {
        (a.node.name, a.source, a.destination)
        for a in DicomNodeGroupAccess.objects.filter(group=group)
    }
    assert accesses == {("PACS", True, False), ("Downloads", False, True)}

    # The page shows the role that matches and the node access rows.
    page = admin.get(reverse("admin:auth_group_change", args=[group.pk]))
    assert page.context["adminform"].form["role"].value() == "researcher"
    content = page.content.decode()
    assert "node access (servers and folders the group may use)" in content.lower()
    assert matching_role(group.permissions.select_related("content_type")) == "researcher"


@pytest.mark.django_db
def test_changing_the_role_replaces_the_permissions(admin: Client):
    group = GroupFactory(name="Managers")
    group.permissions.set(role_permissions("staff"))
    response = admin.post(
        reverse("admin:auth_group_change", args=[group.pk]),
        {"name": "Managers", "role": "data_manager", **inline_management("dicom_node_accesses", 0)},
    )
    assert response.status_code == 302
    assert permission_names(group) == set(ROLES["data_manager"].permissions)


@pytest.mark.django_db
def test_custom_permissions_stay_when_no_role_is_chosen(admin: Client):
    group = GroupFactory(name="Odd")
    [permission] = role_permissions("researcher")[:1]
    response = admin.post(
        reverse("admin:auth_group_change", args=[group.pk]),
        {
            "name": "Odd",
            "role": "",
            "permissions": [permission.pk],
            **inline_management("dicom_node_accesses", 0),
        },
    )
    assert response.status_code == 302
    assert list(group.permissions.all()) == [permission]


# --- users: the active group ---------------------------------------------------------------------


@pytest.mark.django_db
def test_user_without_active_group_gets_the_first_group_and_a_readable_empty_choice(
    admin: Client,
):
    neuro, thorax = GroupFactory(name="Neuro"), GroupFactory(name="Thorax")
    user = UserFactory(username="newbie", groups=[])
    url = reverse("admin:accounts_user_change", args=[user.pk])
    page = admin.get(url).content.decode()
    assert "None yet (the user is in no group)" in page
    assert "---------</option>" not in page.split('name="active_group"')[1].split("</select>")[0]

    form = admin.get(url).context["adminform"].form
    data = {
        key: value
        for key, value in form.initial.items()
        if value is not None and key not in ("groups", "user_permissions", "active_group")
    }
    data.update(
        {
            "groups": [thorax.pk, neuro.pk],
            "date_joined_0": "2026-01-01",
            "date_joined_1": "10:00",
            "preferences": "{}",
        }
    )
    data.pop("last_login", None)
    data.pop("date_joined", None)
    response = admin.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    user.refresh_from_db()
    assert user.active_group == neuro


# --- in a real browser ---------------------------------------------------------------------------


def screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("ADIT_SCREENSHOT_DIR")
    if folder:
        width = page.viewport_size["width"] if page.viewport_size else 0
        page.screenshot(path=str(Path(folder) / f"admin-{name}-{width}.png"), full_page=True)


@pytest.mark.acceptance
@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
@override_settings(**RECEIVER)
def test_admin_registers_a_pacs_and_tests_the_connection_inline(page: Page, live_server, orthanc_a):
    UserFactory(username="root", is_staff=True, is_superuser=True)
    config = orthanc_a.server_config(name="Orthanc A")
    server = DicomServer.objects.create(**dataclasses.asdict(config))
    dead = DicomServerFactory(name="Dead PACS", ae_title="DEAD", port=free_port())

    login(page, live_server.url, "root", DEFAULT_PASSWORD)
    page.goto(f"{live_server.url}{reverse('admin:core_dicomserver_change', args=[server.pk])}")
    registration = page.locator("#adit-registration")
    expect(registration).to_contain_text("Register ADIT at this PACS")
    expect(page.locator("#adit-receiver-ae-title")).to_have_text("ADITRECV")
    expect(page.locator("#adit-receiver-host")).to_have_text("10.1.2.3")
    expect(page.locator("#adit-receiver-port")).to_have_text("11999")

    button = page.get_by_role("button", name="Test connection")
    expect(button).to_have_class("button")
    url_before = page.url
    button.click()
    result = page.locator("#test-connection-result")
    expect(result).to_contain_text("C-ECHO succeeded", timeout=30_000)
    expect(result).to_have_class("test-connection-result ok")
    assert page.url == url_before  # inline: no reload, the form is untouched
    screenshot(page, "server-ok")

    page.goto(f"{live_server.url}{reverse('admin:core_dicomserver_change', args=[dead.pk])}")
    page.get_by_role("button", name="Test connection").click()
    expect(page.locator("#test-connection-result")).to_contain_text("C-ECHO failed", timeout=30_000)
    expect(page.locator("#test-connection-result")).to_have_class("test-connection-result failed")
    screenshot(page, "server-failed")


@pytest.mark.acceptance
@pytest.mark.django_db(transaction=True)
def test_admin_gives_a_group_a_role_and_node_access(page: Page, live_server):
    UserFactory(username="root", is_staff=True, is_superuser=True)
    DicomServerFactory(name="PACS")
    login(page, live_server.url, "root", DEFAULT_PASSWORD)
    page.goto(f"{live_server.url}{reverse('admin:auth_group_add')}")
    page.get_by_label("Name:").fill("Radiology research")
    page.get_by_label("Role:").select_option(label="Researcher")
    page.locator("select[name='dicom_node_accesses-0-node']").select_option(label="PACS")
    page.locator("input[name='dicom_node_accesses-0-source']").check()
    screenshot(page, "group-add")
    page.locator("input[name='_save']").click()
    expect(page.locator("ul.messagelist")).to_contain_text("was added successfully")

    group = Group.objects.get(name="Radiology research")
    assert permission_names(group) == set(ROLES["researcher"].permissions)
    assert DicomNodeGroupAccess.objects.filter(group=group, source=True).count() == 1
    user = User.objects.get(username="root")
    assert user.is_superuser
