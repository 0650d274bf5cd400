"""`DicomServer.max_associations` holds across worker processes.

The semaphore itself (PostgreSQL advisory locks) is checked with threads; the end-to-end test
runs two real workers on four tasks and counts, at the source, how many connections from ADIT
are open at once: a small TCP proxy sits between ADIT and Orthanc A's DICOM port.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adit.core.association_limits import (
    SlotWaitTimeout,
    association_slot,
    extra_association_slots,
)
from adit.core.dicom.testing.peers import LOOPBACK
from adit.core.dicom.testing.synthetic import make_study
from adit.core.models import DicomJob, DicomTask
from adit.core.testing import wait_until
from adit.core.testing.proxy import CountingProxy
from adit.core.testing.workers import start_worker, stop_worker
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

JobStatus, TaskStatus = DicomJob.Status, DicomTask.Status


# --- the semaphore alone ------------------------------------------------------------------------


@contextlib.contextmanager
def holders(limit: int, count: int, hold_seconds: float) -> Iterator[list[tuple[float, float]]]:
    """`count` threads each take a slot of server 4711 (limit `limit`) for `hold_seconds`;
    yields the list of (acquired, released) times, complete after the block."""
    spans: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            with association_slot(4711, limit, timeout=30):
                acquired = time.monotonic()
                time.sleep(hold_seconds)
                spans.append((acquired, time.monotonic()))
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            errors.append(error)

    threads = [threading.Thread(target=hold) for _ in range(count)]
    for thread in threads:
        thread.start()
    try:
        yield spans
    finally:
        for thread in threads:
            thread.join(timeout=60)
    assert not errors, errors


def overlapping(spans: list[tuple[float, float]]) -> bool:
    (a_start, a_end), (b_start, b_end) = spans
    return a_start < b_end and b_start < a_end


@pytest.mark.django_db
def test_with_one_slot_two_holders_take_turns():
    with holders(limit=1, count=2, hold_seconds=1.0) as spans:
        pass
    assert len(spans) == 2
    assert not overlapping(spans), spans


@pytest.mark.django_db
def test_with_two_slots_two_holders_hold_at_once():
    with holders(limit=2, count=2, hold_seconds=1.0) as spans:
        pass
    assert len(spans) == 2
    assert overlapping(spans), spans


@pytest.mark.django_db
def test_waiting_for_a_slot_stops_when_aborted():
    aborted = threading.Event()
    with association_slot(4712, 1):
        aborted.set()
        started = time.monotonic()
        with pytest.raises(SlotWaitTimeout, match="Aborted while waiting"):
            with association_slot(4712, 1, aborted=aborted):
                pass
        assert time.monotonic() - started < 5


@pytest.mark.django_db
def test_waiting_for_a_slot_times_out_with_a_clear_message():
    with association_slot(4713, 1):
        with pytest.raises(SlotWaitTimeout, match="No association slot of server 4713"):
            with association_slot(4713, 1, timeout=0.6):
                pass


def test_counting_proxy_sees_concurrent_connections():
    # Without this, a proxy that serialized connections would make the test below pass.
    target = socket.create_server((LOOPBACK, 0))
    target.listen(4)
    with CountingProxy(target.getsockname()[1]) as proxy:
        first = socket.create_connection((LOOPBACK, proxy.port))
        second = socket.create_connection((LOOPBACK, proxy.port))
        wait_until(lambda: proxy.max_open == 2, 5, "two open connections")
        first.close()
        second.close()
    target.close()


# --- across two worker processes ----------------------------------------------------------------


def tasks_ran_at_once(job) -> bool:
    """Whether any two tasks of the job were In Progress at overlapping times."""
    spans = [(task.start, task.end) for task in job.tasks.all()]
    assert all(start and end for start, end in spans)
    return any(
        a_start < b_end and b_start < a_end
        for index, (a_start, a_end) in enumerate(spans)
        for b_start, b_end in spans[index + 1 :]
    )


def run_until_finished(make_job, workers: int, log_dir: Path, timeout: float = 180):
    """Starts `workers` dicom worker processes, submits the job `make_job()` creates once all
    of them wait for work (so they can take its tasks side by side), and runs them until the
    job reaches a final status; returns the job."""
    logs = [log_dir / f"worker{n}.log" for n in range(workers)]
    running = [start_worker("dicom", log_path=log) for log in logs]
    try:
        wait_until(
            lambda: all(log.exists() and "started" in log.read_text() for log in logs),
            60,
            "every worker to start",
        )
        job = make_job()
        wait_until(lambda: job_status(job) in DicomJob.FINAL_STATUSES, timeout, "the job to finish")
    finally:
        for worker in running:
            stop_worker(worker)
    return job


def proxied_server(orthanc, name: str, proxy: CountingProxy, max_associations: int):
    """`orthanc` as a DIMSE-only server behind `proxy` (every association is counted)."""
    return orthanc_server(
        orthanc,
        name,
        port=proxy.port,
        max_associations=max_associations,
        dicomweb_root_url="",
        dicomweb_qido_support=False,
        dicomweb_wado_support=False,
        dicomweb_stow_support=False,
    )


@pytest.mark.django_db(transaction=True)
def test_two_workers_never_open_two_associations_to_a_server_limited_to_one(
    orthanc_a, orthanc_b, tmp_path
):
    studies = [make_study(unique_id(), series=(("CT", 12), ("MR", 12))) for _ in range(4)]
    orthanc_a.upload(ds for study in studies for ds in study)
    with CountingProxy(orthanc_a.dicom_port) as proxy:
        # DIMSE only, through the proxy: every association to the source is counted.
        source = proxied_server(orthanc_a, "Orthanc A (proxied)", proxy, max_associations=1)
        destination = orthanc_server(orthanc_b, "Orthanc B")
        job = run_until_finished(
            lambda: create_transfer_job(
                source,
                destination,
                [TaskSpec(str(study[0].PatientID), study_uid_of(study)) for study in studies],
            ),
            workers=2,
            log_dir=tmp_path,
        )

    job.refresh_from_db()
    assert job.status == JobStatus.SUCCESS, task_report(job)
    for study in studies:
        assert orthanc_b.study_instance_uids(study_uid_of(study)) == sop_uids(study)
    # A task opens several short associations to the source one after the other (the C-FINDs
    # that list the study, then the C-GET); like the destination tests below, count overlaps
    # longer than the proxy's own lag in noticing a close.
    assert proxy.most_at_once() == 1, f"{proxy.most_at_once()} associations to the source at once"
    # Both workers had a task at the same time (one of them waiting for the slot).
    assert tasks_ran_at_once(job), "the workers never ran tasks at once; nothing was tested"
    # So each opened associations of its own through the proxy; not one per study, as each
    # worker's pool reuses them from task to task.
    assert proxy.total >= 2


@pytest.mark.django_db(transaction=True)
def test_two_workers_store_on_one_association_to_a_destination_limited_to_one(
    orthanc_a, orthanc_b, tmp_path
):
    # Each task would store on two associations side by side if the destination allowed it.
    studies = [make_study(unique_id(), series=(("CT", 12), ("MR", 12))) for _ in range(3)]
    orthanc_a.upload(ds for study in studies for ds in study)
    with CountingProxy(orthanc_b.dicom_port) as proxy:
        job = run_until_finished(
            lambda: create_transfer_job(
                orthanc_server(orthanc_a, "Orthanc A"),
                proxied_server(orthanc_b, "Orthanc B (proxied)", proxy, max_associations=1),
                [TaskSpec(str(study[0].PatientID), study_uid_of(study)) for study in studies],
            ),
            workers=2,
            log_dir=tmp_path,
        )

    job.refresh_from_db()
    assert job.status == JobStatus.SUCCESS, task_report(job)
    for study in studies:
        assert orthanc_b.study_instance_uids(study_uid_of(study)) == sop_uids(study)
    assert proxy.most_at_once() == 1, f"{proxy.most_at_once()} associations to B at once"
    assert tasks_ran_at_once(job), "the workers never ran tasks at once; nothing was tested"


@pytest.mark.django_db(transaction=True)
def test_a_task_stores_side_by_side_when_the_destination_has_free_slots(
    orthanc_a, orthanc_b, tmp_path
):
    study = make_study(unique_id(), series=(("CT", 30), ("MR", 30)))
    orthanc_a.upload(study)
    with CountingProxy(orthanc_b.dicom_port) as proxy:
        job = run_until_finished(
            lambda: create_transfer_job(
                orthanc_server(orthanc_a, "Orthanc A"),
                proxied_server(orthanc_b, "Orthanc B (proxied)", proxy, max_associations=4),
                [TaskSpec(str(study[0].PatientID), study_uid_of(study))],
            ),
            workers=1,
            log_dir=tmp_path,
        )

    job.refresh_from_db()
    assert job.status == JobStatus.SUCCESS, task_report(job)
    assert orthanc_b.study_instance_uids(study_uid_of(study)) == sop_uids(study)
    assert proxy.most_at_once() == 2, f"{proxy.most_at_once()} associations to B at once"


# --- extra slots ---------------------------------------------------------------------------------


def slot_is_free(server_id: int, limit: int) -> bool:
    """Whether another session gets a slot of the server without waiting (much)."""
    try:
        with association_slot(server_id, limit, timeout=0.6):
            return True
    except SlotWaitTimeout:
        return False


@pytest.mark.django_db
def test_extra_slots_with_limit_one_yields_none_and_takes_nothing():
    with extra_association_slots(4721, 1, 3) as extra:
        assert extra == 0
        # The one slot is still free for another session.
        assert slot_is_free(4721, 1)


@pytest.mark.django_db
def test_extra_slots_takes_the_wanted_free_slots_and_gives_them_back():
    with association_slot(4723, 4):  # another session holds one slot
        with extra_association_slots(4723, 4, 3) as extra:
            assert extra == 3
            # All four slots are taken now: a third session would have to wait.
            with pytest.raises(SlotWaitTimeout, match="No association slot of server 4723"):
                with association_slot(4723, 4, timeout=0.6):
                    pass
        # After the block the three slots are free again (the first one is still held).
        with association_slot(4723, 4, timeout=0.6):
            with association_slot(4723, 4, timeout=0.6):
                with association_slot(4723, 4, timeout=0.6):
                    assert not slot_is_free(4723, 4)
    assert slot_is_free(4723, 1)


@pytest.mark.django_db
def test_extra_slots_takes_no_more_than_wanted():
    with association_slot(4725, 4):
        with extra_association_slots(4725, 4, 2) as extra:
            assert extra == 2
            assert slot_is_free(4725, 4)  # the fourth slot was left alone


@pytest.mark.django_db
def test_extra_slots_takes_only_the_free_ones_without_waiting():
    with association_slot(4724, 4), association_slot(4724, 4):  # two of four slots held
        started = time.monotonic()
        with extra_association_slots(4724, 4, 3) as extra:
            assert extra == 2
            assert time.monotonic() - started < 0.4
            assert not slot_is_free(4724, 4)
    # Every slot was given back.
    with extra_association_slots(4724, 4, 4) as extra:
        assert extra == 4


# --- lock connections kept for the next slot ----------------------------------------------------


def _backend_pid(lock_connection) -> int:
    return lock_connection.execute("SELECT pg_backend_pid()").fetchone()[0]


@pytest.fixture
def kept_lock_connections(monkeypatch) -> Iterator[None]:
    """Lock connections kept between slots, as in a worker process."""
    from adit.core import association_limits

    monkeypatch.setattr(association_limits, "KEEP_CONNECTIONS", True)
    try:
        yield
    finally:
        association_limits.close_idle_connections()


@pytest.mark.django_db(transaction=True)
def test_consecutive_slots_reuse_one_lock_connection_and_release_the_lock(
    kept_lock_connections,
):
    from adit.core.association_limits import _lock_connection

    with _lock_connection() as first:
        first_pid = _backend_pid(first)
    with association_slot(4712, 1, timeout=5):
        pass
    with _lock_connection() as again:
        assert _backend_pid(again) == first_pid  # no new PostgreSQL connection per slot
    # The slot taken on the kept connection was released: another session takes it at once.
    released = threading.Event()

    def take_elsewhere() -> None:
        with association_slot(4712, 1, timeout=5):
            released.set()

    with association_slot(4712, 1, timeout=5):
        pass
    thread = threading.Thread(target=take_elsewhere)
    thread.start()
    thread.join(timeout=10)
    assert released.is_set()


@pytest.mark.django_db(transaction=True)
def test_nested_slots_of_one_thread_never_share_a_session(kept_lock_connections):
    """Advisory locks of one session stack; a kept connection shared by two holders would let
    one thread hold the only slot of a server twice."""
    aborted = threading.Event()
    aborted.set()
    with association_slot(4713, 1, timeout=5):
        with pytest.raises(SlotWaitTimeout):
            with association_slot(4713, 1, timeout=5, aborted=aborted):
                pytest.fail("a second holder got the only slot")
        with extra_association_slots(4713, 2, 1) as extra:
            assert extra == 1  # slot 1 is free; slot 0 stays with the outer holder
