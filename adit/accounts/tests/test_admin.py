import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from adit.accounts.factories import GroupFactory, TokenFactory, UserFactory
from adit.accounts.models import User

# The group page's node access inline (an empty formset).
NO_NODE_ACCESS_ROWS = {
    "dicom_node_accesses-TOTAL_FORMS": "0",
    "dicom_node_accesses-INITIAL_FORMS": "0",
}


@pytest.fixture
def admin(db) -> Client:
    client = Client()
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


@pytest.mark.django_db
def test_group_admin_sets_the_members(admin: Client):
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")

    response = admin.post(
        reverse("admin:auth_group_add"),
        {"name": "Study team", "users": [alice.pk, bob.pk], **NO_NODE_ACCESS_ROWS},
    )

    assert response.status_code == 302
    group = Group.objects.get(name="Study team")
    assert set(group.user_set.all()) == {alice, bob}  # type: ignore[attr-defined]
    alice.refresh_from_db()
    assert alice.active_group == group

    admin.post(
        reverse("admin:auth_group_change", args=[group.pk]),
        {"name": "Study team", "users": [bob.pk], **NO_NODE_ACCESS_ROWS},
    )

    alice.refresh_from_db()
    assert alice.active_group is None
    assert list(group.user_set.all()) == [bob]  # type: ignore[attr-defined]


@pytest.mark.django_db
def test_user_admin_shows_adit_fields(admin: Client):
    user = UserFactory(groups=[GroupFactory(name="Neuro")])

    response = admin.get(reverse("admin:accounts_user_change", args=[user.pk]))

    content = response.content.decode()
    assert response.status_code == 200
    for field in ["active_group", "department", "phone_number", "preferences"]:
        assert f'name="{field}"' in content


@pytest.mark.django_db
def test_user_admin_refuses_an_active_group_outside_the_users_groups(admin: Client):
    neuro, thorax = GroupFactory(name="Neuro"), GroupFactory(name="Thorax")
    user = UserFactory(groups=[neuro])
    data = {
        "username": user.username,
        "email": user.email,
        "groups": [neuro.pk],
        "active_group": thorax.pk,
        "preferences": "{}",
        "date_joined_0": "2025-01-01",
        "date_joined_1": "00:00:00",
        "is_active": "on",
    }

    response = admin.post(reverse("admin:accounts_user_change", args=[user.pk]), data)

    assert response.status_code == 200
    assert "The active group must be one of the user&#x27;s groups" in response.content.decode()
    user.refresh_from_db()
    assert user.active_group == neuro

    data["groups"] = [neuro.pk, thorax.pk]
    response = admin.post(reverse("admin:accounts_user_change", args=[user.pk]), data)
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.active_group == thorax


@pytest.mark.django_db
def test_token_admin_shows_hash_read_only_and_cannot_add(admin: Client):
    token = TokenFactory()

    change_page = admin.get(reverse("admin:accounts_token_change", args=[token.pk]))

    assert change_page.status_code == 200
    assert token.token_hashed in change_page.content.decode()
    assert 'name="token_hashed"' not in change_page.content.decode()
    assert admin.get(reverse("admin:accounts_token_add")).status_code == 403


def test_user_model_is_ours():
    from django.contrib.auth import get_user_model

    assert get_user_model() is User


@pytest.mark.django_db
def test_user_admin_adds_a_user(admin: Client):
    response = admin.post(
        reverse("admin:accounts_user_add"),
        {
            "username": "newbie",
            "password1": "a-long-password-77",
            "password2": "a-long-password-77",
            "usable_password": "true",
        },
    )

    assert response.status_code == 302
    assert User.objects.get(username="newbie").check_password("a-long-password-77")


@pytest.mark.django_db
def test_token_admin_list_renders(admin: Client):
    TokenFactory(description="listed token")

    response = admin.get(reverse("admin:accounts_token_changelist"))

    assert response.status_code == 200
    assert "listed token" in response.content.decode()
