from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from adit.accounts.factories import UserFactory
from adit.accounts.models import Token, User


def run(command: str, *args: str) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.fixture
def superuser_settings(settings):
    settings.SUPERUSER_USERNAME = "boss"
    settings.SUPERUSER_EMAIL = "boss@example.org"
    settings.SUPERUSER_PASSWORD = ""
    settings.SUPERUSER_AUTH_TOKEN = ""
    return settings


@pytest.mark.django_db
def test_create_superuser_prints_login_once(superuser_settings):
    first = run("create_superuser")

    user = User.objects.get(username="boss")
    password = first.split("password:")[1].strip()
    assert "username: boss" in first
    assert len(password) >= 12
    assert user.check_password(password)
    assert user.is_superuser and user.is_staff and user.email == "boss@example.org"
    assert user.active_group is not None and user.active_group.name == "Default"
    assert list(user.groups.values_list("name", flat=True)) == ["Default"]

    second = run("create_superuser")

    assert second == ""
    assert User.objects.filter(username="boss").count() == 1
    user.refresh_from_db()
    assert user.check_password(password)


@pytest.mark.django_db
def test_create_superuser_uses_the_configured_password(superuser_settings):
    superuser_settings.SUPERUSER_PASSWORD = "configured-secret"

    output = run("create_superuser")

    assert "password: configured-secret" in output
    assert User.objects.get(username="boss").check_password("configured-secret")


@pytest.mark.django_db
def test_create_superuser_leaves_an_existing_user_alone_unless_forced(superuser_settings):
    UserFactory(username="boss", password="old-password")

    assert run("create_superuser") == ""
    existing = User.objects.get(username="boss")
    assert existing.check_password("old-password") and not existing.is_superuser

    output = run("create_superuser", "--force")

    new_password = output.split("password:")[1].strip()
    existing.refresh_from_db()
    assert existing.is_superuser and existing.check_password(new_password)


@pytest.mark.django_db
def test_create_superuser_stores_the_auth_token(superuser_settings):
    clear_token = "f" * 40
    superuser_settings.SUPERUSER_AUTH_TOKEN = clear_token

    run("create_superuser")
    run("create_superuser")

    token = Token.objects.get()
    assert token.owner.username == "boss"
    assert token.expires is None
    assert token.token_hashed != clear_token
    response = Client().get("/api/me/", HTTP_AUTHORIZATION=f"Token {clear_token}")
    assert response.status_code == 200
    assert response.json() == {"username": "boss", "active_group": "Default"}


@pytest.mark.django_db
def test_create_superuser_rejects_a_short_auth_token(superuser_settings):
    superuser_settings.SUPERUSER_AUTH_TOKEN = "short"

    with pytest.raises(CommandError, match="SUPERUSER_AUTH_TOKEN must be at least 20"):
        run("create_superuser")
    assert not User.objects.exists()


@pytest.mark.django_db
def test_create_superuser_needs_a_username(superuser_settings):
    superuser_settings.SUPERUSER_USERNAME = " "

    with pytest.raises(CommandError, match="SUPERUSER_USERNAME is empty"):
        run("create_superuser")


@pytest.mark.django_db
def test_example_users_and_groups(superuser_settings):
    run("create_superuser")

    output = run("create_example_users", "--count", "4")
    assert "Created 4 example users" in output
    assert User.objects.filter(is_superuser=False).count() == 4
    assert "no example users created" in run("create_example_users")

    run("create_example_groups", "--count", "3")

    superuser = User.objects.get(username="boss")
    assert superuser.groups.count() == 4  # "Default" and the three example groups
    for user in User.objects.filter(is_superuser=False):
        assert 1 <= user.groups.count() <= 2
        assert user.active_group is not None
        assert user.groups.filter(pk=user.active_group.pk).exists()


@pytest.mark.django_db
def test_example_commands_reject_bad_counts():
    with pytest.raises(CommandError, match="--count must be at least 1"):
        run("create_example_users", "--count", "0")
    with pytest.raises(CommandError, match="--count must be between 1 and"):
        run("create_example_groups", "--count", "99")
