"""factory-boy factories for users, groups and API tokens (tests only)."""

from typing import Any

from django.contrib.auth.models import Group
from factory.declarations import LazyAttribute, LazyFunction, Sequence, SubFactory
from factory.django import DjangoModelFactory
from factory.faker import Faker
from factory.helpers import post_generation

from .models import Token, User, generate_token, hash_token

DEFAULT_PASSWORD = "correct-horse-battery-staple"


class GroupFactory(DjangoModelFactory):
    class Meta:
        model = Group
        django_get_or_create = ("name",)

    name = Sequence(lambda n: f"Group {n}")


class UserFactory(DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = Sequence(lambda n: f"user{n}")
    email = LazyAttribute(lambda user: f"{user.username}@example.org")
    first_name = Faker("first_name")
    last_name = Faker("last_name")
    department = "Radiology"
    phone_number = "+49 6221 123456"

    @post_generation
    def password(self, create: bool, extracted: str | None, **kwargs: Any) -> None:
        self.set_password(extracted or DEFAULT_PASSWORD)  # type: ignore[attr-defined]
        if create:
            self.save(update_fields=["password"])  # type: ignore[attr-defined]

    @post_generation
    def groups(self, create: bool, extracted: list[Group] | None, **kwargs: Any) -> None:
        """`UserFactory(groups=[a, b])` joins both; the first one becomes active."""
        if create and extracted:
            for group in extracted:
                self.join_group(group)  # type: ignore[attr-defined]


class TokenFactory(DjangoModelFactory):
    """A token; pass `clear_token=...` to know its clear text (it is not stored)."""

    class Meta:
        model = Token

    class Params:
        clear_token = LazyFunction(generate_token)

    owner = SubFactory(UserFactory)
    token_hashed = LazyAttribute(lambda token: hash_token(token.clear_token))
    fraction = LazyAttribute(lambda token: token.clear_token[:4])
    description = "Test token"
    expires = None
