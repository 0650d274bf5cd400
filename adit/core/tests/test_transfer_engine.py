"""Transfers through the whole engine: job → queue → real worker process → processor → real PACS.

Source and destination are two real Orthanc instances (session fixtures `orthanc_a`,
`orthanc_b`); every test uploads studies with fresh UIDs and patient IDs, so tests never see
each other's data. Worker processes are real `manage.py bg_worker` processes on the test
database; every wait has a timeout and every started worker is stopped in a `finally` block.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import pydicom
import pytest
from procrastinate.contrib.django.models import ProcrastinateJob
from pydicom import Dataset

from adit.accounts.factories import UserFactory
from adit.core.dicom.testing.peers import OrthancInstance, free_port, require_binary
from adit.core.dicom.testing.synthetic import make_large_study, make_study
from adit.core.models import DicomFolder, DicomJob, DicomNode, DicomServer, DicomTask
from adit.core.processors import Phase
from adit.core.testing import wait_until
from adit.core.testing.proxy import CountingProxy
from adit.core.testing.workers import run_worker_burst, start_worker, stop_worker
from adit.core.tests.example_app.models import ExampleTransferJob, ExampleTransferTask

pytestmark = pytest.mark.django_db(transaction=True)

T = TypeVar("T")

JobStatus, TaskStatus = DicomJob.Status, DicomTask.Status


# --- helpers (also used by test_crash_recovery.py and test_association_limits.py) --------------


def unique_id(prefix: str = "P") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10].upper()}"


def orthanc_server(orthanc: OrthancInstance, name: str, **overrides) -> DicomServer:
    """A DicomServer row for a running Orthanc (DIMSE and DICOMweb unless overridden)."""
    config = dataclasses.asdict(orthanc.server_config(name=name, **overrides))
    return DicomServer.objects.create(**config)


def study_uid_of(datasets: Sequence[Dataset]) -> str:
    return str(datasets[0].StudyInstanceUID)


def sop_uids(datasets: Iterable[Dataset]) -> set[str]:
    return {str(ds.SOPInstanceUID) for ds in datasets}


@dataclasses.dataclass
class TaskSpec:
    patient_id: str
    study_uid: str
    series_uids: list[str] = dataclasses.field(default_factory=list)
    pseudonym: str = ""


def create_transfer_job(
    source: DicomNode, destination: DicomNode, specs: Sequence[TaskSpec], **job_fields
) -> ExampleTransferJob:
    """A submitted (pending, queued) job with one task per spec."""
    job = ExampleTransferJob.objects.create(owner=UserFactory(), **job_fields)
    for spec in specs:
        ExampleTransferTask.objects.create(
            job=job,
            source=source,
            destination=destination,
            patient_id=spec.patient_id,
            study_uid=spec.study_uid,
            series_uids=spec.series_uids,
            pseudonym=spec.pseudonym,
        )
    job.submit(by_staff=True)
    job.refresh_from_db()
    assert job.status == JobStatus.PENDING
    return job


def run_dicom_worker(timeout: float = 180, env: dict[str, str] | None = None) -> str:
    result = run_worker_burst("dicom", timeout=timeout, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def task_report(job) -> str:
    """Status, message and log of every task, for assertion messages."""
    return "\n".join(
        f"{task} {task.status} {task.message!r}\n{task.log}" for task in job.tasks.order_by("id")
    )


def job_status(job) -> str:
    return type(job).objects.values_list("status", flat=True).get(pk=job.pk)


def orthanc_find(orthanc: OrthancInstance, level: str, query: dict, expand: bool = True) -> list:
    return orthanc.rest(
        "POST", "/tools/find", json={"Level": level, "Query": query, "Expand": expand}
    ).json()


def orthanc_instance_count(orthanc: OrthancInstance, study_uid: str) -> int:
    found = orthanc_find(orthanc, "Instance", {"StudyInstanceUID": study_uid}, expand=False)
    return len(found)


# --- 1. unmodified transfer ---------------------------------------------------------------------


def test_unmodified_study_and_selected_series_arrive_at_the_destination(orthanc_a, orthanc_b):
    whole = make_study(unique_id(), series=(("CT", 3), ("MR", 2)))
    partial = make_study(unique_id(), series=(("CT", 2), ("MR", 2), ("CT", 1)))
    orthanc_a.upload(whole + partial)
    wanted_series = [str(partial[0].SeriesInstanceUID), str(partial[-1].SeriesInstanceUID)]
    source = orthanc_server(orthanc_a, "Orthanc A")
    destination = orthanc_server(orthanc_b, "Orthanc B")
    job = create_transfer_job(
        source,
        destination,
        [
            TaskSpec(str(whole[0].PatientID), study_uid_of(whole)),
            TaskSpec(str(partial[0].PatientID), study_uid_of(partial), series_uids=wanted_series),
        ],
    )

    run_dicom_worker()

    job.refresh_from_db()
    assert job.status == JobStatus.SUCCESS, task_report(job)
    assert job.start is not None and job.end is not None
    whole_task, partial_task = job.tasks.order_by("id")
    assert whole_task.status == TaskStatus.SUCCESS
    assert whole_task.message == "5 instance(s) transferred."
    assert whole_task.attempts == 1
    assert orthanc_b.study_instance_uids(study_uid_of(whole)) == sop_uids(whole)
    expected_partial = sop_uids(ds for ds in partial if ds.SeriesInstanceUID in wanted_series)
    assert len(expected_partial) == 3
    assert orthanc_b.study_instance_uids(study_uid_of(partial)) == expected_partial
    assert partial_task.message == "3 instance(s) transferred."
    # The tasks count what they delivered; the job page sums it up.
    assert (whole_task.transferred_instances, partial_task.transferred_instances) == (5, 3)
    assert whole_task.transferred_bytes > partial_task.transferred_bytes > 0
    totals = job.transfer_totals()
    assert totals["studies"] == 2 and totals["instances"] == 8
    assert totals["bytes"] == whole_task.transferred_bytes + partial_task.transferred_bytes
    assert [node.pk for node in job.destinations()] == [destination.pk]
    # Nothing of the engine is left in the queue.
    assert not ProcrastinateJob.objects.filter(
        queue_name="dicom", status__in=["todo", "doing"]
    ).exists()


# --- 2. pseudonymized transfer ------------------------------------------------------------------


def orthanc_instances_of_patient(orthanc: OrthancInstance, patient_id: str) -> list[dict]:
    return orthanc_find(orthanc, "Instance", {"PatientID": patient_id})


def test_two_studies_of_one_patient_arrive_as_one_consistent_pseudonymized_patient(
    orthanc_a, orthanc_b
):
    patient_id, patient_name, birth_date = unique_id("MRN"), "Smith^Alice^Marie", "19641123"
    first = make_study(
        patient_id,
        patient_name,
        birth_date=birth_date,
        study_date="20230105",
        series=(("CT", 3), ("SR", 1)),
    )
    second = make_study(
        patient_id,
        patient_name,
        birth_date=birth_date,
        study_date="20240210",
        series=(("MR", 2),),
    )
    orthanc_a.upload(first + second)
    pseudonym = unique_id("PSN")
    source = orthanc_server(orthanc_a, "Orthanc A")
    destination = orthanc_server(orthanc_b, "Orthanc B")
    job = create_transfer_job(
        source,
        destination,
        [
            TaskSpec(patient_id, study_uid_of(first), pseudonym=pseudonym),
            TaskSpec(patient_id, study_uid_of(second), pseudonym=pseudonym),
        ],
        trial_protocol_id="TRIAL-7",
        trial_protocol_name="Lung Screening",
    )

    run_dicom_worker()

    job.refresh_from_db()
    first_task, second_task = job.tasks.order_by("id")
    # The SR instance of the first study is excluded: a warning with the reason in the log.
    assert first_task.status == TaskStatus.WARNING, task_report(job)
    assert "1 instance(s) of excluded modalities (SR) were not transferred" in first_task.log
    assert first_task.message.startswith("3 instance(s) transferred.")
    assert second_task.status == TaskStatus.SUCCESS, task_report(job)
    assert job.status == JobStatus.WARNING

    # One patient at the destination: the pseudonym, with both studies.
    (patient,) = orthanc_find(orthanc_b, "Patient", {"PatientID": pseudonym})
    assert patient["MainDicomTags"]["PatientID"] == pseudonym
    assert patient["MainDicomTags"]["PatientName"] == pseudonym
    assert len(patient["Studies"]) == 2
    assert orthanc_find(orthanc_b, "Patient", {"PatientID": patient_id}) == []
    studies = [orthanc_b.rest("GET", f"/studies/{sid}").json() for sid in patient["Studies"]]
    arrived_study_uids = {s["MainDicomTags"]["StudyInstanceUID"] for s in studies}
    assert arrived_study_uids.isdisjoint({study_uid_of(first), study_uid_of(second)})

    instances = orthanc_instances_of_patient(orthanc_b, pseudonym)
    assert len(instances) == 3 + 2  # the SR stayed behind
    originals = {
        str(value)
        for value in (patient_id, patient_name, *patient_name.split("^"), birth_date)
        if value
    }
    original_uids = sop_uids(first + second) | {str(ds.SeriesInstanceUID) for ds in first + second}
    birth_dates, sexes = set(), set()
    for instance in instances:
        tags = orthanc_b.rest("GET", f"/instances/{instance['ID']}/simplified-tags").json()
        assert tags["PatientID"] == pseudonym
        assert tags["PatientName"] == pseudonym
        assert tags["Modality"] in {"CT", "MR"}
        assert tags["ClinicalTrialProtocolID"] == "TRIAL-7"
        assert tags["ClinicalTrialProtocolName"] == "Lung Screening"
        assert tags["PatientIdentityRemoved"] == "YES"
        assert tags["SOPInstanceUID"] not in original_uids
        assert tags["SeriesInstanceUID"] not in original_uids
        birth_dates.add(tags.get("PatientBirthDate"))
        sexes.add(tags.get("PatientSex"))
        text = json.dumps(tags)
        leaked = [value for value in originals if value in text]
        assert not leaked, f"original identifiers {leaked} found in {instance['ID']}"
    # The same pseudonymized identifiers in both studies (one seed per job and patient).
    assert len(birth_dates) == 1 and len(sexes) == 1
    assert birth_dates != {birth_date}


# --- 3. folders and encrypted archives ----------------------------------------------------------


def test_study_is_written_to_a_folder_in_the_reference_layout(orthanc_a, tmp_path):
    datasets = make_study(unique_id(), series=(("CT", 2), ("MR", 2)), study_time="083015")
    orthanc_a.upload(datasets)
    source = orthanc_server(orthanc_a, "Orthanc A")
    folder = DicomFolder.objects.create(name="Export", path=str(tmp_path))
    job = create_transfer_job(
        source, folder, [TaskSpec(str(datasets[0].PatientID), study_uid_of(datasets))]
    )

    run_dicom_worker()

    job.refresh_from_db()
    assert job.status == JobStatus.SUCCESS, task_report(job)
    job_folder = f"adit_example_app_{job.pk}_{job.created.strftime('%Y%m%d')}_{job.owner.username}"
    expected = {
        Path(
            job_folder,
            str(ds.PatientID),
            "20240101-083015-CT,MR",
            f"{ds.SeriesNumber}-{ds.SeriesDescription}",
            f"{ds.SOPInstanceUID}.dcm",
        )
        for ds in datasets
    }
    written = {path.relative_to(tmp_path) for path in tmp_path.rglob("*") if path.is_file()}
    assert written == expected
    for relative in expected:
        ds = pydicom.dcmread(tmp_path / relative)
        assert relative.name == f"{ds.SOPInstanceUID}.dcm"
        assert ds.PatientID == datasets[0].PatientID


def test_encrypted_archive_cannot_be_read_without_the_password(orthanc_a, tmp_path):
    seven_zip = require_binary("7z")
    patient_id = unique_id("SECRET")
    datasets = make_study(patient_id, series=(("CT", 2), ("MR", 1)))
    orthanc_a.upload(datasets)
    source = orthanc_server(orthanc_a, "Orthanc A")
    export = tmp_path / "export"
    export.mkdir()
    folder = DicomFolder.objects.create(name="Archive export", path=str(export))
    password = "correct horse battery"
    job = create_transfer_job(
        source,
        folder,
        [TaskSpec(patient_id, study_uid_of(datasets))],
        archive_password=password,
    )

    run_dicom_worker()

    job.refresh_from_db()
    assert job.status == JobStatus.SUCCESS, task_report(job)
    (archive,) = [path for path in export.rglob("*") if path.is_file()]
    assert archive.suffix == ".7z"
    raw = archive.read_bytes()
    assert patient_id.encode() not in raw
    assert not any(uid.encode() in raw for uid in sop_uids(datasets))

    def seven_zip_run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [seven_zip, *args],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    for attempt in (["l", str(archive)], ["l", "-pwrong-password", str(archive)]):
        listing = seven_zip_run(*attempt)
        assert listing.returncode != 0, listing.stdout
        assert ".dcm" not in listing.stdout + listing.stderr
        assert patient_id not in listing.stdout + listing.stderr
    extracted = tmp_path / "extracted"
    unpacked = seven_zip_run("x", f"-p{password}", f"-o{extracted}", str(archive))
    assert unpacked.returncode == 0, unpacked.stdout + unpacked.stderr
    files = [path for path in extracted.rglob("*.dcm")]
    assert {path.name for path in files} == {f"{uid}.dcm" for uid in sop_uids(datasets)}
    assert all(patient_id in path.parts for path in files)
    assert sop_uids(pydicom.dcmread(path) for path in files) == sop_uids(datasets)


# --- 4. cancel of a running task ----------------------------------------------------------------


def test_canceling_a_running_task_stops_it_promptly_and_the_worker_goes_on(
    orthanc_a, orthanc_b, tmp_path
):
    big = make_large_study(400, patient_id=unique_id("BIG"), seed=None, rows=32, columns=32)
    small = make_study(unique_id(), series=(("CT", 2),))
    orthanc_a.upload(big + small)
    source = orthanc_server(orthanc_a, "Orthanc A")
    # A slow destination (each chunk ADIT sends waits 20 ms), so the task surely still runs
    # when the cancel arrives; a transfer of 400 instances takes about a second otherwise.
    slow_link = CountingProxy(orthanc_b.dicom_port, delay_per_chunk=0.02).__enter__()
    destination = orthanc_server(
        orthanc_b,
        "Orthanc B (slow)",
        port=slow_link.port,
        dicomweb_root_url="",
        dicomweb_qido_support=False,
        dicomweb_wado_support=False,
        dicomweb_stow_support=False,
    )
    pseudonym = unique_id("PSN")
    job = create_transfer_job(
        source,
        destination,
        [TaskSpec(str(big[0].PatientID), study_uid_of(big), pseudonym=pseudonym)],
    )
    worker = start_worker("dicom", log_path=tmp_path / "worker.log")
    try:
        task = job.tasks.get()
        wait_until(
            lambda: ExampleTransferTask.objects.filter(
                pk=task.pk, status=TaskStatus.IN_PROGRESS
            ).exists(),
            timeout=60,
            what="the task to start",
        )
        job.cancel()
        canceled_at = time.monotonic()
        assert job.status in (JobStatus.CANCELING, JobStatus.CANCELED)

        wait_until(lambda: job_status(job) == JobStatus.CANCELED, 30, "the job to be canceled")
        assert time.monotonic() - canceled_at < 30
        task.refresh_from_db()
        assert task.status == TaskStatus.CANCELED, task_report(job)
        assert task.message == "Canceled while it was running."
        assert task.end is not None
        assert worker.poll() is None, "the worker died on cancel"
        # It stopped in the middle, not after storing everything.
        assert len(orthanc_instances_of_patient(orthanc_b, pseudonym)) < len(big)

        # The same worker takes the next job.
        next_job = create_transfer_job(
            source, destination, [TaskSpec(str(small[0].PatientID), study_uid_of(small))]
        )
        wait_until(
            lambda: job_status(next_job) in DicomJob.FINAL_STATUSES, 60, "the next job to finish"
        )
        next_job.refresh_from_db()
        assert next_job.status == JobStatus.SUCCESS, task_report(next_job)
        assert orthanc_b.study_instance_uids(study_uid_of(small)) == sop_uids(small)
        assert worker.poll() is None
    finally:
        stop_worker(worker)
        slow_link.__exit__(None, None, None)


# Every phase of a run in which a cancel can arrive. The worker holds the run in the phase
# (test settings' phase hook, 2 s), the test cancels meanwhile, and the code after the hold must
# notice the abort by itself.
CANCEL_PHASES = [
    Phase.CLAIMING,
    Phase.CLAIMED,
    Phase.SLOT,
    Phase.CONNECTING,
    Phase.FETCHING,
    Phase.STORING,
    Phase.VERIFYING,
]


@pytest.mark.parametrize("phase", CANCEL_PHASES, ids=lambda phase: phase.name)
def test_a_cancel_in_any_phase_of_a_run_ends_the_job_canceled_within_5_s(
    phase, orthanc_a, orthanc_b, tmp_path
):
    study = make_large_study(40, patient_id=unique_id("PHASE"), seed=None, rows=32, columns=32)
    orthanc_a.upload(study)
    source = orthanc_server(orthanc_a, "Orthanc A")
    destination = orthanc_server(
        orthanc_b, "Orthanc B", dicomweb_root_url="", dicomweb_qido_support=False
    )
    hold = tmp_path / "hold"
    hold.write_text(phase.name)
    reached = tmp_path / "hold.reached"
    worker = start_worker(
        "dicom",
        env={"ADIT_TEST_HOLD_PHASE_FILE": str(hold), "ADIT_TEST_HOLD_SECONDS": "2"},
        log_path=tmp_path / "worker.log",
    )
    try:
        job = create_transfer_job(
            source, destination, [TaskSpec(str(study[0].PatientID), study_uid_of(study))]
        )
        wait_until(reached.exists, 60, f"the task to reach the phase {phase.name}")
        hold.unlink()
        job.cancel()
        canceled_at = time.monotonic()

        wait_until(lambda: job_status(job) == JobStatus.CANCELED, 5, "the job to be canceled")
        elapsed = time.monotonic() - canceled_at
        task = job.tasks.get()
        assert task.status == TaskStatus.CANCELED, task_report(job)
        assert task.message in (
            "Canceled while it was running.",
            "Canceled by the user before it ran.",  # the cancel came before the claim
        )
        assert worker.poll() is None, "the worker died on cancel"
        if phase not in (Phase.VERIFYING,):
            stored = orthanc_instance_count(orthanc_b, study_uid_of(study))
            assert stored < len(study), "the transfer went on after the cancel"
        if phase != Phase.CLAIMING:
            # The worker logs the stop once the run ended, which may be just after the status
            # was written: wait for the line instead of reading the log once.
            log_path = tmp_path / "worker.log"
            wait_until(
                lambda: "s after the abort" in log_path.read_text(), 10, "the worker's stop line"
            )
            log = log_path.read_text()
            assert f"abort received (canceled by a user) while {phase}" in log, log
        print(f"{phase.name}: Canceled {elapsed:.2f} s after the cancel")
    finally:
        stop_worker(worker)


# --- 5. retries ---------------------------------------------------------------------------------


def closed_port_server(name: str, ae_title: str) -> DicomServer:
    """A DIMSE server nobody listens on (a refused connection is a transient error)."""
    return DicomServer.objects.create(
        name=name,
        ae_title=ae_title,
        host="127.0.0.1",
        port=free_port(),
        study_root_find_support=True,
        store_scp_support=True,
    )


def test_transient_failure_is_retried_with_backoff_and_then_succeeds(orthanc_a, orthanc_b):
    datasets = make_study(unique_id(), series=(("CT", 2),))
    orthanc_a.upload(datasets)
    source = orthanc_server(orthanc_a, "Orthanc A")
    destination = closed_port_server("Down PACS", "DOWN_PACS")
    job = create_transfer_job(
        source, destination, [TaskSpec(str(datasets[0].PatientID), study_uid_of(datasets))]
    )
    task = job.tasks.get()
    first_queue_id = task.queued_job_id

    run_dicom_worker()

    task.refresh_from_db()
    job.refresh_from_db()
    assert task.status == TaskStatus.PENDING, task_report(job)
    assert task.attempts == 1
    assert "Attempt 1 of 5 failed" in task.log
    assert "Attempt 1 of 5 failed" in task.message
    # The message says what the task waits for, and how long.
    assert "Waiting 30 s for the server (or ADIT's receiver) to recover" in task.message
    assert job.status == JobStatus.IN_PROGRESS
    # A new queue job, scheduled for later (the worker did not run it at once).
    assert task.queued_job_id not in (None, first_queue_id)
    retry = ProcrastinateJob.objects.get(id=task.queued_job_id)
    assert retry.status == "todo"
    assert retry.scheduled_at is not None and job.start is not None
    assert retry.scheduled_at > job.start

    # The destination is back; the retry is due now.
    destination.port = orthanc_b.dicom_port
    destination.ae_title = orthanc_b.ae_title
    destination.save()
    ProcrastinateJob.objects.filter(id=retry.id).update(scheduled_at=job.start)
    run_dicom_worker()

    task.refresh_from_db()
    job.refresh_from_db()
    assert task.status == TaskStatus.SUCCESS, task_report(job)
    assert task.attempts == 2
    assert job.status == JobStatus.SUCCESS
    assert orthanc_b.study_instance_uids(study_uid_of(datasets)) == sop_uids(datasets)


def test_transient_failure_on_the_last_attempt_fails_the_task():
    # No DICOM traffic reaches a peer here; the source is refused too.
    source = closed_port_server("Down source", "DOWN_SRC")
    destination = closed_port_server("Down PACS", "DOWN_PACS")
    job = create_transfer_job(source, destination, [TaskSpec("P1", "1.2.3.4")])

    run_dicom_worker(env={"DICOM_TASK_MAX_ATTEMPTS": "1"})

    job.refresh_from_db()
    task = job.tasks.get()
    assert task.status == TaskStatus.FAILURE, task_report(job)
    assert task.attempts == 1
    assert task.message.startswith("Failed after 1 attempts:")
    assert job.status == JobStatus.FAILURE
    assert not ProcrastinateJob.objects.filter(
        queue_name="dicom", status__in=["todo", "doing"]
    ).exists()


def test_retry_runs_only_the_failed_tasks_again(orthanc_a, orthanc_b):
    present = make_study(unique_id(), series=(("CT", 2),))
    late = make_study(unique_id(), series=(("MR", 2),))
    orthanc_a.upload(present)
    source = orthanc_server(orthanc_a, "Orthanc A")
    destination = orthanc_server(orthanc_b, "Orthanc B")
    job = create_transfer_job(
        source,
        destination,
        [
            TaskSpec(str(present[0].PatientID), study_uid_of(present)),
            TaskSpec(str(late[0].PatientID), study_uid_of(late)),
        ],
    )

    run_dicom_worker()

    job.refresh_from_db()
    done, failed = job.tasks.order_by("id")
    assert done.status == TaskStatus.SUCCESS, task_report(job)
    assert failed.status == TaskStatus.FAILURE, task_report(job)
    assert job.status == JobStatus.FAILURE
    assert job.message == "1 of 2 tasks failed."

    orthanc_a.upload(late)
    job.retry()
    run_dicom_worker()

    job.refresh_from_db()
    assert job.status == JobStatus.SUCCESS, task_report(job)
    again_done, again_failed = job.tasks.order_by("id")
    assert (again_done.attempts, again_done.end) == (1, done.end)  # not run again
    assert again_failed.status == TaskStatus.SUCCESS
    assert again_failed.attempts == 1  # reset by retry, then one run
    assert orthanc_b.study_instance_uids(study_uid_of(late)) == sop_uids(late)


# Acknowledges every C-STORE, then drops the instance with InstanceNumber 2 (a PACS that loses
# data after saying "stored", e.g. a full disk behind an asynchronous archive).
LOSE_SECOND_INSTANCE_LUA = """
function OnStoredInstance(instanceId, tags, metadata, origin)
  if tags["InstanceNumber"] == "2" then
    Delete(instanceId)
  end
end
"""


def test_instances_lost_after_a_successful_store_fail_the_task(orthanc_a, tmp_path):
    from adit.core.dicom.testing.peers import start_orthanc

    script = tmp_path / "lose.lua"
    script.write_text(LOSE_SECOND_INSTANCE_LUA)
    lossy = start_orthanc("LOSSY", extra_config={"LuaScripts": [str(script)]})
    try:
        # Orthanc runs the script just after storing; the 18 instances after the lost one give
        # it ample time before ADIT asks which instances arrived.
        datasets = make_study(unique_id(), series=(("CT", 20),))
        orthanc_a.upload(datasets)
        job = create_transfer_job(
            orthanc_server(orthanc_a, "Orthanc A"),
            orthanc_server(lossy, "Lossy PACS"),
            [TaskSpec(str(datasets[0].PatientID), study_uid_of(datasets))],
        )
        run_dicom_worker(env={"DICOM_TASK_MAX_ATTEMPTS": "1"})

        job.refresh_from_db()
        task = job.tasks.get()
        assert task.status == TaskStatus.FAILURE, task_report(job)
        assert "1 of 20 transferred instance(s) are missing at Lossy PACS" in task.message
        assert job.status == JobStatus.FAILURE
        assert len(lossy.study_instance_uids(study_uid_of(datasets))) == 19
    finally:
        lossy.stop()
