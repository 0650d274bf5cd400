from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from adit.accounts.factories import GroupFactory, UserFactory
from adit.accounts.models import User


def grant(group, permission: str) -> None:
    """Give `group` the permission "app_label.codename"."""
    app_label, codename = permission.split(".")
    group.permissions.add(
        Permission.objects.get(content_type__app_label=app_label, codename=codename)
    )


def header(response: Any, name: str) -> str:
    """A response header (the test client's responses are loosely typed)."""
    return response.headers[name]


@pytest.fixture
def user(db) -> User:
    return UserFactory(groups=[GroupFactory(name="Radiology")])


@pytest.fixture
def user_client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client
