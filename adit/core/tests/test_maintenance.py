"""Maintenance mode: staff keep working, everybody else and the API get 503."""

from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client, RequestFactory

from adit.accounts.factories import DEFAULT_PASSWORD, GroupFactory, TokenFactory, UserFactory
from adit.core.middleware import MAINTENANCE_API_DETAIL, MaintenanceMiddleware
from adit.core.models import ProjectSettings

pytestmark = pytest.mark.django_db


def header(response: Any, name: str) -> str:
    """A response header (the test client's responses are loosely typed)."""
    return response.headers[name]


@pytest.fixture
def maintenance():
    project_settings = ProjectSettings.get()
    project_settings.maintenance = True
    project_settings.save()
    return project_settings


def logged_in_client(**user_fields) -> Client:
    client = Client()
    client.force_login(UserFactory(groups=[GroupFactory(name="Radiology")], **user_fields))
    return client


def test_without_maintenance_users_work_and_see_no_banner():
    response = logged_in_client().get("/")
    assert response.status_code == 200
    assert b"maintenance-banner" not in response.content


def test_user_gets_503_maintenance_page(maintenance):
    response = logged_in_client().get("/")
    assert response.status_code == 503
    assert header(response, "Retry-After") == "600"
    assert b"is under maintenance" in response.content
    # The apps menu and group switcher are hidden; the page still has the layout.
    assert b'id="main-menu"' not in response.content
    assert b'id="active-group-switcher"' not in response.content


def test_anonymous_visitor_gets_503_page_with_login_link(maintenance):
    response = Client().get("/accounts/profile/")
    assert response.status_code == 503
    assert b"Staff log in" in response.content


def test_htmx_request_of_user_is_told_to_reload(maintenance):
    response = logged_in_client().post("/announcement/", headers={"HX-Request": "true"})
    assert response.status_code == 503
    assert header(response, "HX-Refresh") == "true"


def test_staff_work_normally_with_banner(maintenance):
    response = logged_in_client(is_staff=True).get("/")
    assert response.status_code == 200
    assert b'id="maintenance-banner"' in response.content
    assert b'id="main-menu"' in response.content


def test_staff_can_use_admin(maintenance):
    response = logged_in_client(is_staff=True, is_superuser=True).get("/admin/")
    assert response.status_code == 200


def test_non_staff_cannot_reach_admin(maintenance):
    assert logged_in_client().get("/admin/").status_code == 503


def test_switching_maintenance_off_takes_effect_at_once(maintenance):
    client = logged_in_client()
    assert client.get("/").status_code == 503
    maintenance.maintenance = False
    maintenance.save()
    assert client.get("/").status_code == 200


def test_api_gets_503_json_even_with_valid_token(maintenance):
    TokenFactory(clear_token="a" * 40, owner=UserFactory(is_staff=True))
    response = Client().get("/api/me/", headers={"Authorization": "Token " + "a" * 40})
    assert response.status_code == 503
    assert header(response, "Content-Type") == "application/json"
    assert response.json() == {"detail": MAINTENANCE_API_DETAIL}


def test_api_unknown_path_gets_503_json(maintenance):
    response = logged_in_client(is_staff=True).get("/api/does-not-exist/")
    assert response.status_code == 503
    assert response.json()["detail"] == MAINTENANCE_API_DETAIL


def test_api_works_without_maintenance():
    TokenFactory(clear_token="b" * 40, owner=UserFactory(username="apiuser"))
    response = Client().get("/api/me/", headers={"Authorization": "Token " + "b" * 40})
    assert response.status_code == 200
    assert response.json()["username"] == "apiuser"


def test_login_page_and_login_still_work(maintenance):
    staff = UserFactory(username="staffer", is_staff=True)
    client = Client()
    assert client.get("/accounts/login/").status_code == 200
    response = client.post(
        "/accounts/login/", {"username": "staffer", "password": DEFAULT_PASSWORD}
    )
    assert response.status_code == 302
    assert int(client.session["_auth_user_id"]) == staff.pk
    assert client.get("/").status_code == 200


def test_non_staff_can_log_in_and_out_but_sees_maintenance(maintenance):
    UserFactory(username="plain")
    client = Client()
    response = client.post("/accounts/login/", {"username": "plain", "password": DEFAULT_PASSWORD})
    assert response.status_code == 302
    assert client.get("/").status_code == 503
    assert client.post("/accounts/logout/").status_code == 302
    assert "_auth_user_id" not in client.session


def test_health_still_answers(maintenance):
    response = Client().get("/health/")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_static_files_are_not_blocked(maintenance, settings):
    # The test client does not serve static files, so call the middleware directly.
    reached = []

    def view(request: HttpRequest) -> HttpResponse:
        reached.append(request.path)
        return HttpResponse(b"ok")

    request = RequestFactory().get(settings.STATIC_URL + "vendor/htmx/htmx.min.js")
    response = MaintenanceMiddleware(view)(request)
    assert response.status_code == 200
    assert reached == ["/static/vendor/htmx/htmx.min.js"]
