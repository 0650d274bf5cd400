from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from adit.accounts.factories import GroupFactory, TokenFactory, UserFactory
from adit.accounts.models import Token, User, generate_token, hash_token

from .conftest import grant, header

ME_URL = "/api/me/"


def api_get(token: str | None = None, header: str | None = None):
    client = Client()
    if header is None and token is not None:
        header = f"Token {token}"
    headers = {"Authorization": header} if header is not None else {}
    return client.get(ME_URL, headers=headers)


def create_token_in_ui(client: Client, expiry: str = "7", description: str = "my script"):
    response = client.post(
        reverse("accounts:tokens"), {"description": description, "expiry": expiry}, follow=True
    )
    assert response.status_code == 200
    return response


def assert_unauthorized(response, detail_part: str) -> None:
    assert response.status_code == 401
    assert header(response, "Content-Type") == "application/json"
    assert header(response, "WWW-Authenticate") == "Token"
    assert detail_part in response.json()["detail"]


@pytest.mark.django_db
def test_token_created_in_ui_authenticates_api_and_is_stored_hashed(
    user: User, user_client: Client
):
    response = create_token_in_ui(user_client)

    clear_token = response.context["new_token"]
    assert len(clear_token) == 40
    assert clear_token in response.content.decode()
    token = Token.objects.get(owner=user)
    assert token.token_hashed == hash_token(clear_token)
    assert clear_token not in token.token_hashed
    assert token.fraction == clear_token[:4]
    assert token.description == "my script"
    assert token.expires is not None
    assert timedelta(days=6, hours=23) < token.expires - timezone.now() <= timedelta(days=7)
    assert token.last_used is None

    api_response = api_get(clear_token)

    assert api_response.status_code == 200
    assert api_response.json() == {"username": user.username, "active_group": "Radiology"}
    token.refresh_from_db()
    assert token.last_used is not None


@pytest.mark.django_db
def test_clear_token_is_shown_only_once(user_client: Client):
    clear_token = create_token_in_ui(user_client).context["new_token"]

    second_visit = user_client.get(reverse("accounts:tokens"))

    assert second_visit.context["new_token"] is None
    assert clear_token not in second_visit.content.decode()
    assert clear_token[:4] in second_visit.content.decode()


@pytest.mark.django_db
def test_token_list_shows_only_own_tokens(user: User, user_client: Client):
    own = TokenFactory(owner=user, description="own token")
    other = TokenFactory(owner=UserFactory(), description="someone else's token")

    response = user_client.get(reverse("accounts:tokens"))

    assert list(response.context["tokens"]) == [own]
    assert other.description not in response.content.decode()


@pytest.mark.django_db
def test_expired_token_gets_401():
    clear_token = generate_token()
    TokenFactory(clear_token=clear_token, expires=timezone.now() - timedelta(seconds=1))

    assert_unauthorized(api_get(clear_token), "expired")


@pytest.mark.django_db
def test_deleted_token_gets_401(user: User, user_client: Client):
    clear_token = create_token_in_ui(user_client).context["new_token"]
    assert api_get(clear_token).status_code == 200
    token = Token.objects.get(owner=user)

    confirmation = user_client.get(reverse("accounts:delete_token", args=[token.pk]))
    assert confirmation.status_code == 200
    assert Token.objects.filter(pk=token.pk).exists()  # a GET only asks
    user_client.post(reverse("accounts:delete_token", args=[token.pk]))

    assert not Token.objects.filter(pk=token.pk).exists()
    assert_unauthorized(api_get(clear_token), "Invalid token")


@pytest.mark.django_db
def test_cannot_delete_someone_elses_token(user_client: Client):
    other_token = TokenFactory(owner=UserFactory())

    response = user_client.post(reverse("accounts:delete_token", args=[other_token.pk]))

    assert response.status_code == 404
    assert Token.objects.filter(pk=other_token.pk).exists()


@pytest.mark.django_db
def test_missing_header_gets_401():
    response = api_get()

    assert_unauthorized(response, "credentials were not provided")


@pytest.mark.django_db
@pytest.mark.parametrize("scheme", ["Bearer", "Basic"])
def test_wrong_scheme_gets_401(scheme: str):
    clear_token = generate_token()
    TokenFactory(clear_token=clear_token)

    assert_unauthorized(api_get(header=f"{scheme} {clear_token}"), "Unsupported authorization")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("header", "detail"),
    [
        ("Token", "Malformed"),
        ("Token abc def", "Malformed"),
        (f"Token {'0' * 40}", "Invalid token"),
    ],
)
def test_malformed_or_unknown_token_gets_401(header: str, detail: str):
    TokenFactory()

    assert_unauthorized(api_get(header=header), detail)


@pytest.mark.django_db
def test_token_of_inactive_user_gets_401():
    clear_token = generate_token()
    TokenFactory(clear_token=clear_token, owner=UserFactory(is_active=False))

    assert_unauthorized(api_get(clear_token), "inactive")


@pytest.mark.django_db
def test_never_expiring_token_needs_permission(user: User, user_client: Client):
    response = create_token_in_ui(user_client, expiry="never")

    assert not Token.objects.exists()
    assert "not allowed to create tokens that never expire" in response.content.decode()
    assert "never" not in [
        value for value, _ in response.context["form"]["expiry"].field.widget.choices
    ]


@pytest.mark.django_db
def test_never_expiring_token_with_permission(user: User, user_client: Client):
    assert user.active_group is not None
    grant(user.active_group, "accounts.can_generate_never_expiring_token")

    response = create_token_in_ui(user_client, expiry="never")

    token = Token.objects.get(owner=user)
    assert token.expires is None
    assert api_get(response.context["new_token"]).status_code == 200


@pytest.mark.django_db
def test_invalid_expiry_choice_is_rejected(user_client: Client):
    response = create_token_in_ui(user_client, expiry="365")

    assert not Token.objects.exists()
    assert "365 is not one of the available choices" in response.content.decode()


@pytest.mark.django_db
def test_last_used_is_written_at_most_once_a_minute():
    clear_token = generate_token()
    recently = timezone.now() - timedelta(seconds=30)
    token = TokenFactory(clear_token=clear_token, last_used=recently)

    assert api_get(clear_token).status_code == 200
    token.refresh_from_db()
    assert token.last_used == recently

    long_ago = timezone.now() - timedelta(minutes=2)
    Token.objects.filter(pk=token.pk).update(last_used=long_ago)
    assert api_get(clear_token).status_code == 200
    token.refresh_from_db()
    assert token.last_used is not None and token.last_used > long_ago


@pytest.mark.django_db
def test_changing_the_salt_invalidates_tokens(settings):
    clear_token = generate_token()
    TokenFactory(clear_token=clear_token)
    settings.TOKEN_AUTHENTICATION_SALT = "another-salt"

    assert_unauthorized(api_get(clear_token), "Invalid token")


@pytest.mark.django_db
def test_token_user_gets_an_active_group():
    group = GroupFactory(name="Neuro")
    owner = UserFactory()
    owner.groups.add(group)  # member, but no active group yet
    clear_token = generate_token()
    TokenFactory(clear_token=clear_token, owner=owner)

    assert api_get(clear_token).json()["active_group"] == "Neuro"


@pytest.mark.django_db
def test_token_pages_need_login():
    response = Client().get(reverse("accounts:tokens"))

    assert response.status_code == 302
    assert header(response, "Location").startswith(reverse("login"))
