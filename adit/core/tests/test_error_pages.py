"""Error pages in the site's layout (400, 403 naming the missing permission, 404, 500), the
home page of a user without apps and the login page's title."""

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client, override_settings
from django.urls import path

from adit.accounts.factories import GroupFactory, UserFactory
from adit.core import errors
from adit.urls import urlpatterns as adit_urlpatterns


def _boom(request):
    raise RuntimeError("boom")


# The project's URLs plus one that fails, for the 500 page.
urlpatterns = [*adit_urlpatterns, path("test-boom/", _boom)]
handler400, handler403 = "adit.core.errors.bad_request", "adit.core.errors.permission_denied"
handler404, handler500 = "adit.core.errors.page_not_found", "adit.core.errors.server_error"

pytestmark = pytest.mark.django_db


def text(response) -> str:
    return response.content.decode()


def test_403_names_the_missing_permission_and_the_active_group(client):
    client.force_login(UserFactory(groups=[GroupFactory(name="Readers")]))
    response = client.get("/selective-transfer/")
    assert response.status_code == 403
    page = text(response)
    assert "Can add selective transfer job" in page
    assert "selective_transfer.add_selectivetransferjob" in page
    assert "Readers" in page
    assert "an administrator of" in page  # whom to ask
    assert 'id="main-menu"' in page  # in the site's layout
    for app in ("/batch-query/", "/batch-transfer/"):
        page = text(client.get(app))
        assert "Can add batch" in page and "Readers" in page


def test_403_of_a_check_with_a_reason_shows_the_reason(client):
    client.force_login(UserFactory(groups=[GroupFactory(name="Readers")]))
    response = client.get("/audit/")
    assert response.status_code == 403
    assert "Only staff may read the audit log." in text(response)


def test_403_without_group_says_so(client):
    client.force_login(UserFactory())
    page = text(client.get("/batch-query/"))
    assert "not a member of any group" in page


def test_404_is_styled_and_names_the_path(client):
    client.force_login(UserFactory(groups=[GroupFactory()]))
    response = client.get("/no-such-page/<b>")
    assert response.status_code == 404
    page = text(response)
    assert "There is nothing at this address" in page
    assert "/no-such-page/&lt;b&gt;" in page and "<b>" not in page.split('id="error-path"')[1][:60]
    assert 'id="main-menu"' in page


def test_404_for_anonymous_users_renders(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert "There is nothing at this address" in text(response)


def test_400_is_styled(rf):
    request = rf.get("/")
    request.user = UserFactory()
    response = errors.bad_request(request, ValueError("x"))
    assert response.status_code == 400
    assert "could not understand the request" in text(response)


@override_settings(ROOT_URLCONF=__name__)
def test_500_renders_without_the_database():
    client = Client(raise_request_exception=False)
    # The database is gone: nothing the 500 page needs may touch it.
    with connection.execute_wrapper(_refuse_queries):
        response = client.get("/test-boom/")
    assert response.status_code == 500
    page = text(response)
    assert "Something went wrong on our side" in page
    assert "bootstrap.min.css" in page


def _refuse_queries(execute, sql, params, many, context):
    raise RuntimeError("the database is down")


def test_home_of_a_user_without_apps_says_whom_to_ask(client):
    client.force_login(UserFactory(groups=[GroupFactory(name="Newcomers")]))
    page = text(client.get("/"))
    assert 'id="home-no-apps"' in page
    assert "Newcomers" in page and "administrator" in page


def test_home_of_a_user_with_an_app_has_no_such_note(client):
    group = GroupFactory(name="Researchers")
    group.permissions.add(Permission.objects.get(codename="add_batchqueryjob"))
    client.force_login(UserFactory(groups=[group]))
    assert 'id="home-no-apps"' not in text(client.get("/"))


def test_login_page_names_the_site_not_the_host(client, settings):
    settings.SITE_NAME = "ADIT Test"
    page = text(client.get("/accounts/login/"))
    assert "Log in to ADIT Test" in page
    assert "testserver" not in page
