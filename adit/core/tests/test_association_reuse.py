"""Consecutive tasks of a dicom worker reuse its associations, within `max_associations`.

Real `manage.py bg_worker` processes transfer small studies between the two session Orthancs;
TCP proxies in front of both count the connections (one per association) and how many were
open at once. The parked slots themselves are checked against a second PostgreSQL session.
"""

from __future__ import annotations

import threading

import psycopg
import pytest

from adit.core import association_limits
from adit.core.association_limits import LOCK_NAMESPACE, association_slot, held_slots
from adit.core.dicom.testing.synthetic import make_study
from adit.core.models import DicomJob
from adit.core.testing import wait_until
from adit.core.testing import workers as worker_processes
from adit.core.testing.proxy import CountingProxy
from adit.core.testing.workers import run_worker_burst, start_worker, stop_worker
from adit.core.tests.test_transfer_engine import (
    TaskSpec,
    create_transfer_job,
    job_status,
    orthanc_server,
    sop_uids,
    study_uid_of,
    task_report,
    unique_id,
)

pytestmark = pytest.mark.django_db(transaction=True)

JobStatus = DicomJob.Status

DIMSE_ONLY = {
    "dicomweb_root_url": "",
    "dicomweb_qido_support": False,
    "dicomweb_wado_support": False,
    "dicomweb_stow_support": False,
}


def small_studies(orthanc, count: int) -> list[list]:
    studies = [make_study(unique_id("REUSE"), series=(("CR", 2),)) for _ in range(count)]
    orthanc.upload([ds for study in studies for ds in study])
    return studies


def specs_of(studies) -> list[TaskSpec]:
    return [TaskSpec(str(study[0].PatientID), study_uid_of(study)) for study in studies]


def run_job(source, destination, studies, orthanc_b, links, idle_seconds: str) -> list[int]:
    """Runs a burst worker over one job of the studies; returns how many connections each of
    `links` (proxies) saw opened meanwhile, after checking that every study arrived."""
    before = [link.total for link in links]
    job = create_transfer_job(source, destination, specs_of(studies))
    result = run_worker_burst(
        "dicom", timeout=180, env={"DICOM_ASSOCIATION_IDLE_SECONDS": idle_seconds}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCESS, task_report(job)
    for study in studies:
        assert orthanc_b.study_instance_uids(study_uid_of(study)) == sop_uids(study)
    # The worker has exited: it released what it kept.
    wait_until(
        lambda: all(link.open_now == 0 for link in links),
        10,
        "every association to be closed after the worker stopped",
    )
    return [link.total - count for link, count in zip(links, before, strict=True)]


def test_consecutive_tasks_of_a_worker_share_its_associations(orthanc_a, orthanc_b):
    studies = small_studies(orthanc_a, 4)
    with (
        CountingProxy(orthanc_a.dicom_port) as source_link,
        CountingProxy(orthanc_b.dicom_port) as destination_link,
    ):
        links = [source_link, destination_link]
        source = orthanc_server(orthanc_a, "A", port=source_link.port, **DIMSE_ONLY)
        destination = orthanc_server(orthanc_b, "B", port=destination_link.port, **DIMSE_ONLY)
        to_source, to_destination = run_job(
            source, destination, studies, orthanc_b, links, idle_seconds="30"
        )
        # One task opens a C-FIND and a C-GET association at the source and two C-STORE ones
        # at the destination (the check afterwards runs on one of them); the next three tasks
        # open none (without reuse: four at the source and three at B per task).
        assert to_source <= 3, f"{to_source} associations to the source"
        assert to_destination <= 3, f"{to_destination} associations to B"

        for study in studies:
            orthanc_b.delete_study(study_uid_of(study))
        to_source, to_destination = run_job(
            source, destination, studies, orthanc_b, links, idle_seconds="0"
        )
        assert to_source >= 3 * len(studies)
        assert to_destination >= 2 * len(studies)


def test_reused_associations_stay_within_max_associations_of_two_workers(
    orthanc_a, orthanc_b, tmp_path
):
    """Two workers, source and destination each allowing one association: an association a
    worker keeps idle keeps its slot, so the other worker waits instead of opening a second."""
    studies = small_studies(orthanc_a, 6)
    with (
        CountingProxy(orthanc_a.dicom_port) as source_link,
        CountingProxy(orthanc_b.dicom_port) as destination_link,
    ):
        source = orthanc_server(
            orthanc_a, f"A {unique_id()}", port=source_link.port, max_associations=1, **DIMSE_ONLY
        )
        destination = orthanc_server(
            orthanc_b,
            f"B {unique_id()}",
            port=destination_link.port,
            max_associations=1,
            **DIMSE_ONLY,
        )
        job = create_transfer_job(source, destination, specs_of(studies))
        env = {"DICOM_ASSOCIATION_IDLE_SECONDS": "1"}
        workers = [
            start_worker("dicom", env=env, log_path=tmp_path / f"worker{n}.log") for n in (1, 2)
        ]
        try:
            wait_until(lambda: job_status(job) in DicomJob.FINAL_STATUSES, 180, "the job to finish")
        finally:
            for worker in workers:
                stop_worker(worker)
        job.refresh_from_db()
        assert job.status == JobStatus.SUCCESS, task_report(job)
        for study in studies:
            assert orthanc_b.study_instance_uids(study_uid_of(study)) == sop_uids(study)
        assert source_link.most_at_once() == 1
        assert destination_link.most_at_once() == 1
        assert source_link.total < 4 * len(studies)  # associations were reused


def test_a_dead_idle_association_is_replaced_without_failing_the_task(
    orthanc_a, orthanc_b, tmp_path
):
    """The destination drops every connection between two tasks (as a PACS that closes idle
    associations, or a restarted one): the worker's next task opens new ones and succeeds."""
    first, second = small_studies(orthanc_a, 2)
    source = orthanc_server(orthanc_a, f"A {unique_id()}", **DIMSE_ONLY)
    with CountingProxy(orthanc_b.dicom_port) as destination_link:
        destination = orthanc_server(
            orthanc_b, f"B {unique_id()}", port=destination_link.port, **DIMSE_ONLY
        )
        worker = start_worker(
            "dicom",
            env={"DICOM_ASSOCIATION_IDLE_SECONDS": "60"},
            log_path=tmp_path / "worker.log",
        )
        try:
            job = create_transfer_job(source, destination, specs_of([first]))
            wait_until(lambda: job_status(job) in DicomJob.FINAL_STATUSES, 60, "the first job")
            assert job_status(job) == JobStatus.SUCCESS, task_report(job)
            kept = destination_link.open_now
            assert kept >= 1, "no association was kept for the next task"
            opened_before = destination_link.total

            destination_link.drop_connections()
            next_job = create_transfer_job(source, destination, specs_of([second]))
            wait_until(
                lambda: job_status(next_job) in DicomJob.FINAL_STATUSES, 60, "the second job"
            )
            next_job.refresh_from_db()
            assert next_job.status == JobStatus.SUCCESS, task_report(next_job)
            task = next_job.tasks.get()
            assert task.attempts == 1, task_report(next_job)  # not retried
            assert orthanc_b.study_instance_uids(study_uid_of(second)) == sop_uids(second)
            assert destination_link.total > opened_before
        finally:
            stop_worker(worker)


# --- parked slots -------------------------------------------------------------------------------


def other_session_can_lock(key: int) -> bool:
    """Whether another PostgreSQL session (another worker) could take the slot `key` now."""
    with psycopg.connect(worker_processes.test_database_url(), autocommit=True) as other:
        row = other.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_NAMESPACE, key)).fetchone()
        locked = bool(row and row[0])
        if locked:
            other.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_NAMESPACE, key))
        return locked


def test_a_parked_slot_stays_taken_until_its_idle_time_passed(monkeypatch):
    monkeypatch.setattr(association_limits, "POOL_SECONDS", 1.0)
    server_id = 4790
    try:
        with association_slot(server_id, 1) as slot:
            assert slot == 0
        # Ended, but parked: another worker cannot take it, this process gets it back at once.
        assert held_slots(server_id) == 1
        assert not other_session_can_lock(server_id * 1024)
        taken_again = threading.Event()
        with association_slot(server_id, 1, timeout=0.1):
            taken_again.set()
        assert taken_again.is_set()
        wait_until(lambda: held_slots(server_id) == 0, 10, "the parked slot to be unlocked")
        assert other_session_can_lock(server_id * 1024)
    finally:
        association_limits.release_parked()
