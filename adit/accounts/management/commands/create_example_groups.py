"""Create example groups and put the users in them (development only)."""

import random
from typing import Any

from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser

from adit.accounts.models import User

GROUP_NAMES = [
    "Thoraxklinik",
    "Allgemeinradiologie",
    "Neuroradiologie",
    "Kinderradiologie",
    "Nuklearmedizin",
    "Kardiologie",
]


class Command(BaseCommand):
    help = (
        "Create example groups; every non-superuser joins one or two of them, every superuser "
        "joins all. Each user without an active group gets one."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--count",
            type=int,
            default=3,
            help=f"How many groups (default 3, at most {len(GROUP_NAMES)}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        count: int = options["count"]
        if not 1 <= count <= len(GROUP_NAMES):
            raise CommandError(f"--count must be between 1 and {len(GROUP_NAMES)}, not {count}.")

        groups = [Group.objects.get_or_create(name=name)[0] for name in GROUP_NAMES[:count]]
        rng = random.Random()
        for user in User.objects.filter(is_superuser=True):
            user.groups.add(*groups)
            user.ensure_valid_active_group()
        for user in User.objects.filter(is_superuser=False):
            if user.groups.exists():
                continue
            user.groups.add(*rng.sample(groups, k=min(len(groups), rng.randint(1, 2))))
            user.ensure_valid_active_group()
        self.stdout.write(f"Example groups: {', '.join(group.name for group in groups)}.")
