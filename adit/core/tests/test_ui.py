"""Base layout, home page announcement, menu registry, toasts and vendored assets."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.http import HttpResponse
from django.test import Client
from django.urls import reverse

from adit.accounts.factories import GroupFactory, UserFactory
from adit.core import site
from adit.core.models import ProjectSettings
from adit.core.toasts import TOAST_EVENT, add_toast
from adit.core.vendoring import VENDORED_FILES, VendoringError, vendor_static_assets

TEMPLATE_DIRS = [
    Path(settings.BASE_DIR) / "adit" / "templates",
    Path(settings.BASE_DIR) / "adit" / "core" / "templates",
]


def header(response: Any, name: str) -> str:
    """A response header (the test client's responses are loosely typed)."""
    return response.headers[name]


def has_header(response: Any, name: str) -> bool:
    return name in response.headers


def client_for(**user_fields) -> Client:
    groups = user_fields.pop("groups", None) or [GroupFactory(name="Radiology")]
    client = Client()
    client.force_login(UserFactory(groups=groups, **user_fields))
    return client


def html(response) -> str:
    return response.content.decode()


# --- Layout -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_home_requires_login():
    response = Client().get("/")
    assert response.status_code == 302
    assert header(response, "Location").startswith("/accounts/login/")


@pytest.mark.django_db
def test_layout_has_vendored_assets_theme_csrf_and_toasts():
    page = html(client_for().get("/"))
    for asset in (
        "vendor/bootstrap/css/bootstrap.min.css",
        "vendor/bootstrap/js/bootstrap.bundle.min.js",
        "vendor/bootstrap-icons/bootstrap-icons.min.css",
        "vendor/htmx/htmx.min.js",
        "vendor/alpinejs/alpine.min.js",
        "adit/js/base.js",
    ):
        assert f'"{settings.STATIC_URL}{asset}"' in page
    assert not re.search(r"""(src|href)=["']https?://""", page), "nothing from a CDN"
    # Theme chosen before the first paint, from localStorage.
    assert page.index('localStorage.getItem("adit-theme")') < page.index("bootstrap.min.css")
    assert 'id="theme-toggle"' in page
    assert re.search(r"""hx-headers='\{"X-CSRFToken": "[A-Za-z0-9]{32,}"\}'""", page)
    assert 'id="toast-container"' in page
    for level in ("success", "info", "warning", "error"):
        assert f'id="toast-template-{level}"' in page


@pytest.mark.django_db
def test_navbar_menu_group_switcher_and_user_menu():
    radiology, research = GroupFactory(name="Radiology"), GroupFactory(name="Research")
    page = html(client_for(username="erin", groups=[radiology, research]).get("/"))
    menu = page[page.index('id="main-menu"') :]
    assert 'href="/"' in menu and "Home" in menu
    assert 'href="/admin/"' not in page, "Admin only for staff"
    switcher = page[page.index('id="active-group-switcher"') :]
    assert 'id="active-group-name">Radiology<' in switcher
    switch_url = reverse("accounts:switch_active_group")
    assert f'hx-post="{switch_url}"' in switcher
    assert f'name="group" value="{research.pk}"' in switcher
    assert f'name="group" value="{radiology.pk}"' in switcher
    for url_name in ("accounts:profile", "accounts:tokens", "accounts:password_change"):
        assert f'href="{reverse(url_name)}"' in page
    # Logout is a POST form (with CSRF token), not a link.
    assert re.search(
        rf'<form method="post" action="{reverse("accounts:logout")}">\s*'
        r'<input type="hidden" name="csrfmiddlewaretoken"',
        page,
    )
    assert "erin" in page


@pytest.mark.django_db
def test_staff_see_admin_in_menu():
    page = html(client_for(is_staff=True).get("/"))
    assert 'href="/admin/"' in page


@pytest.mark.django_db
def test_user_without_group_sees_no_switcher():
    client = Client()
    client.force_login(UserFactory())
    page = html(client.get("/"))
    assert 'id="active-group-switcher"' not in page
    assert "not a member of any group" in page


@pytest.mark.django_db
def test_switching_group_through_navbar_form_without_htmx():
    radiology, research = GroupFactory(name="Radiology"), GroupFactory(name="Research")
    user = UserFactory(groups=[radiology, research])
    client = Client()
    client.force_login(user)
    response = client.post(
        reverse("accounts:switch_active_group"), {"group": research.pk}, follow=True
    )
    assert response.status_code == 200
    user.refresh_from_db()
    assert user.active_group == research
    assert 'id="active-group-name">Research<' in html(response)


@pytest.mark.django_db
def test_registered_menu_items_appear_with_their_rules(monkeypatch):
    monkeypatch.setattr(site, "main_menu_items", [])
    monkeypatch.setattr("adit.core.context_processors.main_menu_items", site.main_menu_items)
    site.register_main_menu_item("accounts:tokens", "Token app", icon="key")
    site.register_main_menu_item("accounts:profile", "Staff app", staff_only=True)
    site.register_main_menu_item("accounts:password_change", "Permitted app", permission="x.y")
    site.register_main_menu_item("not_a_url", "Unmounted app")
    site.register_main_menu_item("accounts:tokens", "Token app renamed", icon="key")
    assert [item.label for item in site.main_menu_items][0] == "Staff app"

    user_page = html(client_for().get("/"))
    menu = user_page[
        user_page.index('id="main-menu"') : user_page.index(
            "</ul>", user_page.index('id="main-menu"')
        )
    ]
    assert "Token app renamed" in menu and "bi-key" in menu
    assert "Staff app" not in menu
    assert "Permitted app" not in menu
    assert "Unmounted app" not in menu

    staff_page = html(client_for(is_staff=True, username="boss").get("/accounts/tokens/"))
    staff_menu = staff_page[staff_page.index('id="main-menu"') :]
    assert "Staff app" in staff_menu
    assert re.search(r'class="nav-link text-nowrap active"\s+href="/accounts/tokens/"', staff_menu)

    superuser_page = html(client_for(is_superuser=True, username="root").get("/"))
    assert "Permitted app" in superuser_page


@pytest.mark.django_db
def test_django_messages_become_toasts_escaped():
    client = client_for()
    # A view that adds an error message quoting user input, then redirects to a page.
    response = client.post(
        reverse("accounts:switch_active_group"),
        {"group": "<script>alert(1)</script>"},
        headers={"Referer": "http://testserver/"},
        follow=True,
    )
    page = html(response)
    container = page[page.index('id="toast-container"') : page.index('id="toast-template-success"')]
    assert 'data-toast-level="error"' in container
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in container
    assert "<script>alert(1)" not in page


# --- Home page announcement ---------------------------------------------------------------------


@pytest.mark.django_db
def test_home_shows_announcement_escaped_with_line_breaks():
    ProjectSettings.objects.update_or_create(
        pk=1, defaults={"announcement": "PACS down <b>Friday</b>\nBack Monday\n\nThanks"}
    )
    page = html(client_for().get("/"))
    assert "<p>PACS down &lt;b&gt;Friday&lt;/b&gt;<br>Back Monday</p>" in page
    assert "<p>Thanks</p>" in page
    assert "Edit announcement" not in page, "only staff get the form"


@pytest.mark.django_db
def test_home_without_announcement_shows_none():
    page = html(client_for().get("/"))
    assert 'id="announcement"' not in page
    assert "Welcome to ADIT" in page


@pytest.mark.django_db
def test_staff_see_edit_form():
    ProjectSettings.objects.update_or_create(pk=1, defaults={"announcement": "Old text"})
    page = html(client_for(is_staff=True).get("/"))
    assert "Edit announcement" in page
    assert f'hx-post="{reverse("edit_announcement")}"' in page
    assert re.search(r">\s*Old text</textarea>", page)


@pytest.mark.django_db
def test_staff_edit_announcement_with_htmx():
    client = client_for(is_staff=True)
    response = client.post(
        reverse("edit_announcement"),
        {"announcement": "  Maintenance <i>tonight</i>  "},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    assert ProjectSettings.get().announcement == "Maintenance <i>tonight</i>"
    fragment = html(response)
    assert fragment.lstrip().startswith("<section") or "<section" in fragment
    assert "<html" not in fragment
    assert "Maintenance &lt;i&gt;tonight&lt;/i&gt;" in fragment
    assert "<i>tonight</i>" not in fragment
    trigger = json.loads(header(response, "HX-Trigger"))
    assert trigger[TOAST_EVENT] == {
        "message": "The announcement was saved.",
        "level": "success",
        "title": "",
    }


@pytest.mark.django_db
def test_staff_edit_announcement_without_htmx_redirects_home():
    client = client_for(is_staff=True)
    response = client.post(reverse("edit_announcement"), {"announcement": "Hello"}, follow=True)
    assert response.redirect_chain == [("/", 302)]
    assert "The announcement was saved." in html(response)
    assert ProjectSettings.get().announcement == "Hello"


@pytest.mark.django_db
def test_staff_clear_announcement():
    ProjectSettings.objects.update_or_create(pk=1, defaults={"announcement": "Old"})
    client_for(is_staff=True).post(
        reverse("edit_announcement"), {"announcement": ""}, headers={"HX-Request": "true"}
    )
    assert ProjectSettings.get().announcement == ""


@pytest.mark.django_db
def test_too_long_announcement_is_refused_with_reason():
    ProjectSettings.objects.update_or_create(pk=1, defaults={"announcement": "Kept"})
    response = client_for(is_staff=True).post(
        reverse("edit_announcement"), {"announcement": "x" * 10_001}, headers={"HX-Request": "true"}
    )
    assert response.status_code == 200
    assert "The announcement has 10001 characters; at most 10000 are allowed." in html(response)
    assert not has_header(response, "HX-Trigger")
    assert ProjectSettings.get().announcement == "Kept"


@pytest.mark.django_db
def test_non_staff_cannot_edit_announcement():
    ProjectSettings.objects.update_or_create(pk=1, defaults={"announcement": "Kept"})
    response = client_for().post(
        reverse("edit_announcement"), {"announcement": "Hacked"}, headers={"HX-Request": "true"}
    )
    assert response.status_code == 403
    assert ProjectSettings.get().announcement == "Kept"


@pytest.mark.django_db
def test_edit_announcement_needs_login_and_post():
    assert Client().post(reverse("edit_announcement"), {"announcement": "x"}).status_code == 302
    assert client_for(is_staff=True).get(reverse("edit_announcement")).status_code == 405


@pytest.mark.django_db
def test_project_settings_admin_edits_singleton():
    client = client_for(is_staff=True, is_superuser=True)
    ProjectSettings.get()
    assert client.get("/admin/core/projectsettings/1/change/").status_code == 200
    assert client.get("/admin/core/projectsettings/add/").status_code == 403
    response = client.post(
        "/admin/core/projectsettings/1/change/", {"announcement": "From admin", "maintenance": "on"}
    )
    assert response.status_code == 302
    project_settings = ProjectSettings.get()
    assert project_settings.announcement == "From admin"
    assert project_settings.maintenance


# --- Toast helper -------------------------------------------------------------------------------


def test_add_toast_keeps_other_triggers():
    response = HttpResponse()
    response["HX-Trigger"] = "itemsChanged, other"
    add_toast(response, "Done", level="warning", title="Heads up")
    assert json.loads(header(response, "HX-Trigger")) == {
        "itemsChanged": None,
        "other": None,
        TOAST_EVENT: {"message": "Done", "level": "warning", "title": "Heads up"},
    }
    response = HttpResponse()
    response["HX-Trigger"] = json.dumps({"reload": {"id": 3}})
    add_toast(response, "Done")
    assert json.loads(header(response, "HX-Trigger"))["reload"] == {"id": 3}


# --- Vendored assets ----------------------------------------------------------------------------


def test_every_vendored_file_is_present_and_found_by_staticfiles():
    for destination in VENDORED_FILES.values():
        found = finders.find(f"vendor/{destination}")
        assert found, f"vendor/{destination} is missing; run `uv run cli vendor-assets`"
        assert Path(str(found)).stat().st_size > 0


def test_vendored_versions_are_recorded():
    versions = Path(str(finders.find("vendor/VERSIONS.txt"))).read_text()
    for package in ("alpinejs 3.", "bootstrap 5.", "bootstrap-icons 1.", "htmx.org 2."):
        assert package in versions


def test_icon_css_finds_its_fonts():
    css = Path(str(finders.find("vendor/bootstrap-icons/bootstrap-icons.min.css"))).read_text()
    for font in re.findall(r'url\("(fonts/[^"?]+)', css):
        assert finders.find(f"vendor/bootstrap-icons/{font}"), font


def test_templates_load_nothing_from_a_cdn():
    for template_dir in TEMPLATE_DIRS:
        for template in template_dir.rglob("*.html"):
            text = template.read_text()
            assert not re.search(r"""(src|href)=["'](https?:)?//""", text), template


def make_node_modules(root: Path) -> Path:
    for source in VENDORED_FILES:
        path = root / source
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content of {source}")
    return root


def test_vendor_static_assets_replaces_target(tmp_path):
    node_modules = make_node_modules(tmp_path / "node_modules")
    target = tmp_path / "vendor"
    (target / "stale").mkdir(parents=True)
    (target / "stale" / "old.js").write_text("old")
    copied = vendor_static_assets(node_modules, target)
    assert len(copied) == len(VENDORED_FILES) + 1  # and VERSIONS.txt
    assert "htmx.org unknown" in (target / "VERSIONS.txt").read_text()
    assert not (target / "stale").exists()
    assert (target / "htmx/htmx.min.js").read_text() == "content of htmx.org/dist/htmx.min.js"


def test_vendor_static_assets_names_missing_files_and_keeps_old_ones(tmp_path):
    node_modules = make_node_modules(tmp_path / "node_modules")
    (node_modules / "alpinejs/dist/cdn.min.js").unlink()
    target = tmp_path / "vendor"
    target.mkdir()
    (target / "keep.js").write_text("keep")
    with pytest.raises(VendoringError, match=r"alpinejs/dist/cdn\.min\.js.*npm ci"):
        vendor_static_assets(node_modules, target)
    assert (target / "keep.js").read_text() == "keep"
