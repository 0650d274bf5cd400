"""De-identification through the whole engine: PHI-rich study → real worker → Orthanc / folder.

The PHI-rich corpus (`adit.core.dicom.testing.phi_corpus`) is uploaded to a real Orthanc and
transferred by a real worker process; every byte that arrives (the files Orthanc stores, the
files in the folder and their paths) is scanned for the source's identifying values. Jobs are
plain rows of the example app's models, as in `test_transfer_engine.py`.
"""

from __future__ import annotations

import datetime
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pydicom
import pytest

from adit.core.dicom.pseudonymizer import BURNED_IN_EXCLUSION_TEXT, PseudonymizedInstance
from adit.core.dicom.testing.peers import require_binary
from adit.core.dicom.testing.phi_corpus import find_identifiers, make_phi_corpus
from adit.core.models import DicomFolder, DicomJob, DicomTask
from adit.core.processors import TransferTaskProcessor
from adit.core.statuses import Status
from adit.core.tests.test_transfer_engine import (
    TaskSpec,
    create_transfer_job,
    orthanc_find,
    orthanc_server,
    run_dicom_worker,
    study_uid_of,
    task_report,
    unique_id,
)

pytestmark = pytest.mark.django_db(transaction=True)

JobStatus, TaskStatus = DicomJob.Status, DicomTask.Status


def upload_corpus(orthanc):
    patient_id = unique_id("MRN")
    corpus = make_phi_corpus(seed=patient_id, patient_id=patient_id)
    orthanc.upload(corpus.datasets)
    return corpus, patient_id


def files_below(folder: Path) -> dict[Path, bytes]:
    return {path.relative_to(folder): path.read_bytes() for path in folder.rglob("*.dcm")}


def assert_clean(corpus, outputs: list[bytes], names: Sequence[str] = ()) -> None:
    """No identifying value and no original UID in any output byte or name."""
    everything = [*outputs, *(name.encode() for name in names)]
    assert find_identifiers(everything, corpus.all_identifiers()) == set()
    assert find_identifiers(everything, corpus.original_uids) == set()


def test_default_profile_to_orthanc_leaves_no_identifier_and_leaves_burned_in_images_out(
    orthanc_a, orthanc_b
):
    corpus, patient_id = upload_corpus(orthanc_a)
    pseudonym = unique_id("PSN")
    job = create_transfer_job(
        orthanc_server(orthanc_a, "Orthanc A"),
        orthanc_server(orthanc_b, "Orthanc B"),
        [TaskSpec(patient_id, study_uid_of(corpus.datasets), pseudonym=pseudonym)],
    )

    run_dicom_worker()

    job.refresh_from_db()
    (task,) = job.tasks.all()
    # Two CT instances arrive; the SR stays behind for its modality, the Secondary Capture
    # (BurnedInAnnotation=YES) and the Ultrasound (no flag) for possible burned-in text. The
    # destination's check does not miss them: the task warns, it does not fail.
    assert task.status == TaskStatus.WARNING, task_report(job)
    assert task.message.startswith("2 instance(s) transferred.")
    assert f"2 instance(s) {BURNED_IN_EXCLUSION_TEXT}" in task.log
    for ds in corpus.datasets[3:]:
        assert f"SOP Instance UID {ds.SOPInstanceUID}: {BURNED_IN_EXCLUSION_TEXT}" in task.log
    instances = orthanc_find(orthanc_b, "Instance", {"PatientID": pseudonym})
    assert len(instances) == 2
    stored = [orthanc_b.rest("GET", f"/instances/{i['ID']}/file").content for i in instances]
    assert_clean(corpus, stored)
    for raw in stored:
        ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(raw))
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert orthanc_find(orthanc_b, "Patient", {"PatientID": patient_id}) == []


def test_jobs_a_month_apart_link_up_by_pseudonym_and_another_pseudonym_does_not(
    orthanc_a, tmp_path
):
    corpus, patient_id = upload_corpus(orthanc_a)
    source = orthanc_server(orthanc_a, "Orthanc A")
    pseudonym, other_pseudonym = unique_id("PSN"), unique_id("PSN")
    options = ["retain_modified_dates", "clean_descriptors"]

    def export(pseudonym: str, name: str) -> tuple[DicomJob, dict[Path, bytes]]:
        folder_path = tmp_path / name
        folder_path.mkdir()
        folder = DicomFolder.objects.create(name=name, path=str(folder_path))
        job = create_transfer_job(
            source,
            folder,
            [TaskSpec(patient_id, study_uid_of(corpus.datasets), pseudonym=pseudonym)],
            deid_options=options,
        )
        run_dicom_worker()
        job.refresh_from_db()
        assert job.status == JobStatus.WARNING, task_report(job)
        return job, files_below(folder_path)

    first_job, first = export(pseudonym, "January")
    # A month later: another job (created later) for the same patient and pseudonym.
    type(first_job).objects.filter(pk=first_job.pk).update(
        created=first_job.created - datetime.timedelta(days=31)
    )
    second_job, second = export(pseudonym, "February")
    _, other = export(other_pseudonym, "Other")

    for files in (first, second, other):
        assert len(files) == 2  # the two CT instances
        assert_clean(corpus, list(files.values()), [str(path) for path in files])

    def identifiers(files: dict[Path, bytes]) -> tuple[set, set, set, set]:
        datasets = [pydicom.dcmread(pydicom.filebase.DicomBytesIO(raw)) for raw in files.values()]
        return (
            {ds.StudyInstanceUID for ds in datasets},
            {ds.SeriesInstanceUID for ds in datasets},
            {ds.SOPInstanceUID for ds in datasets},
            {ds.StudyDate for ds in datasets},
        )

    first_ids, second_ids, other_ids = identifiers(first), identifiers(second), identifiers(other)
    assert first_ids == second_ids, "same patient + pseudonym: same UIDs and date shift"
    assert corpus.datasets[0].StudyDate not in first_ids[3]
    for mine, theirs in zip(first_ids[:3], other_ids[:3], strict=True):
        assert mine.isdisjoint(theirs), "another pseudonym: unrelated UIDs"
    assert first_ids[3] != other_ids[3], "another pseudonym: another date shift"
    # Folder and file names hold only pseudonymized values (pseudonym, new Study/SOP UIDs).
    (study_uid,) = first_ids[0]
    (study_date,) = first_ids[3]
    for path in first:
        assert path.parts[1] == pseudonym
        assert path.parts[2].startswith(f"{study_date}-")
    assert second_job.deid_description == [
        "Basic Application Level Confidentiality Profile",
        "Retain Longitudinal Temporal Information with Modified Dates (per-patient shift)",
        "Clean Descriptors",
    ]
    assert study_uid not in corpus.original_uids


def test_encrypted_archive_of_the_default_profile_holds_no_identifier(orthanc_a, tmp_path):
    seven_zip = require_binary("7z")
    corpus, patient_id = upload_corpus(orthanc_a)
    export = tmp_path / "export"
    export.mkdir()
    folder = DicomFolder.objects.create(name="Archive export", path=str(export))
    pseudonym = unique_id("PSN")
    job = create_transfer_job(
        orthanc_server(orthanc_a, "Orthanc A"),
        folder,
        [TaskSpec(patient_id, study_uid_of(corpus.datasets), pseudonym=pseudonym)],
        archive_password="correct horse battery",
    )

    run_dicom_worker()

    job.refresh_from_db()
    assert job.status == JobStatus.WARNING, task_report(job)
    (archive,) = [path for path in export.rglob("*") if path.is_file()]
    extracted = tmp_path / "extracted"
    unpacked = subprocess.run(
        [seven_zip, "x", "-pcorrect horse battery", f"-o{extracted}", str(archive)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert unpacked.returncode == 0, unpacked.stdout + unpacked.stderr
    files = files_below(extracted)
    assert len(files) == 2
    assert_clean(
        corpus,
        [archive.read_bytes(), *files.values()],
        [archive.name, *(str(path) for path in files)],
    )
    assert all(path.parts[0] == pseudonym for path in files)


def test_the_processor_hands_every_replacement_to_its_mapping_hook(orthanc_a, orthanc_b):
    corpus, patient_id = upload_corpus(orthanc_a)
    pseudonym = unique_id("PSN")
    job = create_transfer_job(
        orthanc_server(orthanc_a, "Orthanc A"),
        orthanc_server(orthanc_b, "Orthanc B"),
        [TaskSpec(patient_id, study_uid_of(corpus.datasets), pseudonym=pseudonym)],
    )
    seen: list[PseudonymizedInstance] = []

    class RecordingProcessor(TransferTaskProcessor):
        def on_pseudonymized(self, replaced: PseudonymizedInstance) -> None:
            seen.append(replaced)

    processor = RecordingProcessor(job.tasks.get())
    result = processor.process()

    assert result.status == Status.WARNING, result
    cts = corpus.datasets[:2]
    assert sorted(r.original_sop_instance_uid for r in seen) == sorted(
        str(ds.SOPInstanceUID) for ds in cts
    )
    assert {(r.original_patient_id, r.pseudonym) for r in seen} == {(patient_id, pseudonym)}
    uid_map = processor.transformer.uid_map
    assert uid_map.patients == {patient_id: pseudonym}
    (new_study_uid,) = {r.study_uid for r in seen}
    assert uid_map.studies == {study_uid_of(corpus.datasets): new_study_uid}
    assert orthanc_find(orthanc_b, "Study", {"StudyInstanceUID": new_study_uid})
