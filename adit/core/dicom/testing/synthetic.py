"""Synthetic DICOM studies for tests, demos and benchmarks.

Every instance is a complete Part-10 dataset (file meta included) with a SOP class that matches
its modality, small pixel data, and a realistic set of identifying attributes, some of them
inside nested sequences, so that pseudonymization tests can look for residual identifiers.

With ``seed`` given, the output is fully deterministic (UIDs, pixel values, everything); without
it, UIDs are random and unique.

Example:
    >>> datasets = make_study("PAT001", "Doe^Jane", series=(("CT", 4), ("MR", 2)))
    >>> write_study(datasets, tmp_path)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    BasicTextSRStorage,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    GrayscaleSoftcopyPresentationStateStorage,
    MRImageStorage,
    NuclearMedicineImageStorage,
    PositronEmissionTomographyImageStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    generate_uid,
)

IMAGE_SOP_CLASSES: dict[str, UID] = {
    "CT": CTImageStorage,
    "MR": MRImageStorage,
    "CR": ComputedRadiographyImageStorage,
    "DX": DigitalXRayImageStorageForPresentation,
    "US": UltrasoundImageStorage,
    "NM": NuclearMedicineImageStorage,
    "PT": PositronEmissionTomographyImageStorage,
    "OT": SecondaryCaptureImageStorage,
}
"""SOP class of the image instances generated for each modality (others get Secondary Capture)."""

NON_IMAGE_SOP_CLASSES: dict[str, UID] = {
    "SR": BasicTextSRStorage,
    "PR": GrayscaleSoftcopyPresentationStateStorage,
}
"""SOP class of the non-image instances generated for these modalities (no pixel data)."""

# Modalities with a patient coordinate system (frame of reference, image plane module).
_CROSS_SECTIONAL = {"CT", "MR", "PT", "NM"}


def sop_class_for_modality(modality: str) -> UID:
    """Returns the storage SOP class used for generated instances of ``modality``."""
    modality = modality.upper()
    return NON_IMAGE_SOP_CLASSES.get(modality) or IMAGE_SOP_CLASSES.get(
        modality, SecondaryCaptureImageStorage
    )


class _UidFactory:
    """Creates UIDs: random when unseeded, derived from the seed and a name when seeded."""

    def __init__(self, seed: str | int | None) -> None:
        self._seed = None if seed is None else str(seed)

    def __call__(self, *names: object) -> UID:
        if self._seed is None:
            return generate_uid()
        return generate_uid(entropy_srcs=[self._seed, *(str(name) for name in names)])


def _rng(seed: str | int | None, *names: object) -> np.random.Generator:
    if seed is None:
        return np.random.default_rng()
    digest = hashlib.sha256("\x00".join([str(seed), *map(str, names)]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def make_study(
    patient_id: str,
    patient_name: str = "Doe^John",
    birth_date: str = "19700101",
    study_date: str = "20240101",
    study_time: str = "120000",
    accession_number: str | None = None,
    study_description: str = "Synthetic Study",
    series: Sequence[tuple[str, int]] = (("CT", 5), ("MR", 3)),
    compressed_series: bool = True,
    institution_name: str = "Example Hospital",
    seed: str | int | None = None,
    study_instance_uid: str | None = None,
    patient_sex: str = "O",
    rows: int = 16,
    columns: int = 16,
) -> list[Dataset]:
    """Creates the instances of one synthetic study.

    Args:
        patient_id: PatientID of every instance.
        patient_name: PatientName (DICOM person name, e.g. ``Doe^John``).
        birth_date: PatientBirthDate (``YYYYMMDD``).
        study_date: StudyDate (``YYYYMMDD``); series, acquisition and content dates follow it.
        study_time: StudyTime (``HHMMSS``).
        accession_number: AccessionNumber; derived from the patient ID when omitted.
        study_description: StudyDescription.
        series: ``(modality, number of instances)`` per series, in series-number order.
            Modalities SR and PR produce non-image instances (no pixel data).
        compressed_series: store the last series with RLE Lossless (if it is an image series).
        institution_name: InstitutionName.
        seed: makes the output deterministic (UIDs, pixel data); ``None`` = random UIDs.
        study_instance_uid: use this StudyInstanceUID instead of generating one.
        patient_sex: PatientSex (``M``, ``F`` or ``O``).
        rows: image height in pixels.
        columns: image width in pixels.

    Returns:
        The datasets, series by series, instances in InstanceNumber order.

    Raises:
        ValueError: if ``series`` is empty or a series has fewer than one instance.
    """
    if not series:
        raise ValueError("make_study: 'series' must name at least one (modality, count) pair")
    for modality, count in series:
        if count < 1:
            raise ValueError(f"make_study: series {modality!r} needs at least 1 instance")

    uid = _UidFactory(seed)
    study_uid = UID(study_instance_uid) if study_instance_uid else uid(patient_id, "study")
    if accession_number is None:
        accession_number = f"ACC{_short_hash(patient_id, study_uid)}"
    frame_of_reference_uid = uid(patient_id, study_uid, "frame-of-reference")
    modalities_in_study = sorted({modality.upper() for modality, _ in series})

    datasets: list[Dataset] = []
    for series_index, (modality, count) in enumerate(series):
        modality = modality.upper()
        series_number = series_index + 1
        series_uid = uid(patient_id, study_uid, "series", series_number)
        compress = compressed_series and series_index == len(series) - 1
        series_time = _add_minutes(study_time, series_index)
        for instance_index in range(count):
            instance_number = instance_index + 1
            ds = Dataset()
            _add_patient(ds, patient_id, patient_name, birth_date, patient_sex)
            _add_study(
                ds,
                study_uid,
                study_date,
                study_time,
                accession_number,
                study_description,
                institution_name,
                modalities_in_study,
            )
            ds.Modality = modality
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = series_number
            ds.SeriesDescription = f"{modality} series {series_number}"
            ds.SeriesDate = study_date
            ds.SeriesTime = series_time
            ds.ProtocolName = f"Synthetic {modality}"
            ds.BodyPartExamined = "CHEST"
            ds.OperatorsName = "Operator^Olivia"
            ds.PerformingPhysicianName = "Performer^Paul"
            ds.StationName = "SYNTH-STATION-1"
            ds.Manufacturer = "ADIT Synthetic"
            ds.DeviceSerialNumber = f"SN-{_short_hash(institution_name)}"

            ds.SOPClassUID = sop_class_for_modality(modality)
            ds.SOPInstanceUID = uid(patient_id, series_uid, "instance", instance_number)
            ds.InstanceNumber = instance_number
            ds.InstanceCreationDate = study_date
            ds.InstanceCreationTime = series_time
            ds.ContentDate = study_date
            ds.ContentTime = series_time
            ds.AcquisitionDate = study_date
            ds.AcquisitionTime = series_time
            ds.AcquisitionDateTime = f"{study_date}{series_time}"
            ds.SpecificCharacterSet = "ISO_IR 100"

            if modality in NON_IMAGE_SOP_CLASSES:
                _add_non_image_content(ds, modality, patient_name)
            else:
                if modality in _CROSS_SECTIONAL:
                    _add_image_plane(ds, frame_of_reference_uid, instance_index)
                _add_pixels(ds, rows, columns, _rng(seed, series_uid, instance_number))

            ds.file_meta = _file_meta(ds)
            if compress and "PixelData" in ds:
                ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            datasets.append(ds)
    return datasets


def make_large_study(
    n_instances: int = 500,
    patient_id: str = "BENCH0001",
    patient_name: str = "Bench^Mark",
    n_series: int = 5,
    modality: str = "CT",
    rows: int = 64,
    columns: int = 64,
    compressed_series: bool = False,
    seed: str | int | None = "adit-benchmark",
    **study_kwargs,
) -> list[Dataset]:
    """Creates one study with ``n_instances`` instances spread evenly over ``n_series`` series.

    Meant for benchmarks: 500 instances of 64x64 pixels take about 4 MB of pixel data.
    Further keyword arguments are passed on to :func:`make_study`.
    """
    if n_instances < 1:
        raise ValueError("make_large_study: 'n_instances' must be at least 1")
    n_series = max(1, min(n_series, n_instances))
    base, extra = divmod(n_instances, n_series)
    series = tuple((modality, base + (1 if i < extra else 0)) for i in range(n_series))
    return make_study(
        patient_id,
        patient_name,
        series=series,
        compressed_series=compressed_series,
        seed=seed,
        rows=rows,
        columns=columns,
        **study_kwargs,
    )


def write_study(datasets: Iterable[Dataset], folder: str | Path) -> list[Path]:
    """Writes the datasets as Part-10 files ``<folder>/<SOPInstanceUID>.dcm``.

    Returns:
        The paths written, in the order of ``datasets``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for ds in datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def iter_identifying_values(
    patient_id: str,
    patient_name: str,
    birth_date: str,
    accession_number: str,
    institution_name: str,
) -> Iterator[str]:
    """Yields the identifying strings a residual-identifier check should look for."""
    yield patient_id
    yield patient_name
    for part in patient_name.split("^"):
        if len(part) >= 3:
            yield part
    yield birth_date
    yield accession_number
    yield institution_name


def _short_hash(*parts: object) -> str:
    return hashlib.sha256("\x00".join(map(str, parts)).encode()).hexdigest()[:8].upper()


def _add_minutes(hhmmss: str, minutes: int) -> str:
    hours, mins, secs = int(hhmmss[0:2]), int(hhmmss[2:4]), int(hhmmss[4:6] or 0)
    total = (hours * 60 + mins + minutes) % (24 * 60)
    return f"{total // 60:02d}{total % 60:02d}{secs:02d}"


def _add_patient(ds: Dataset, patient_id: str, name: str, birth_date: str, sex: str) -> None:
    ds.PatientName = name
    ds.PatientID = patient_id
    ds.IssuerOfPatientID = "EXAMPLE-HOSPITAL"
    ds.PatientBirthDate = birth_date
    ds.PatientSex = sex
    ds.OtherPatientIDs = f"{patient_id}-OLD"
    other_id = Dataset()
    other_id.PatientID = f"{patient_id}-ALT"
    other_id.IssuerOfPatientID = "OTHER-HOSPITAL"
    other_id.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = DicomSequence([other_id])
    ds.PatientAddress = "1 Example Street, Exampletown"
    ds.PatientTelephoneNumbers = "+1 555 0100"


def _add_study(
    ds: Dataset,
    study_uid: UID,
    study_date: str,
    study_time: str,
    accession_number: str,
    description: str,
    institution_name: str,
    modalities_in_study: list[str],
) -> None:
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.StudyID = "1"
    ds.AccessionNumber = accession_number
    ds.StudyDescription = description
    ds.ReferringPhysicianName = "Referrer^Rita"
    ds.InstitutionName = institution_name
    ds.InstitutionAddress = "1 Hospital Road, Exampletown"
    ds.InstitutionalDepartmentName = "Radiology"
    request = Dataset()
    request.AccessionNumber = accession_number
    request.RequestedProcedureID = f"RP-{accession_number}"
    request.ScheduledProcedureStepID = f"SPS-{accession_number}"
    request.RequestedProcedureDescription = description
    ds.RequestAttributesSequence = DicomSequence([request])
    # Kept here on purpose although C-FIND usually only returns it: some archives store it.
    ds.ModalitiesInStudy = modalities_in_study


def _add_image_plane(ds: Dataset, frame_of_reference_uid: UID, index: int) -> None:
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = [0.0, 0.0, float(index)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [1.0, 1.0]
    ds.SliceThickness = 1.0
    ds.SliceLocation = float(index)


def _add_pixels(ds: Dataset, rows: int, columns: int, rng: np.random.Generator) -> None:
    pixels = rng.integers(0, 4096, size=(rows, columns), dtype=np.uint16)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    if ds.Modality == "CT":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.KVP = 120
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY"]


def _add_non_image_content(ds: Dataset, modality: str, patient_name: str) -> None:
    if modality == "SR":
        ds.ValueType = "CONTAINER"
        ds.ContinuityOfContent = "SEPARATE"
        ds.CompletionFlag = "COMPLETE"
        ds.VerificationFlag = "UNVERIFIED"
        concept = Dataset()
        concept.CodeValue = "18748-4"
        concept.CodingSchemeDesignator = "LN"
        concept.CodeMeaning = "Diagnostic Imaging Report"
        ds.ConceptNameCodeSequence = DicomSequence([concept])
        observer = Dataset()
        observer.PersonName = "Reader^Rob"
        ds.VerifyingObserverSequence = DicomSequence([observer])
    else:  # PR
        ds.ContentLabel = "SYNTHETIC"
        ds.ContentDescription = "Synthetic presentation state"
        ds.ContentCreatorName = "Creator^Carl"
        ds.PresentationCreationDate = ds.StudyDate
        ds.PresentationCreationTime = ds.StudyTime


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "ADIT_SYNTHETIC"
    return meta
