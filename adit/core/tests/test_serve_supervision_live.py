"""`cli serve` as a real process: every child killed with SIGKILL is back within 30 s, and a
transfer started afterwards succeeds.

The children are the web server, both workers, the receiver and the embedded PostgreSQL
cluster (started by `pg_ctl`, detached, but watched the same way). All five are killed at once,
the worst case: the workers and the receiver then also lose their database while they start.
SIGTERM still stops everything. `serve` runs with the test settings here, so the test's own
job model (example_app) exists in its database; the test process points its ORM at that
database to create the transfer.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from adit.core.dicom.testing.synthetic import make_study
from adit.core.models import DicomJob
from adit.core.testing import wait_until
from adit.core.tests.test_database_outage_live import django_database_at, fresh
from adit.core.tests.test_transfer_engine import (
    TaskSpec,
    create_transfer_job,
    orthanc_server,
    sop_uids,
    study_uid_of,
    task_report,
    unique_id,
)
from adit.embedded_postgres import EmbeddedPostgres

PROJECT_DIR = Path(__file__).resolve().parents[3]
CHILD_MARKERS = {
    "web": "daphne",
    "worker:default": "-q default",
    "worker:dicom": "-q dicom",
    "receiver": "manage.py receiver",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def children_by_name(parent: int) -> dict[str, int]:
    found: dict[str, int] = {}
    for pid in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        if not alive(int(pid)):
            continue
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        for name, marker in CHILD_MARKERS.items():
            if marker in cmdline:
                found[name] = int(pid)
    return found


def postmaster_pid(data_dir: Path) -> int | None:
    pid_file = data_dir / "postgres" / "data" / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None
    return pid if alive(pid) else None


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health/", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class Output:
    """Collects the lines of a process's output on a thread."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, fragment: str, timeout: float) -> None:
        if not wait_until(lambda: fragment in self.text, timeout, interval=0.2, raising=False):
            pytest.fail(f"no {fragment!r} in {timeout} s; output:\n{self.text[-6000:]}")


def test_each_child_killed_is_back_within_30_s_and_a_transfer_then_succeeds(
    tmp_path, django_db_blocker, orthanc_a, orthanc_b
):
    data_dir = tmp_path / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DATABASE_URL": "",  # the embedded cluster (an empty value keeps .env's from applying)
        "ADIT_DATA_DIR": str(data_dir),
        "DJANGO_SETTINGS_MODULE": "adit.settings.test",
        "STORE_SCP_PORT": str(free_port()),
        "FILE_TRANSMIT_PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
    }
    serve = subprocess.Popen(
        [sys.executable, str(PROJECT_DIR / "cli.py"), "serve", "--port", str(port)],
        env=env,
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = Output(serve)
    try:
        output.wait_for("ADIT is running at", timeout=120)
        before = children_by_name(serve.pid)
        assert set(before) == set(CHILD_MARKERS), output.text
        postgres_before = postmaster_pid(data_dir)
        assert postgres_before is not None
        postgres_port = (data_dir / "postgres" / "port").read_text().strip()

        for pid in [*before.values(), postgres_before]:
            os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        output_at_kill = len(output.text)

        def all_back() -> bool:
            now = children_by_name(serve.pid)
            postgres_now = postmaster_pid(data_dir)
            return (
                set(now) == set(CHILD_MARKERS)
                and all(now[name] != before[name] for name in now)
                and postgres_now not in (None, postgres_before)
                and healthy(url)
            )

        def back() -> bool:
            assert serve.poll() is None, output.text
            return all_back()

        assert wait_until(back, killed_at + 30 - time.monotonic(), interval=0.5, raising=False), (
            f"not everything was back 30 s after the kill:\n{output.text[-6000:]}"
        )

        # The supervisor says so right after each start returns, which may be a moment after
        # the health check already saw everything back: its lines are waited for.
        for name in CHILD_MARKERS:
            output.wait_for(f"[supervisor] {name} exited (killed by signal SIGKILL)", timeout=5)
            output.wait_for(f"[supervisor] {name} restarted", timeout=5)
        output.wait_for(
            f"[supervisor] embedded PostgreSQL restarted on 127.0.0.1:{postgres_port}", timeout=5
        )
        # The workers are working again, not just alive: each started a fresh worker.
        assert wait_until(
            lambda: all(
                f"Worker for queue(s) {queue} started" in output.text[output_at_kill:]
                for queue in ("default", "dicom")
            ),
            killed_at + 30 - time.monotonic(),
            interval=0.5,
            raising=False,
        ), output.text[-6000:]
        recovered_after = time.monotonic() - killed_at

        # A transfer started now goes through the restarted worker.
        datasets = make_study(unique_id(), series=(("CT", 3),))
        orthanc_a.upload(datasets)
        study_uid = study_uid_of(datasets)
        with django_db_blocker.unblock(), django_database_at(EmbeddedPostgres(data_dir).url()):
            job = create_transfer_job(
                orthanc_server(orthanc_a, "Orthanc A"),
                orthanc_server(orthanc_b, "Orthanc B"),
                [TaskSpec(str(datasets[0].PatientID), study_uid)],
            )
            wait_until(
                lambda: (
                    fresh(lambda: type(job).objects.get(pk=job.pk).status)
                    in DicomJob.FINAL_STATUSES
                ),
                timeout=30,
                what="the transfer started after the kills to finish",
                interval=0.5,
            )
            job.refresh_from_db()
            assert job.status == DicomJob.Status.SUCCESS, task_report(job) + output.text[-4000:]
        assert orthanc_b.study_instance_uids(study_uid) == sop_uids(datasets)
        print(f"everything was back {recovered_after:.1f} s after the kill")
    finally:
        if serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(timeout=60)
            except subprocess.TimeoutExpired:
                serve.kill()
                serve.wait()
    assert serve.returncode == 0, output.text[-6000:]
    assert postmaster_pid(data_dir) is None, "SIGTERM left PostgreSQL running"


def test_a_child_that_keeps_exiting_is_restarted_with_a_growing_capped_delay(capsys, monkeypatch):
    import cli

    monkeypatch.setattr(cli.ChildProcesses, "FIRST_RESTART_DELAY", 1.0)
    monkeypatch.setattr(cli.ChildProcesses, "MAX_RESTART_DELAY", 2.0)
    children = cli.ChildProcesses()
    children.start("flaky", [sys.executable, "-c", "import sys; sys.exit(3)"], dict(os.environ))
    deadline = time.monotonic() + 6.5
    while time.monotonic() < deadline:
        children.supervise()
        time.sleep(0.05)
    children.stop(timeout=5)

    lines = [line for line in capsys.readouterr().out.splitlines() if "[supervisor]" in line]
    exits = [line for line in lines if "exited" in line]
    # 1 s, then doubled, then held at the cap.
    assert exits[:3] == [
        "[supervisor] flaky exited (exit code 3); restarting it in 1 s",
        "[supervisor] flaky exited (exit code 3); restarting it in 2 s",
        "[supervisor] flaky exited (exit code 3); restarting it in 2 s",
    ], lines
    assert lines.count("[supervisor] flaky restarted") >= 2, lines
