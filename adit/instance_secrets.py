"""Secrets of one ADIT installation, generated at its first start when the environment has none.

`cli serve` and `cli demo` run with development settings on a developer's or evaluator's
machine. A default secret written in the source is public: with it anyone can forge session
cookies, recompute the hashes of API tokens, re-derive pseudonyms, and (because the receiver's
file-transmit key was derived from the secret key) subscribe to the images the receiver gets.
So development settings take each secret from the environment when it is set and otherwise from
`<ADIT_DATA_DIR>/secrets.env`, which is created with random values (mode 600) at the first start
and read again on every later start, so sessions, API tokens and pseudonyms stay valid across
restarts. Production settings never come here: they require the secrets in the environment.

The web server, the workers and the receiver start side by side and all read the file; it is
filled under an exclusive lock and replaced atomically, so they agree on one set of values. A
secret that is added to `NAMES` later is appended to an existing file without touching the others.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

NAMES = (
    "DJANGO_SECRET_KEY",
    "TOKEN_AUTHENTICATION_SALT",
    "PSEUDONYM_SALT",
    "FILE_TRANSMIT_SECRET",
)
FILE_NAME = "secrets.env"
_HEADER = (
    "# Secrets of this ADIT installation, generated at its first start (development settings).\n"
    "# Keep this file private. Setting a variable in the environment or .env overrides it here.\n"
)


def secrets_file(data_dir: Path) -> Path:
    return Path(data_dir) / FILE_NAME


def instance_secrets(data_dir: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every secret in `NAMES`: from `environ` when set there, else from the data folder's file.

    Secrets missing from both are generated and stored (the file and its folder are created when
    needed). Nothing is written when the environment sets them all.

    Args:
        data_dir: ADIT's data folder (`ADIT_DATA_DIR`).
        environ: where set secrets come from; the process environment by default.

    Returns:
        A mapping of each name in `NAMES` to its value.
    """
    environ = os.environ if environ is None else environ
    values = {name: environ[name] for name in NAMES if environ.get(name)}
    missing = [name for name in NAMES if name not in values]
    if missing:
        stored = _stored_secrets(Path(data_dir), missing)
        values.update({name: stored[name] for name in missing})
    return values


def _stored_secrets(data_dir: Path, needed: list[str]) -> dict[str, str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = secrets_file(data_dir)
    lock_fd = os.open(data_dir / f"{FILE_NAME}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        stored = _read(path)
        if path.exists() and path.stat().st_mode & 0o077:
            path.chmod(0o600)
        added = {name: secrets.token_urlsafe(48) for name in needed if not stored.get(name)}
        if added:
            stored.update(added)
            _write(path, stored)
        return stored
    finally:
        os.close(lock_fd)  # releases the lock


def _read(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, value = line.split("=", 1)
        values[name.strip()] = value.strip()
    return values


def _write(path: Path, values: dict[str, str]) -> None:
    """Write a new file with mode 600 from the start, then put it in place atomically."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a leftover file
        text = _HEADER + "".join(f"{name}={value}\n" for name, value in values.items())
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
