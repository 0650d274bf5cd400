"""Tests of writing instances into the folder layout and into encrypted 7-Zip archives."""

import os
import shutil
import subprocess
from datetime import date
from pathlib import Path

import pydicom
import pytest

from adit.core.dicom import writer as writer_module
from adit.core.dicom.testing.synthetic import make_large_study, make_study
from adit.core.dicom.writer import (
    ArchiveWriter,
    DicomWriteError,
    FolderQuotaExceededError,
    FolderWriter,
    encode_instance,
    folder_size,
    instance_relative_path,
    job_folder_name,
    sanitize_path_component,
)

JOB_FOLDER = "adit_selective_transfer_7_20240101_alice"
PASSWORD = "correct horse battery"


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"the '{name}' binary is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def study():
    return make_study(
        "PAT001",
        study_date="20240315",
        study_time="101500.25",
        series=(("CT", 3), ("MR", 2)),
        seed="writer",
    )


def all_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


def test_layout_follows_patient_study_series_instance(tmp_path, study):
    writer = FolderWriter(tmp_path, JOB_FOLDER)

    paths = [writer.write(ds, study_modalities=["MR", "CT"]) for ds in study]

    first = study[0]
    assert paths[0] == (
        tmp_path
        / JOB_FOLDER
        / "PAT001"
        / "20240315-101500-CT,MR"
        / "1-CT series 1"
        / f"{first.SOPInstanceUID}.dcm"
    )
    assert {path.parent.name for path in paths} == {"1-CT series 1", "2-MR series 2"}
    assert all_files(tmp_path) == sorted(paths)
    assert writer.written_count == 5


def test_written_files_are_identical_part10_instances(tmp_path, study):
    writer = FolderWriter(tmp_path, JOB_FOLDER)

    for ds in study:
        path = writer.write(ds)
        read = pydicom.dcmread(path)
        assert read.SOPInstanceUID == ds.SOPInstanceUID
        assert read.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
        assert read.PixelData == ds.PixelData


def test_patient_folder_and_series_folders_are_configurable(tmp_path, study):
    writer = FolderWriter(tmp_path, JOB_FOLDER, create_series_subfolders=False)

    path = writer.write(study[0], patient_folder="PSEUDO01")

    assert path.relative_to(tmp_path / JOB_FOLDER).parts == (
        "PSEUDO01",
        "20240315-101500-CT,MR",
        f"{study[0].SOPInstanceUID}.dcm",
    )


def test_series_without_number_or_description(study):
    ds = study[0]
    ds.SeriesDescription = ""
    assert instance_relative_path(ds).parts[2] == "1-Undefined"
    del ds.SeriesNumber
    assert instance_relative_path(ds).parts[2] == ds.SeriesInstanceUID


def test_study_without_a_date_is_named_by_its_uid_so_studies_stay_apart(study):
    # The PS3.15 Basic Profile empties StudyDate and StudyTime of pseudonymized instances.
    first, other = study[0], make_study("P-OTHER", series=(("CT", 1),))[0]
    for ds in (first, other):
        ds.StudyDate = ""
        ds.StudyTime = ""

    assert instance_relative_path(first).parts[1] == f"NoDate-{first.StudyInstanceUID}-CT,MR"
    assert instance_relative_path(first).parts[1] != instance_relative_path(other).parts[1]


@pytest.mark.parametrize(
    "value, expected",
    [
        ("../../etc/passwd", "_.._etc_passwd"),
        ("..", "Undefined"),
        (".", "Undefined"),
        ('a\\b:c*d?e"f<g>h|i', "a_b_c_d_e_f_g_h_i"),
        ("line\nbreak\x00tab\t", "line_break_tab_"),
        ("trailing dots... ", "trailing dots"),
        ("...", "Undefined"),
        (".hidden", "hidden"),
        ("CON", "_CON"),
        ("lpt1.txt", "_lpt1.txt"),
        ("", "Undefined"),
        (None, "Undefined"),
        ("Müller^Jörg", "Müller^Jörg"),
    ],
)
def test_path_components_are_sanitized(value, expected):
    assert sanitize_path_component(value) == expected


def test_long_components_are_shortened():
    assert len(sanitize_path_component("x" * 500)) == 100
    assert len(sanitize_path_component("é" * 150).encode()) <= 200


def test_hostile_tag_values_cannot_escape_the_job_folder(tmp_path, study):
    ds = study[0]
    ds.PatientID = "../../../outside"
    ds.SeriesDescription = "../../x/../y"
    ds.StudyDate = "/etc"
    writer = FolderWriter(tmp_path, JOB_FOLDER)

    path = writer.write(ds)

    assert path.resolve().is_relative_to((tmp_path / JOB_FOLDER).resolve())
    assert len(path.relative_to(tmp_path / JOB_FOLDER).parts) == 4
    assert all_files(tmp_path) == [path]


def test_job_folder_name():
    name = job_folder_name("selective_transfer", 12, date(2024, 3, 15), "bob/../x")
    assert name == "adit_selective_transfer_12_20240315_bob_.._x"


def test_rewriting_an_instance_is_harmless(tmp_path, study):
    writer = FolderWriter(tmp_path, JOB_FOLDER, quota_bytes=10_000_000)

    first_path = writer.write(study[0])
    usage_after_first = writer.quota.used_bytes
    second_path = writer.write(study[0])

    assert first_path == second_path
    assert all_files(tmp_path) == [first_path]
    assert writer.quota.used_bytes == usage_after_first
    assert pydicom.dcmread(first_path).SOPInstanceUID == study[0].SOPInstanceUID


def test_no_temp_files_are_left_and_failed_writes_leave_nothing(tmp_path, study, monkeypatch):
    writer = FolderWriter(tmp_path, JOB_FOLDER)
    for ds in study[:2]:
        writer.write(ds)
    assert not [p for p in all_files(tmp_path) if p.name.endswith(".tmp")]

    def failing_replace(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(writer_module.os, "replace", failing_replace)
    with pytest.raises(DicomWriteError, match="disk on fire") as error:
        writer.write(study[2])

    assert study[2].SOPInstanceUID in str(error.value)
    assert len(all_files(tmp_path)) == 2
    assert not [p for p in all_files(tmp_path) if p.name.endswith(".tmp")]


def test_stale_temp_files_can_be_removed(tmp_path, study):
    writer = FolderWriter(tmp_path, JOB_FOLDER)
    path = writer.write(study[0])
    stale = path.with_name(f".{path.name}.abc123.tmp")
    stale.write_bytes(b"half")

    assert writer.remove_stale_temp_files() == 1
    assert all_files(tmp_path) == [path]


def test_quota_is_checked_before_writing(tmp_path, study):
    instance_size = len(encode_instance(study[0]))
    (tmp_path / "existing.bin").write_bytes(b"x" * 1000)
    writer = FolderWriter(tmp_path, JOB_FOLDER, quota_bytes=1000 + instance_size * 2 + 10)
    assert writer.quota.used_bytes == 1000

    writer.write(study[0])
    writer.write(study[1])
    with pytest.raises(FolderQuotaExceededError, match="quota") as error:
        writer.write(study[2])

    assert str(tmp_path) in str(error.value)
    assert len(all_files(tmp_path / JOB_FOLDER)) == 2


def test_missing_destination_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DicomWriteError, match="does not exist"):
        FolderWriter(tmp_path / "missing", JOB_FOLDER)


def test_instance_without_sop_instance_uid_is_rejected(tmp_path, study):
    ds = study[0]
    del ds.SOPInstanceUID
    with pytest.raises(DicomWriteError, match="SOPInstanceUID"):
        FolderWriter(tmp_path, JOB_FOLDER).write(ds)


def test_folder_size_counts_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_bytes(b"1234")
    (tmp_path / "g").write_bytes(b"12")
    assert folder_size(tmp_path) == 6
    assert folder_size(tmp_path / "nope") == 0


def run_7z(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [require_binary("7z"), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def test_encrypted_archive_hides_names_and_opens_with_password(tmp_path, study):
    archive_path = tmp_path / "job_7_task_3.7z"
    with ArchiveWriter(archive_path, PASSWORD, index_text="Job 7") as archive:
        names = [archive.write(ds) for ds in study]

    assert archive_path.exists()
    assert not [p for p in all_files(tmp_path) if p.name.endswith(".tmp")]

    without_password = run_7z("l", "-p", str(archive_path))
    assert without_password.returncode != 0
    listing = without_password.stdout + without_password.stderr
    assert "PAT001" not in listing
    assert study[0].SOPInstanceUID not in listing
    assert ".dcm" not in listing
    assert b"PAT001" not in archive_path.read_bytes()

    wrong_password = run_7z("x", "-pwrong", f"-o{tmp_path / 'wrong'}", "-y", str(archive_path))
    assert wrong_password.returncode != 0

    extracted = run_7z("x", f"-p{PASSWORD}", f"-o{tmp_path / 'out'}", "-y", str(archive_path))
    assert extracted.returncode == 0, extracted.stdout + extracted.stderr
    assert (tmp_path / "out" / "INDEX.txt").read_text() == "Job 7"
    for name, ds in zip(names, study, strict=True):
        assert (tmp_path / "out" / name).read_bytes() == encode_instance(ds)
    assert names[0] == instance_relative_path(study[0]).as_posix()


def test_archive_is_replaced_on_rerun_and_skips_duplicates(tmp_path, study):
    archive_path = tmp_path / "task.7z"
    for _ in range(2):
        with ArchiveWriter(archive_path, PASSWORD) as archive:
            for ds in study + study[:2]:
                archive.write(ds)
        assert archive.written_count == 5
        assert archive.duplicate_count == 2

    listing = run_7z("l", "-slt", f"-p{PASSWORD}", str(archive_path))
    assert listing.returncode == 0
    assert listing.stdout.count("Path = ") == 1 + 5  # the archive itself + its entries


def test_failed_archive_leaves_no_file_and_keeps_an_existing_one(tmp_path, study):
    archive_path = tmp_path / "task.7z"
    with ArchiveWriter(archive_path, PASSWORD) as archive:
        archive.write(study[0])
    existing = archive_path.read_bytes()

    with pytest.raises(RuntimeError, match="fetch failed"):
        with ArchiveWriter(archive_path, PASSWORD) as archive:
            archive.write(study[1])
            raise RuntimeError("fetch failed")

    assert archive_path.read_bytes() == existing
    assert all_files(tmp_path) == [archive_path]


def test_archive_quota(tmp_path, study):
    archive_path = tmp_path / "task.7z"
    instance_size = len(encode_instance(study[0]))

    with pytest.raises(FolderQuotaExceededError, match="quota"):
        with ArchiveWriter(archive_path, PASSWORD, quota_bytes=instance_size * 2) as archive:
            for ds in study:
                archive.write(ds)

    assert all_files(tmp_path) == []


def test_archive_needs_a_password(tmp_path):
    with pytest.raises(ValueError, match="password"):
        ArchiveWriter(tmp_path / "a.7z", "")


def test_archive_streams_instances_to_disk_before_closing(tmp_path):
    instances = make_large_study(120, n_series=2, seed="stream")
    archive_path = tmp_path / "task.7z"
    uncompressed = 0

    with ArchiveWriter(archive_path, PASSWORD) as archive:
        for ds in instances:
            archive.write(ds)
            uncompressed += len(encode_instance(ds))
        (temp_file,) = tmp_path.glob(".task.7z.*.tmp")
        size_before_close = temp_file.stat().st_size

    # The 12-bit random pixels compress to roughly 3/4; most of it must already be on disk.
    assert size_before_close > uncompressed / 3
    assert archive_path.stat().st_size >= size_before_close
