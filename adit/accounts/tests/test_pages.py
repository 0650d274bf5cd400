import re

import pytest
from django.test import Client
from django.urls import reverse

from adit.accounts.factories import DEFAULT_PASSWORD, GroupFactory, UserFactory
from adit.accounts.models import User

from .conftest import header


def test_plain_and_namespaced_login_urls_agree():
    assert reverse("login") == reverse("accounts:login") == "/accounts/login/"
    assert reverse("logout") == reverse("accounts:logout") == "/accounts/logout/"


@pytest.mark.django_db
def test_login_page_renders_and_logs_in(user: User):
    client = Client()

    page = client.get(reverse("login"))
    assert page.status_code == 200
    assert 'name="username"' in page.content.decode()
    assert 'class="form-control"' in page.content.decode()

    response = client.post(
        reverse("login"), {"username": user.username, "password": DEFAULT_PASSWORD}
    )
    assert response.status_code == 302
    assert header(response, "Location") == reverse("home")
    assert client.session["_auth_user_id"] == str(user.pk)


@pytest.mark.django_db
def test_login_with_wrong_password_shows_an_error(user: User):
    response = Client().post(reverse("login"), {"username": user.username, "password": "nope"})

    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()


@pytest.mark.django_db
def test_logout_needs_post(user_client: Client):
    assert user_client.get(reverse("logout")).status_code == 405

    response = user_client.post(reverse("logout"))

    assert response.status_code == 302
    assert header(response, "Location") == reverse("login")
    assert "_auth_user_id" not in user_client.session


@pytest.mark.django_db
def test_profile_shows_the_users_details():
    neuro, thorax = GroupFactory(name="Neuro"), GroupFactory(name="Thorax")
    user = UserFactory(
        username="jdoe",
        email="jdoe@example.org",
        department="Neuroradiology",
        phone_number="+49 123",
        groups=[thorax, neuro],
    )
    client = Client()
    client.force_login(user)

    response = client.get(reverse("accounts:profile"))

    content = response.content.decode()
    assert response.status_code == 200
    for text in ["jdoe", "jdoe@example.org", "Neuroradiology", "+49 123", "Neuro", "Thorax"]:
        assert text in content
    assert re.search(r'id="profile-active-group">\s*Thorax\s*<', content)
    assert reverse("accounts:tokens") in content
    assert reverse("accounts:password_change") in content


@pytest.mark.django_db
def test_profile_needs_login():
    response = Client().get(reverse("accounts:profile"))

    assert response.status_code == 302
    assert header(response, "Location") == f"{reverse('login')}?next={reverse('accounts:profile')}"


@pytest.mark.django_db
def test_password_change(user: User, user_client: Client):
    page = user_client.get(reverse("accounts:password_change"))
    assert page.status_code == 200
    assert 'name="old_password"' in page.content.decode()

    new_password = "a-new-and-long-password-42"
    response = user_client.post(
        reverse("accounts:password_change"),
        {
            "old_password": DEFAULT_PASSWORD,
            "new_password1": new_password,
            "new_password2": new_password,
        },
    )

    assert response.status_code == 302
    assert header(response, "Location") == reverse("accounts:profile")
    user.refresh_from_db()
    assert user.check_password(new_password)
    # The session survives the change.
    assert user_client.get(reverse("accounts:profile")).status_code == 200


@pytest.mark.django_db
def test_password_change_with_wrong_old_password_fails(user: User, user_client: Client):
    response = user_client.post(
        reverse("accounts:password_change"),
        {
            "old_password": "wrong",
            "new_password1": "x-Long-pass-99",
            "new_password2": "x-Long-pass-99",
        },
    )

    assert response.status_code == 200
    assert "Your old password was entered incorrectly" in response.content.decode()
    user.refresh_from_db()
    assert user.check_password(DEFAULT_PASSWORD)
