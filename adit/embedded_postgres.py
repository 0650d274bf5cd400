"""ADIT's own private PostgreSQL cluster, used when `DATABASE_URL` is not set.

The cluster lives under `<data dir>/postgres/` (default `./.adit-data/postgres/`):

    postgres/
      data/          the cluster (initdb), reused across restarts
      server.log     PostgreSQL's log
      port           the TCP port the cluster listens on (127.0.0.1 only)
      password       the password of the cluster's superuser `adit` (mode 600)

PostgreSQL binaries are taken from, in this order: `ADIT_POSTGRES_BIN_DIR`, the system's
installation (`pg_config --bindir`, `/usr/lib/postgresql/<newest>/bin`, `initdb` on PATH).
PostgreSQL refuses to run as root, so when ADIT runs as root the cluster runs as an existing
unprivileged user (the owner of the cluster folder if it is not root, else `postgres`, else
`nobody`) and only the cluster folder is handed to that user. No OS user is created and no
other folder's permissions are changed.

Ownership: whoever starts the cluster stops it. `cli serve` and `cli test` start it, pass
`DATABASE_URL` to their children and stop it on exit. A lone `manage.py` call without
`DATABASE_URL` reuses a running cluster or starts one and stops it when the process exits.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

SUPERUSER = "adit"
DATABASE = "adit"
DEFAULT_PORT = 54329


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL cluster could not be set up, started or stopped."""


@dataclass(frozen=True)
class EmbeddedPostgres:
    """One private PostgreSQL cluster under a data folder."""

    data_dir: Path

    @property
    def root(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def cluster_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @property
    def port_file(self) -> Path:
        return self.root / "port"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    # --- public API -----------------------------------------------------------------------------

    def url(self, database: str = DATABASE) -> str:
        password = quote(self.password_file.read_text().strip(), safe="")
        port = int(self.port_file.read_text().strip())
        return f"postgres://{SUPERUSER}:{password}@127.0.0.1:{port}/{database}"

    def is_running(self) -> bool:
        if not (self.cluster_dir / "PG_VERSION").exists():
            return False
        result = self._run_as_owner(
            [self._bin("pg_ctl"), "status", "-D", str(self.cluster_dir)], check=False
        )
        return result.returncode == 0

    def start(self) -> bool:
        """Start the cluster (initializing it first if needed).

        Returns:
            True if this call started the cluster, False if it was already running.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.cluster_dir / "PG_VERSION").exists():
            self._initialize()
        if self.is_running():
            return False
        port = self._choose_port()
        self.port_file.write_text(f"{port}\n")
        options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
        result = self._run_as_owner(
            [
                self._bin("pg_ctl"),
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(self.cluster_dir),
                "-l",
                str(self.log_file),
                "-o",
                options,
            ],
            check=False,
        )
        if result.returncode != 0:
            raise EmbeddedPostgresError(
                f"PostgreSQL did not start (see {self.log_file}): {result.stderr.strip()}"
            )
        self._create_database()
        return True

    def stop(self) -> None:
        if not self.is_running():
            return
        self._run_as_owner(
            [self._bin("pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(self.cluster_dir)]
        )

    # --- internals ------------------------------------------------------------------------------

    def _initialize(self) -> None:
        if self.cluster_dir.exists() and any(self.cluster_dir.iterdir()):
            raise EmbeddedPostgresError(
                f"{self.cluster_dir} exists but holds no PostgreSQL cluster; move it away."
            )
        self.password_file.write_text(secrets.token_urlsafe(24) + "\n")
        self.password_file.chmod(0o600)
        self._hand_to_owner()
        self._run_as_owner(
            [
                self._bin("initdb"),
                "-D",
                str(self.cluster_dir),
                "-U",
                SUPERUSER,
                "--pwfile",
                str(self.password_file),
                "--auth",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--locale",
                "C.UTF-8",
            ]
        )

    def _create_database(self) -> None:
        env = {**os.environ, "PGPASSWORD": self.password_file.read_text().strip()}
        port = self.port_file.read_text().strip()
        base = [self._bin("psql"), "-h", "127.0.0.1", "-p", port, "-U", SUPERUSER, "-d", "postgres"]
        exists = subprocess.run(
            [*base, "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        if exists.stdout.strip() != "1":
            subprocess.run(
                [*base, "-c", f'CREATE DATABASE "{DATABASE}"'],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )

    def _choose_port(self) -> int:
        preferred = os.environ.get("ADIT_POSTGRES_PORT")
        if preferred:
            return int(preferred)
        candidates = []
        if self.port_file.exists():
            candidates.append(int(self.port_file.read_text().strip()))
        candidates.extend(range(DEFAULT_PORT, DEFAULT_PORT + 50))
        for port in candidates:
            if _port_is_free(port):
                return port
        return _free_port()

    def _owner(self) -> pwd.struct_passwd | None:
        """The unprivileged user the cluster runs as when we are root (None: run as ourselves)."""
        if os.geteuid() != 0:
            return None
        if self.root.exists():
            owner = pwd.getpwuid(self.root.stat().st_uid)
            if owner.pw_uid != 0:
                return owner
        for name in (os.environ.get("ADIT_POSTGRES_OS_USER", ""), "postgres", "nobody"):
            if not name:
                continue
            try:
                return pwd.getpwnam(name)
            except KeyError:
                continue
        raise EmbeddedPostgresError(
            "Running as root, but no unprivileged user (postgres or nobody) exists to run "
            "PostgreSQL; set ADIT_POSTGRES_OS_USER or DATABASE_URL."
        )

    def _hand_to_owner(self) -> None:
        owner = self._owner()
        if owner is None:
            return
        for path in [self.root, *self.root.rglob("*")]:
            os.chown(path, owner.pw_uid, owner.pw_gid)
        probe = subprocess.run(
            ["runuser", "-u", owner.pw_name, "--", "test", "-w", str(self.root)],
            capture_output=True,
        )
        if probe.returncode != 0:
            raise EmbeddedPostgresError(
                f"User {owner.pw_name} cannot reach {self.root}: a parent folder is closed to "
                "other users. Choose another ADIT_DATA_DIR or set DATABASE_URL."
            )

    def _run_as_owner(self, command: list[str], check: bool = True):
        program = Path(command[0]).name
        owner = self._owner()
        if owner is not None:
            command = ["runuser", "-u", owner.pw_name, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, cwd=self.root)
        if check and result.returncode != 0:
            details = result.stderr.strip() or result.stdout.strip()
            raise EmbeddedPostgresError(f"{program} failed: {details}")
        return result

    @staticmethod
    def _bin(name: str) -> str:
        return str(Path(find_bin_dir()) / name)


def find_bin_dir() -> str:
    """The folder holding PostgreSQL's server binaries (initdb, pg_ctl, psql, pg_dump)."""
    configured = os.environ.get("ADIT_POSTGRES_BIN_DIR")
    if configured:
        return configured
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if bindir.returncode == 0 and Path(bindir.stdout.strip(), "initdb").exists():
            return bindir.stdout.strip()
    debian = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parent.parent.name),
    )
    if debian:
        return str(Path(debian[-1]).parent)
    initdb = shutil.which("initdb")
    if initdb:
        return str(Path(initdb).resolve().parent)
    raise EmbeddedPostgresError(
        "No PostgreSQL server binaries found. Install them (Debian: apt install postgresql), "
        "point ADIT_POSTGRES_BIN_DIR at them, or set DATABASE_URL to an existing server."
    )


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ensure_running_for_process(data_dir: Path) -> str:
    """Start the cluster if needed; stop it at exit if this process started it. Returns its URL."""
    cluster = EmbeddedPostgres(data_dir)
    if cluster.start():
        atexit.register(cluster.stop)
    return cluster.url()
