"""Example data for trying ADIT out: demo PACS nodes, groups, users and a Downloads folder."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from adit.core.demo import DemoError, known_demo_pacs, register_demo_nodes


class Command(BaseCommand):
    help = (
        "Register the demo PACS that answer (see `cli demo`; addresses from "
        "ADIT_DATA_DIR/demo-pacs/running.json, else the default Orthanc ports 7501/7502 and "
        "8501/8502) as nodes, create example groups and users, and a 'Downloads' folder node. "
        "The group 'Default' and the example groups may use the servers as source and "
        "destination. Safe to run again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--users", type=int, default=10, help="Example users to create (0 = none)."
        )
        parser.add_argument(
            "--groups", type=int, default=3, help="Example groups to create (0 = none)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        users: int = options["users"]
        groups: int = options["groups"]
        if users < 0 or groups < 0:
            raise CommandError(f"--users and --groups must not be negative ({users}, {groups}).")
        if users:
            call_command("create_example_users", count=users, stdout=self.stdout)
        example_groups: list[Group] = []
        if groups:
            call_command("create_example_groups", count=groups, stdout=self.stdout)
            from adit.accounts.management.commands.create_example_groups import GROUP_NAMES

            example_groups = list(Group.objects.filter(name__in=GROUP_NAMES[:groups]))

        try:
            candidates = known_demo_pacs(settings.ADIT_DATA_DIR)
        except DemoError as error:
            raise CommandError(str(error)) from error
        answering = []
        for pacs in candidates:
            if pacs.answers():
                answering.append(pacs)
            else:
                where = pacs.rest_url or f"{pacs.host}:{pacs.dicom_port}"
                self.stdout.write(f"{pacs.name} does not answer at {where}; not registered.")
        nodes = register_demo_nodes(answering, groups=example_groups)
        self.stdout.write("Registered nodes: " + ", ".join(node.name for node in nodes) + ".")
