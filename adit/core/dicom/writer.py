"""Writing DICOM instances to folders and to encrypted 7-Zip archives.

Folder layout (one instance per file)::

    <folder>/<job folder>/<PatientID or pseudonym>/<StudyDate>-<StudyTime>-<Modalities>/
        <SeriesNumber>-<SeriesDescription>/<SOPInstanceUID>.dcm

Every path component is sanitized (no separators, no ``..``, no control characters, nothing
Windows forbids), so values from a PACS can never escape the job folder. Files are written to a
temporary name in the target directory and renamed with :func:`os.replace`, so a reader never
sees a half-written file and writing the same instance again simply replaces it (re-running a
task is harmless).

Archives (:class:`ArchiveWriter`) are 7-Zip files with AES-256 encryption of contents *and*
headers, so neither data nor file names can be read without the password. One archive is written
per call site (e.g. per task) under a temporary name and renamed into place on success, which
keeps re-runs idempotent and a crashed worker from corrupting an existing archive. py7zr
compresses each instance as it is added and writes it to disk right away; only the list of
names and the compressor's window stay in memory, never the whole study.
"""

from __future__ import annotations

import io
import os
import re
import secrets
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from types import TracebackType

import py7zr
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite

UNDEFINED = "Undefined"
MAX_COMPONENT_LENGTH = 100
_FORBIDDEN_PATH_CHARS = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
_WINDOWS_RESERVED_NAMES = {
    "CON",
    "PRN",
    "AUX",
    "NUL",
    *(f"COM{i}" for i in range(1, 10)),
    *(f"LPT{i}" for i in range(1, 10)),
}
TEMP_SUFFIX = ".tmp"


class DicomWriteError(Exception):
    """An instance could not be written (the message names the instance and the reason)."""


class FolderQuotaExceededError(DicomWriteError):
    """Writing would exceed the destination folder's quota."""


def sanitize_path_component(value: object, fallback: str = UNDEFINED) -> str:
    """Makes a value safe as one file or folder name on Linux, macOS and Windows.

    Separators, ``<>:"|?*``, control characters are replaced by ``_``; leading/trailing spaces
    and dots are removed; ``.``/``..`` and reserved Windows device names are defused;
    the result is at most 100 characters and never starts with a dot. An empty result
    becomes ``fallback``.
    """
    text = "" if value is None else str(value)
    # Leading dots would hide the entry (and "." / ".." are special); trailing ones vanish on
    # Windows.
    text = _FORBIDDEN_PATH_CHARS.sub("_", text).strip().strip(". ")
    if not text:
        text = fallback
    if text.split(".")[0].upper() in _WINDOWS_RESERVED_NAMES:
        text = f"_{text}"
    text = text[:MAX_COMPONENT_LENGTH].rstrip(". ")
    # Keep well below the common 255-byte file name limit also for multi-byte characters.
    while len(text.encode("utf-8")) > 200:
        text = text[:-1]
    return text or fallback


def job_folder_name(app_label: str, job_id: int, created: date, username: str) -> str:
    """``adit_<app label>_<job id>_<YYYYMMDD>_<username>``, sanitized."""
    return sanitize_path_component(
        f"adit_{app_label}_{job_id}_{created.strftime('%Y%m%d')}_{username}"
    )


def study_folder_name(ds: Dataset, study_modalities: Iterable[str] | None = None) -> str:
    """``<StudyDate>-<StudyTime HHMMSS>-<modalities comma-joined>``, sanitized.

    Without a StudyDate (pseudonymized without a date option: the Basic Profile empties it) the
    StudyInstanceUID takes the place of date and time, so that the studies of one patient stay
    apart; the name is built from the transformed instance, so it holds only pseudonymized
    values. Modalities come from ``study_modalities`` when given (usually the study's
    ModalitiesInStudy from the query, minus excluded ones), else from the dataset's
    ModalitiesInStudy; without either the part is left out, so that every instance of a study
    lands in the same folder.
    """
    study_date = str(ds.get("StudyDate", "") or "")
    study_time = str(ds.get("StudyTime", "") or "").split(".")[0][:6] or "NoTime"
    if not study_date:
        study_date, study_time = "NoDate", str(ds.get("StudyInstanceUID", "") or "") or "NoTime"
    if study_modalities is None:
        value = ds.get("ModalitiesInStudy", None)
        study_modalities = [value] if isinstance(value, str) else list(value or [])
    modalities = ",".join(sorted({str(m).strip().upper() for m in study_modalities if m}))
    name = f"{study_date}-{study_time}" + (f"-{modalities}" if modalities else "")
    return sanitize_path_component(name)


def series_folder_name(ds: Dataset) -> str:
    """``<SeriesNumber>-<SeriesDescription>``; without a number the SeriesInstanceUID."""
    series_number = ds.get("SeriesNumber", None)
    if series_number is None or str(series_number).strip() == "":
        return sanitize_path_component(ds.get("SeriesInstanceUID", ""), fallback="NoSeries")
    description = str(ds.get("SeriesDescription", "") or "").strip() or UNDEFINED
    return sanitize_path_component(f"{str(series_number).strip()}-{description}")


def instance_relative_path(
    ds: Dataset,
    patient_folder: str | None = None,
    study_modalities: Iterable[str] | None = None,
    create_series_subfolders: bool = True,
) -> Path:
    """The path of an instance below the job folder (see the module docstring).

    Args:
        ds: the (already transformed) instance.
        patient_folder: name of the patient folder; default: the dataset's PatientID (which is
            the pseudonym after pseudonymization).
        study_modalities: modalities for the study folder name (see :func:`study_folder_name`).
        create_series_subfolders: put each series in its own folder.

    Raises:
        DicomWriteError: if the dataset has no SOPInstanceUID.
    """
    sop_instance_uid = str(ds.get("SOPInstanceUID", "") or "").strip()
    if not sop_instance_uid:
        raise DicomWriteError("Cannot write an instance without a SOPInstanceUID")
    parts = [
        sanitize_path_component(
            patient_folder if patient_folder is not None else ds.get("PatientID", ""),
            fallback="NoPatientID",
        ),
        study_folder_name(ds, study_modalities),
    ]
    if create_series_subfolders:
        parts.append(series_folder_name(ds))
    parts.append(sanitize_path_component(sop_instance_uid) + ".dcm")
    return Path(*parts)


def encode_instance(ds: Dataset) -> bytes:
    """Encodes a dataset as a DICOM Part-10 file (keeping its transfer syntax).

    Raises:
        DicomWriteError: if pydicom cannot encode it (e.g. no transfer syntax known).
    """
    if "SOPInstanceUID" in ds and getattr(ds, "file_meta", None) is not None:
        # A changed SOPInstanceUID (pseudonymization) must be mirrored in the file meta.
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    try:
        dcmwrite(buffer, ds, enforce_file_format=True)
    except Exception as err:
        raise DicomWriteError(
            f"Cannot encode instance {ds.get('SOPInstanceUID', '?')} as a DICOM file: {err}"
        ) from err
    return buffer.getvalue()


def folder_size(path: str | Path) -> int:
    """Total size in bytes of the regular files below ``path`` (0 if it does not exist)."""
    total = 0
    for dirpath, _dirnames, filenames in os.walk(path):
        for filename in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, filename)).st_size
            except FileNotFoundError:
                pass  # removed while we walked: not ours to count
    return total


class QuotaGuard:
    """Keeps track of a folder's usage and refuses writes that would exceed its quota.

    The usage is measured once (walking the folder) and then updated with every write of this
    guard; writes of other workers in the meantime are not seen, so concurrent writers can
    overshoot by at most what they write between their measurements.
    """

    def __init__(self, folder: str | Path, quota_bytes: int | None, used_bytes: int | None = None):
        self.folder = Path(folder)
        self.quota_bytes = quota_bytes
        if quota_bytes is not None and quota_bytes < 0:
            raise ValueError(f"quota_bytes must not be negative, got {quota_bytes}")
        self.used_bytes = (
            used_bytes
            if used_bytes is not None
            else (folder_size(self.folder) if quota_bytes is not None else 0)
        )

    def check(self, additional_bytes: int, what: str) -> None:
        """Raises :class:`FolderQuotaExceededError` if ``additional_bytes`` do not fit."""
        if self.quota_bytes is None or additional_bytes <= 0:
            return
        if self.used_bytes + additional_bytes > self.quota_bytes:
            raise FolderQuotaExceededError(
                f"Writing {what} ({additional_bytes} bytes) would exceed the quota of folder "
                f"{self.folder} ({self.used_bytes} of {self.quota_bytes} bytes used)"
            )

    def add(self, delta_bytes: int) -> None:
        self.used_bytes += delta_bytes


def _write_atomically(path: Path, data: bytes, durable: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp_path = path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
    try:
        with open(temp_path, "xb") as file:
            file.write(data)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(temp_path, path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise


class FolderWriter:
    """Writes instances one by one into the folder layout of a job.

    Example:
        >>> writer = FolderWriter("/mnt/export", "adit_selective_transfer_1_20240101_alice")
        >>> for ds in instances:
        ...     writer.write(ds)
    """

    def __init__(
        self,
        folder: str | Path,
        job_folder: str,
        quota_bytes: int | None = None,
        used_bytes: int | None = None,
        create_series_subfolders: bool = True,
        durable: bool = False,
    ) -> None:
        """Creates a writer.

        Args:
            folder: the destination folder (e.g. ``DicomFolder.path``); must exist.
            job_folder: name of the job's folder inside it (sanitized again here).
            quota_bytes: the folder's quota; ``None`` = unlimited.
            used_bytes: the folder's current usage; measured when omitted and a quota is set.
            create_series_subfolders: one folder per series.
            durable: fsync every file before renaming it (slower; survives power loss).

        Raises:
            DicomWriteError: if the destination folder does not exist.
        """
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DicomWriteError(f"Destination folder {self.folder} does not exist")
        self.job_path = self.folder / sanitize_path_component(job_folder)
        self.create_series_subfolders = create_series_subfolders
        self.durable = durable
        self.quota = QuotaGuard(self.folder, quota_bytes, used_bytes)
        self.written_count = 0
        self.written_bytes = 0

    def path_for(
        self,
        ds: Dataset,
        patient_folder: str | None = None,
        study_modalities: Iterable[str] | None = None,
    ) -> Path:
        """The absolute path an instance is written to."""
        relative = instance_relative_path(
            ds, patient_folder, study_modalities, self.create_series_subfolders
        )
        path = self.job_path / relative
        # Defence in depth: sanitization already makes escaping impossible.
        if not path.resolve().is_relative_to(self.job_path.resolve()):
            raise DicomWriteError(f"Refusing to write outside of the job folder: {relative}")
        return path

    def write(
        self,
        ds: Dataset,
        patient_folder: str | None = None,
        study_modalities: Iterable[str] | None = None,
    ) -> Path:
        """Writes one instance (atomically; an existing file of the same instance is replaced).

        Returns:
            The path written.

        Raises:
            FolderQuotaExceededError: before anything is written, if it would exceed the quota.
            DicomWriteError: if the instance cannot be encoded or written.
        """
        path = self.path_for(ds, patient_folder, study_modalities)
        data = encode_instance(ds)
        try:
            previous_size = path.stat().st_size
        except FileNotFoundError:
            previous_size = 0
        growth = len(data) - previous_size
        self.quota.check(growth, f"instance {ds.get('SOPInstanceUID', '?')}")
        try:
            _write_atomically(path, data, self.durable)
        except OSError as err:
            raise DicomWriteError(
                f"Cannot write instance {ds.get('SOPInstanceUID', '?')} to {path}: {err}"
            ) from err
        self.quota.add(growth)
        self.written_count += 1
        self.written_bytes += len(data)
        return path

    def remove_stale_temp_files(self) -> int:
        """Deletes temporary files left by a crashed writer in the job folder; returns the count."""
        removed = 0
        if not self.job_path.exists():
            return 0
        for temp_file in self.job_path.rglob(f".*{TEMP_SUFFIX}"):
            if temp_file.is_file():
                temp_file.unlink(missing_ok=True)
                removed += 1
        return removed


class ArchiveWriter:
    """Writes instances one by one into a new password-protected 7-Zip archive.

    Contents and headers are AES-256 encrypted (file names are hidden without the password).
    The archive is built under a temporary name next to ``archive_path`` and renamed into place
    by :meth:`close`; :meth:`abort` (or leaving a ``with`` block with an exception) discards it.
    An existing archive of the same name is replaced, so a re-run task rewrites its archive
    instead of adding duplicates.

    Memory: each instance is encoded, compressed and written before the next one is accepted;
    only the list of names (and the LZMA2 dictionary) is held.

    Example:
        >>> with ArchiveWriter(folder / "adit_job_1_task_7.7z", password) as archive:
        ...     for ds in instances:
        ...         archive.write(ds)
    """

    def __init__(
        self,
        archive_path: str | Path,
        password: str,
        quota_bytes: int | None = None,
        used_bytes: int | None = None,
        create_series_subfolders: bool = True,
        index_text: str | None = None,
        compression_preset: int = 1,
    ) -> None:
        """Opens a new archive.

        Args:
            archive_path: where the finished archive goes; its folder must exist. Choose a name
                without patient data (it is visible without the password).
            password: the archive password (non-empty).
            quota_bytes: quota of the archive's folder; ``None`` = unlimited.
            used_bytes: the folder's current usage; measured when omitted and a quota is set.
            create_series_subfolders: one folder per series inside the archive.
            index_text: if given, added first as ``INDEX.txt``.
            compression_preset: LZMA2 preset 0–9 (1 = fast; pixel data compresses little).

        Raises:
            ValueError: on an empty password.
            DicomWriteError: if the archive's folder does not exist.
        """
        if not password:
            raise ValueError("The archive password must not be empty")
        self.archive_path = Path(archive_path)
        if not self.archive_path.parent.is_dir():
            raise DicomWriteError(f"Destination folder {self.archive_path.parent} does not exist")
        self.create_series_subfolders = create_series_subfolders
        self.quota = QuotaGuard(self.archive_path.parent, quota_bytes, used_bytes)
        self._previous_archive_size = (
            self.archive_path.stat().st_size if self.archive_path.exists() else 0
        )
        self._temp_path = self.archive_path.with_name(
            f".{self.archive_path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
        )
        self._archive: py7zr.SevenZipFile | None = py7zr.SevenZipFile(
            self._temp_path,
            "w",
            filters=[
                {"id": py7zr.FILTER_LZMA2, "preset": compression_preset},
                {"id": py7zr.FILTER_CRYPTO_AES256_SHA256},
            ],
            password=password,
            header_encryption=True,
        )
        self._names: set[str] = set()
        self._uncompressed_bytes = 0
        self.written_count = 0
        self.duplicate_count = 0
        if index_text is not None:
            index_bytes = index_text.encode("utf-8")
            self._archive.writestr(index_bytes, "INDEX.txt")
            self._uncompressed_bytes += len(index_bytes)

    def write(
        self,
        ds: Dataset,
        patient_folder: str | None = None,
        study_modalities: Iterable[str] | None = None,
    ) -> str:
        """Adds one instance; a second instance with the same path is skipped (counted).

        Returns:
            The name of the entry in the archive.

        Raises:
            FolderQuotaExceededError: if the archive would exceed the folder's quota.
            DicomWriteError: if the archive is closed or the instance cannot be encoded.
        """
        if self._archive is None:
            raise DicomWriteError(f"Archive {self.archive_path} is already closed")
        name = instance_relative_path(
            ds, patient_folder, study_modalities, self.create_series_subfolders
        ).as_posix()
        if name in self._names:
            self.duplicate_count += 1
            return name
        data = encode_instance(ds)
        # py7zr buffers output, so the file size lags behind; the uncompressed size is a safe
        # upper bound of what the archive will take.
        self.quota.check(
            self._uncompressed_bytes + len(data) - self._previous_archive_size,
            f"instance {ds.get('SOPInstanceUID', '?')} into archive {self.archive_path.name}",
        )
        self._archive.writestr(data, name)
        self._uncompressed_bytes += len(data)
        self._names.add(name)
        self.written_count += 1
        return name

    def close(self) -> Path:
        """Finishes the archive and moves it into place; returns its path."""
        if self._archive is None:
            return self.archive_path
        try:
            self._archive.close()
            self._archive = None
            os.replace(self._temp_path, self.archive_path)
        except BaseException:
            self.abort()
            raise
        return self.archive_path

    def abort(self) -> None:
        """Discards the unfinished archive (an existing archive at the target stays)."""
        if self._archive is not None:
            try:
                self._archive.close()
            except Exception:  # noqa: BLE001 - we are discarding it anyway
                pass
            self._archive = None
        self._temp_path.unlink(missing_ok=True)

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
