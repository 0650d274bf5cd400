"""Run real Procrastinate workers from tests (as separate processes, like in production)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

from django.db import connection

PROJECT_DIR = Path(__file__).resolve().parents[3]


def test_database_url() -> str:
    """The URL of the database the tests use right now (pytest-django's test database)."""
    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{credentials}@{host}:{port}/{db['NAME']}"


def worker_environment(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker process; `overrides` set settings read from the environment
    (e.g. ``{"STALLED_JOB_SECONDS": "2"}``)."""
    return {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "DJANGO_SETTINGS_MODULE": "adit.settings.test",
        "PYTHONUNBUFFERED": "1",
        "TCP_NODELAY": "1",
        **(overrides or {}),
    }


def worker_command(*queues: str, burst: bool) -> list[str]:
    command = [sys.executable, str(PROJECT_DIR / "manage.py"), "bg_worker"]
    for queue in queues:
        command += ["-q", queue]
    if burst:
        command.append("--burst")
    return command


def run_worker_burst(
    *queues: str, timeout: float = 120, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a worker until its queues are empty; the test database must be committed to."""
    return subprocess.run(
        worker_command(*queues, burst=True),
        env=worker_environment(env),
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_worker(
    *queues: str, env: Mapping[str, str] | None = None, log_path: Path | None = None
) -> subprocess.Popen:
    """Start a long-running worker process; the caller stops (or kills) it.

    Its output goes to a pipe, or to `log_path` when given: a worker that logs a lot while
    nobody reads the pipe would block once the pipe is full.
    """
    if log_path is None:
        output = subprocess.PIPE
    else:
        output = open(log_path, "a")  # noqa: SIM115 - the child keeps it; closed below
    try:
        return subprocess.Popen(
            worker_command(*queues, burst=False),
            env=worker_environment(env),
            cwd=PROJECT_DIR,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
    finally:
        if log_path is not None:
            output.close()  # pyright: ignore[reportAttributeAccessIssue]


def stop_worker(worker: subprocess.Popen, timeout: float = 30) -> str:
    """Stop a worker started by `start_worker` (SIGTERM, then SIGKILL); returns its output."""
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)
    return worker.stdout.read() if worker.stdout else ""
