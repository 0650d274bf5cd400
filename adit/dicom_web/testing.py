"""Test helpers for the API: a live ADIT (daphne in a subprocess) and API users.

The server process uses the test database, so tests that talk to it need
`@pytest.mark.django_db(transaction=True)` (their data must be committed to be seen).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
import requests
from django.contrib.auth.models import Group, Permission

from adit.accounts.factories import GroupFactory, TokenFactory, UserFactory
from adit.accounts.models import User, generate_token
from adit.core.dicom.testing.peers import LOOPBACK, free_port
from adit.core.models import DicomNodeGroupAccess, DicomServer
from adit.core.testing import wait_until
from adit.core.testing.workers import PROJECT_DIR, worker_environment

T = TypeVar("T")
DICOM_WEB_PERMISSIONS = ("can_query", "can_retrieve", "can_store")


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def start_live_server(
    log_dir: Path, timeout: float = 120, extra_env: dict[str, str] | None = None
) -> LiveServer:
    """Start daphne serving ADIT on a free loopback port against the test database."""
    port = free_port()
    log_path = log_dir / "daphne.log"
    env = worker_environment()
    env.setdefault("PSEUDONYM_SALT", "api-tests-pseudonym-salt")
    env.update(extra_env or {})
    log = open(log_path, "ab")  # noqa: SIM115 — the child process writes to it
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", LOOPBACK, "-p", str(port), "adit.asgi:application"],
        env=env,
        cwd=PROJECT_DIR,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    server = LiveServer(f"http://{LOOPBACK}:{port}", process, log_path)

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(
                f"daphne exited with code {process.returncode}:\n{server.log_tail()}"
            )
        try:
            requests.get(f"{server.url}/health/", timeout=1)
        except requests.RequestException:
            return False
        return True

    if wait_until(answers, timeout, interval=0.2, raising=False):
        return server
    stop_live_server(server)
    raise RuntimeError(f"daphne did not answer within {timeout} s:\n{server.log_tail()}")


def stop_live_server(server: LiveServer) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=5)


@pytest.fixture(scope="session")
def live_adit(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[LiveServer]:
    """ADIT served by daphne for the whole test session (on the test database)."""
    with django_db_blocker.unblock():
        server = start_live_server(tmp_path_factory.mktemp("daphne"))
    try:
        yield server
    finally:
        stop_live_server(server)


@dataclass
class ApiUser:
    user: User
    group: Group
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}


def make_api_user(
    permissions: tuple[str, ...] = DICOM_WEB_PERMISSIONS, app_label: str = "dicom_web", **kwargs
) -> ApiUser:
    """A user whose active group has the given permissions, with a token."""
    group = GroupFactory()
    for codename in permissions:
        label, _, name = codename.rpartition(".")
        group.permissions.add(
            Permission.objects.get(codename=name, content_type__app_label=label or app_label)
        )
    user = UserFactory(groups=[group], **kwargs)
    clear_token = generate_token()
    TokenFactory(owner=user, clear_token=clear_token)
    return ApiUser(user, group, clear_token)


def grant_access(group: Group, server: DicomServer, source=True, destination=True) -> None:
    DicomNodeGroupAccess.objects.update_or_create(
        node=server, group=group, defaults={"source": source, "destination": destination}
    )


def server_from_config(config, name: str, ae_title: str) -> DicomServer:
    """A DicomServer row for a `ServerConfig` (as the peers' `server_config()` give them)."""
    values = {k: v for k, v in vars(config).items() if k not in ("name", "ae_title")}
    values["port"] = values["port"] or None
    return DicomServer.objects.create(name=name, ae_title=ae_title, **values)


def peak_rss_while(pid: int, action: Callable[[], T]) -> tuple[int, T]:
    """Run `action()` while sampling the resident memory of process `pid`; (peak bytes, result)."""
    import threading

    import psutil

    process = psutil.Process(pid)
    peak = process.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = action()
    finally:
        done.set()
        sampler.join()
    return peak, result


__all__ = [
    "ApiUser",
    "LiveServer",
    "grant_access",
    "live_adit",
    "make_api_user",
    "peak_rss_while",
    "server_from_config",
    "start_live_server",
    "stop_live_server",
]
