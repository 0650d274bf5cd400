"""Create the superuser described by the SUPERUSER_* settings (used by `cli serve`)."""

import re
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from adit.accounts.models import Token, User, hash_token

DEFAULT_GROUP_NAME = "Default"


class Command(BaseCommand):
    help = (
        "Create the superuser from SUPERUSER_USERNAME, SUPERUSER_EMAIL and SUPERUSER_PASSWORD "
        "(a random password when empty) and print its login. An existing user is left alone "
        "unless --force is given. SUPERUSER_AUTH_TOKEN, when set, is stored as a "
        "never-expiring API token of the superuser."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--force",
            action="store_true",
            help="Reset email, password and superuser status of an existing user.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        username: str = settings.SUPERUSER_USERNAME.strip()
        if not username:
            raise CommandError("SUPERUSER_USERNAME is empty; set it to the superuser's name.")
        auth_token: str = settings.SUPERUSER_AUTH_TOKEN.strip()
        if auth_token and not re.fullmatch(r"\S{20,}", auth_token):
            raise CommandError(
                "SUPERUSER_AUTH_TOKEN must be at least 20 characters without spaces "
                "(e.g. 40 hex characters from `python -c 'import secrets; "
                "print(secrets.token_hex(20))'`)."
            )

        with transaction.atomic():  # pyright: ignore[reportGeneralTypeIssues]
            user = User.objects.filter(username=username).first()
            created = user is None
            if user is not None and not options["force"]:
                if options["verbosity"] > 1:
                    self.stderr.write(f'The user "{username}" exists already; nothing changed.')
                if auth_token:
                    self._ensure_token(user, auth_token)
                return

            password = settings.SUPERUSER_PASSWORD or secrets.token_urlsafe(12)
            if user is None:
                user = User(username=username)
            user.email = settings.SUPERUSER_EMAIL
            user.is_staff = True
            user.is_superuser = True
            user.is_active = True
            user.set_password(password)
            user.save()

            default_group, _ = Group.objects.get_or_create(name=DEFAULT_GROUP_NAME)
            user.join_group(default_group, activate=user.active_group_id is None)
            if auth_token:
                self._ensure_token(user, auth_token)

        # `cli serve` shows this output to whoever started ADIT; only print it when a login
        # was made (or reset on request), so restarts stay quiet.
        action = "Created" if created else "Reset"
        self.stdout.write(
            f"{action} the superuser. Log in with\n  username: {username}\n  password: {password}"
        )

    def _ensure_token(self, user: User, auth_token: str) -> None:
        existing = Token.objects.filter(token_hashed=hash_token(auth_token)).first()
        if existing is not None:
            if existing.owner_id != user.pk:  # type: ignore[attr-defined]
                raise CommandError(
                    f"SUPERUSER_AUTH_TOKEN is already a token of the user {existing.owner}; "
                    "choose another token."
                )
            return
        Token.objects.create_token(
            owner=user,
            description="Superuser token from SUPERUSER_AUTH_TOKEN",
            expires=None,
            clear_token=auth_token,
        )
