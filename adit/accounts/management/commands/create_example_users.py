"""Create example users for trying ADIT out (development only)."""

import random
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from adit.accounts.models import User

FIRST_NAMES = [
    "Anna", "Ben", "Clara", "David", "Emma", "Felix", "Greta", "Hannah", "Jonas", "Lena",
    "Lukas", "Maria", "Noah", "Paul", "Sophie", "Tim", "Julia", "Max", "Mia", "Leon",
]  # fmt: skip
LAST_NAMES = [
    "Bauer", "Becker", "Fischer", "Hoffmann", "Klein", "Koch", "Meyer", "Müller", "Richter",
    "Schäfer", "Schmidt", "Schneider", "Schulz", "Wagner", "Weber", "Wolf", "Zimmermann",
]  # fmt: skip
DEPARTMENTS = ["Radiology", "Neuroradiology", "Cardiology", "Oncology", "Research"]


class Command(BaseCommand):
    help = (
        "Create example users user1, user2, ... with the same password. Skipped when "
        "non-superusers exist already."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=int, default=10, help="How many users (default 10).")
        parser.add_argument(
            "--password", default="userpass", help='Password of every user (default "userpass").'
        )

    def handle(self, *args: Any, **options: Any) -> None:
        count: int = options["count"]
        if count < 1:
            raise CommandError(f"--count must be at least 1, not {count}.")
        if User.objects.filter(is_superuser=False).exists():
            self.stdout.write("Non-superusers exist already; no example users created.")
            return

        rng = random.Random()
        existing = set(User.objects.values_list("username", flat=True))
        created: list[str] = []
        number = 0
        while len(created) < count:
            number += 1
            username = f"user{number}"
            if username in existing:
                continue
            first_name, last_name = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            user = User(
                username=username,
                first_name=first_name,
                last_name=last_name,
                email=f"{username}@example.org",
                department=rng.choice(DEPARTMENTS),
                phone_number=f"+49 6221 {rng.randint(100000, 999999)}",
            )
            user.set_password(options["password"])
            user.save()
            created.append(username)
        self.stdout.write(
            f"Created {len(created)} example users ({created[0]} … {created[-1]}) "
            f'with the password "{options["password"]}".'
        )
