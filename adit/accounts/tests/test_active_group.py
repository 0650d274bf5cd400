import pytest
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from adit.accounts.factories import GroupFactory, UserFactory
from adit.accounts.models import User

from .conftest import grant, header

ADD_TOKEN = "accounts.add_token"
DELETE_TOKEN = "accounts.delete_token"


@pytest.fixture
def two_groups() -> tuple[Group, Group]:
    first = GroupFactory(name="A first group")
    second = GroupFactory(name="B second group")
    grant(first, ADD_TOKEN)
    grant(second, DELETE_TOKEN)
    return first, second


@pytest.fixture
def member(db, two_groups: tuple[Group, Group]) -> User:
    return UserFactory(groups=list(two_groups))


def fresh(user: User) -> User:
    # A new instance, because Django caches permissions on the user object.
    return User.objects.get(pk=user.pk)


def switch(client: Client, group_id, **extra):
    return client.post(reverse("accounts:switch_active_group"), {"group": group_id}, **extra)


@pytest.mark.django_db
def test_permissions_follow_the_active_group(member: User, two_groups: tuple[Group, Group]):
    first, second = two_groups
    assert member.active_group == first
    assert member.has_perm(ADD_TOKEN)
    assert not member.has_perm(DELETE_TOKEN)

    member.change_active_group(second)

    member = fresh(member)
    assert not member.has_perm(ADD_TOKEN)
    assert member.has_perm(DELETE_TOKEN)
    assert member.get_all_permissions() == {DELETE_TOKEN}


@pytest.mark.django_db
def test_switching_via_post_changes_the_active_group(member: User, two_groups):
    _, second = two_groups
    client = Client()
    client.force_login(member)

    response = switch(client, second.pk, HTTP_REFERER="http://testserver/accounts/profile/")

    assert response.status_code == 302
    assert header(response, "Location") == "http://testserver/accounts/profile/"
    member = fresh(member)
    assert member.active_group == second
    assert member.has_perm(DELETE_TOKEN) and not member.has_perm(ADD_TOKEN)
    messages = [str(m) for m in get_messages(response.wsgi_request)]
    assert messages == [f"Active group is now {second.name}."]


@pytest.mark.django_db
def test_switching_via_htmx_answers_204_with_refresh(member: User, two_groups):
    _, second = two_groups
    client = Client()
    client.force_login(member)

    response = switch(client, second.pk, HTTP_HX_REQUEST="true")

    assert response.status_code == 204
    assert header(response, "HX-Refresh") == "true"
    assert fresh(member).active_group == second


@pytest.mark.django_db
def test_switching_redirects_home_for_a_foreign_referrer(member: User, two_groups):
    client = Client()
    client.force_login(member)

    response = switch(client, two_groups[1].pk, HTTP_REFERER="https://evil.example/")

    assert header(response, "Location") == reverse("home")


@pytest.mark.django_db
@pytest.mark.parametrize("htmx", [False, True])
def test_switching_to_a_group_one_is_not_in_is_refused(member: User, two_groups, htmx: bool):
    foreign = GroupFactory(name="Foreign")
    client = Client()
    client.force_login(member)
    extra = {"HTTP_HX_REQUEST": "true"} if htmx else {}

    response = switch(client, foreign.pk, **extra)

    assert response.status_code == (403 if htmx else 302)
    assert fresh(member).active_group == two_groups[0]
    messages = [str(m) for m in get_messages(response.wsgi_request)]
    assert len(messages) == 1 and "not a member" in messages[0]


@pytest.mark.django_db
@pytest.mark.parametrize("group_id", ["", "abc", "999999"])
def test_switching_to_a_missing_group_is_refused(member: User, two_groups, group_id: str):
    client = Client()
    client.force_login(member)

    switch(client, group_id)

    assert fresh(member).active_group == two_groups[0]


@pytest.mark.django_db
def test_switching_needs_post_and_login(member: User, two_groups):
    client = Client()
    anonymous = switch(client, two_groups[1].pk)
    assert anonymous.status_code == 302
    assert header(anonymous, "Location").startswith(reverse("login"))

    client.force_login(member)
    assert client.get(reverse("accounts:switch_active_group")).status_code == 405


@pytest.mark.django_db
def test_superuser_has_all_permissions_without_a_group():
    superuser = UserFactory(is_superuser=True, is_staff=True)

    assert superuser.active_group is None
    assert superuser.has_perm(ADD_TOKEN)
    assert superuser.has_perm("accounts.can_generate_never_expiring_token")


@pytest.mark.django_db
def test_user_without_groups_has_no_group_permissions():
    loner = UserFactory()

    loner.ensure_valid_active_group()

    assert loner.active_group is None
    assert not loner.has_perm(ADD_TOKEN)


@pytest.mark.django_db
def test_middleware_replaces_an_active_group_the_user_left(member: User, two_groups):
    first, second = two_groups
    member.groups.remove(first)
    client = Client()
    client.force_login(member)

    client.get(reverse("health"))

    assert fresh(member).active_group == second


@pytest.mark.django_db
def test_change_active_group_refuses_foreign_group(member: User):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="not a member"):
        member.change_active_group(GroupFactory(name="Foreign"))
