"""PostgreSQL stops hard in the middle of a transfer: the task finishes once it is back.

The database is a private cluster of this test (`EmbeddedPostgres` in a temporary folder), so it
can be stopped with `pg_ctl stop -m immediate` (as a crash would) and started again; the test
process and the worker both point at it while the test runs. Nothing is restarted by hand: the
worker process lives through the outage (`bg_worker` waits for the database and starts a fresh
Procrastinate worker; `TaskRun` records the outcome once the database answers again).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from urllib.parse import urlparse

import pytest
from django.db import connection

from adit.core.dicom.testing.synthetic import make_large_study
from adit.core.models import DicomJob, DicomTask
from adit.core.testing import wait_until
from adit.core.testing.workers import PROJECT_DIR, start_worker, stop_worker, worker_environment
from adit.core.tests.test_crash_recovery import orthanc_instance_total
from adit.core.tests.test_transfer_engine import (
    TaskSpec,
    create_transfer_job,
    orthanc_instance_count,
    orthanc_server,
    sop_uids,
    study_uid_of,
    task_report,
    unique_id,
)
from adit.embedded_postgres import EmbeddedPostgres

JobStatus, TaskStatus = DicomJob.Status, DicomTask.Status


@contextlib.contextmanager
def django_database_at(url: str):
    """Point Django's default connection (and so the ORM and the queue) at `url` for a while."""
    parts = urlparse(url)
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(
        NAME=parts.path.lstrip("/"),
        USER=parts.username or "",
        PASSWORD=parts.password or "",
        HOST=parts.hostname or "",
        PORT=str(parts.port or ""),
    )
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)


def fresh(query):
    """Run `query` on a new connection (the old one may have died with the server)."""
    connection.close()
    return query()


@pytest.fixture
def private_cluster(tmp_path, django_db_blocker):
    cluster = EmbeddedPostgres(tmp_path / "data")
    cluster.start()
    env = {**worker_environment(), "DATABASE_URL": cluster.url()}
    subprocess.run(
        [sys.executable, str(PROJECT_DIR / "manage.py"), "migrate", "--no-input", "-v", "0"],
        env=env,
        cwd=PROJECT_DIR,
        check=True,
    )
    try:
        with django_db_blocker.unblock(), django_database_at(cluster.url()):
            yield cluster
    finally:
        cluster.stop()


def test_transfer_finishes_after_an_immediate_database_stop(
    private_cluster, orthanc_a, orthanc_b, tmp_path
):
    cluster = private_cluster
    datasets = make_large_study(400, patient_id=unique_id("PGDOWN"), seed=None, rows=32, columns=32)
    orthanc_a.upload(datasets)
    study_uid = study_uid_of(datasets)
    job = create_transfer_job(
        orthanc_server(orthanc_a, "Orthanc A"),
        orthanc_server(orthanc_b, "Orthanc B"),
        [TaskSpec(str(datasets[0].PatientID), study_uid)],
    )
    task = job.tasks.get()
    port = cluster.port()
    log_path = tmp_path / "worker.log"
    worker = start_worker("dicom", log_path=log_path)
    try:
        wait_until(
            lambda: orthanc_instance_count(orthanc_b, study_uid),
            timeout=60,
            what="the first instances to arrive at the destination",
            interval=0.05,
        )
        logged_before_stop = len(log_path.read_text())
        cluster.stop(mode="immediate")
        stopped_with = orthanc_instance_count(orthanc_b, study_uid)
        assert stopped_with < len(datasets), "the transfer ended before the database stopped"
        # The worker notices the outage (heartbeat, listener or its own writes fail, and it
        # logs about the database) and is still alive after that.
        wait_until(
            lambda: "database" in log_path.read_text()[logged_before_stop:].lower(),
            timeout=90,
            what="the worker to log that the database went away",
            interval=0.2,
        )
        assert worker.poll() is None, "the worker exited when the database went away"
        cluster.start()
        assert cluster.port() == port  # the cluster keeps its port; the worker's URL stays right

        wait_until(
            lambda: (
                fresh(lambda: type(task).objects.get(pk=task.pk).status) in DicomTask.FINAL_STATUSES
            ),
            timeout=45,
            what="the task to finish after the database came back",
            interval=0.5,
        )
        # The job's status follows its task's in a statement of its own, just after it.
        wait_until(
            lambda: fresh(lambda: type(job).objects.get(pk=job.pk).status) in job.FINAL_STATUSES,
            timeout=10,
            what="the job to follow its task",
            interval=0.2,
        )
        job.refresh_from_db()
        task.refresh_from_db()
        log = log_path.read_text()
        assert task.status == TaskStatus.SUCCESS, task_report(job) + log
        assert job.status == JobStatus.SUCCESS
        assert worker.poll() is None, log
        assert "stopped without being asked to" in log or "Database unreachable" in log, log
        # Every instance once at the destination, whether the run was redone or not.
        assert orthanc_b.study_instance_uids(study_uid) == sop_uids(datasets)
        assert orthanc_instance_total(orthanc_b, study_uid) == len(datasets)
        assert not type(task).objects.filter(status=TaskStatus.IN_PROGRESS).exists()
    finally:
        stop_worker(worker)
