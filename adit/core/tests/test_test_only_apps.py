"""Test-only apps stay out of production, and moving them did not touch existing databases.

The example app (`adit.core.tests.example_app`, app label `example_app`) is installed only by
`adit.settings.test`. It used to live at `adit/example_app`; its label, models and migrations
are unchanged, so a database created before the move needs no migration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.apps import apps
from django.db import connection
from django.db.migrations.autodetector import MigrationAutodetector
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.questioner import NonInteractiveMigrationQuestioner
from django.db.migrations.state import ProjectState

PROJECT_DIR = Path(__file__).resolve().parents[3]
# The rows of django_migrations in a test database migrated at main 630a503 (before the move).
PREVIOUS_MAIN_MIGRATIONS = Path(__file__).with_name("data") / "migrations_of_main_630a503.txt"


def installed_apps_of(settings_module: str) -> list[str]:
    """INSTALLED_APPS as a fresh interpreter loads them from `settings_module`."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": settings_module,
        "DJANGO_SECRET_KEY": "only-for-this-test",
        "TOKEN_AUTHENTICATION_SALT": "only-for-this-test",
        "PSEUDONYM_SALT": "only-for-this-test",
        "DATABASE_URL": os.environ.get("DATABASE_URL") or "postgres://nobody@127.0.0.1/none",
    }
    code = (
        "import json; from django.conf import settings; "
        "print(json.dumps(list(settings.INSTALLED_APPS)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def is_test_only(app: str) -> bool:
    parts = app.split(".")
    return "tests" in parts or "testing" in parts or parts[-1] == "example_app"


@pytest.mark.parametrize(
    "settings_module", ["adit.settings.production", "adit.settings.development"]
)
def test_production_and_development_install_no_test_only_app(settings_module):
    installed = installed_apps_of(settings_module)
    assert "adit.core" in installed  # the settings were really loaded
    assert [app for app in installed if is_test_only(app)] == []


def test_the_test_settings_install_the_example_app_from_the_tests():
    installed = installed_apps_of("adit.settings.test")
    assert [app for app in installed if is_test_only(app)] == ["adit.core.tests.example_app"]
    assert apps.get_app_config("example_app").name == "adit.core.tests.example_app"


def previous_main_migrations() -> set[tuple[str, str]]:
    rows = PREVIOUS_MAIN_MIGRATIONS.read_text().split("\n")
    return {tuple(row.split(" ", 1)) for row in rows if row}  # type: ignore[misc]


def test_every_migration_a_database_of_the_previous_main_recorded_still_exists():
    graph = MigrationLoader(None, ignore_no_migrations=True).graph
    previous = previous_main_migrations()
    assert ("example_app", "0002_deidentification_options") in previous
    assert sorted(previous - set(graph.nodes)) == []


@pytest.mark.django_db
def test_a_database_at_the_previous_main_needs_only_forward_migrations():
    """What `migrate` would do to a database of the previous main: only apply what is new."""
    executor = MigrationExecutor(connection)
    graph = executor.loader.graph
    previous = previous_main_migrations()
    executor.loader.applied_migrations = {node: graph.nodes[node] for node in previous}
    plan = executor.migration_plan(graph.leaf_nodes())
    assert [migration for migration, backwards in plan if backwards] == []
    assert {(m.app_label, m.name) for m, _ in plan}.isdisjoint(previous)
    # The models of this code need no migration that is not in the graph.
    changes = MigrationAutodetector(
        executor.loader.project_state(),
        ProjectState.from_apps(apps),
        NonInteractiveMigrationQuestioner(specified_apps=None, dry_run=True),
    ).changes(graph=graph)
    assert changes == {}
    from adit.core.tests.example_app.models import ExampleTransferJob

    assert ExampleTransferJob.objects.count() == 0  # its table is there and readable
