"""ADIT's embedded PostgreSQL cluster (used when DATABASE_URL is unset)."""

import os
import shutil
import tempfile
from pathlib import Path
from typing import LiteralString

import psycopg
import pytest

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


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the cluster to another user")
def test_as_root_the_cluster_runs_as_an_unprivileged_user(data_dir):
    cluster = EmbeddedPostgres(data_dir)
    cluster.start()
    try:
        owner_uid = (cluster.cluster_dir / "PG_VERSION").stat().st_uid
        assert owner_uid != 0
        server_pid = int((cluster.cluster_dir / "postmaster.pid").read_text().split()[0])
        assert os.stat(f"/proc/{server_pid}").st_uid == owner_uid
    finally:
        cluster.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the cluster to another user")
def test_unreachable_data_folder_gives_a_clear_error():
    private_parent = Path(tempfile.mkdtemp(prefix="adit-private-", dir="/tmp"))  # mode 700
    try:
        with pytest.raises(EmbeddedPostgresError, match="cannot reach"):
            EmbeddedPostgres(private_parent / "data").start()
    finally:
        shutil.rmtree(private_parent, ignore_errors=True)


def test_binaries_are_found():
    assert (Path(find_bin_dir()) / "initdb").exists()
