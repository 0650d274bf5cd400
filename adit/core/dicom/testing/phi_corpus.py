"""A "PHI-rich" synthetic study: identifying values in every place a de-identifier must look.

Built on :func:`.synthetic.make_study` and loaded with what real archives hold: private blocks
with names and MRNs (and one safe private element), nested sequences (also ones the PS3.15
table does not list), free-text descriptions and comments holding the patient's name, a person
name and a free-text element outside the table, an overlay, a Comprehensive SR with the name in
its content tree, a Secondary Capture flagged BurnedInAnnotation=YES, other-patient IDs and
names, institution, device and physician names.

`PhiCorpus.identifiers` groups the identifying strings by what a PS3.15 option may retain, so a
test can check both "nothing identifying survives" and "exactly the retained values survive"
with one scan (:func:`find_identifiers`) over datasets or over the bytes of the output files.
Every value is chosen so that it cannot occur by chance in pseudonymized output (none is one of
dicognito's dummy names, dates are not digit runs of generated UIDs).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ComprehensiveSRStorage,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    generate_uid,
)

from .synthetic import make_study

PATIENT_ID = "MRN-4711-QX"
PATIENT_NAME = "Quaxworth^Eulalia"
BIRTH_DATE = "19570823"
STUDY_DATE = "20190312"
ACCESSION = "ACC-5521-ZW"
INSTITUTION = "Zebulon Cottage Infirmary"
INSTITUTION_ADDRESS = "12 Wobbleton Lane, Glimmerford"
DEPARTMENT = "Radiology Wing Ypsilon"
STATION = "ZEBSTATION-7"
DEVICE_SERIAL = "SN-QX-88231"
REFERRING = "Brimblecombe^Ignatius"
PERFORMING = "Fenwhistle^Oswina"
OPERATOR = "Marchbanks^Perpetua"
READER = "Snodgrass^Wilbraham"
SAFE_PRIVATE_VALUE = "1000"  # a b-value in Siemens' safe private element


@dataclass
class PhiCorpus:
    """The instances and what identifies their patient, grouped by the option that keeps it."""

    datasets: list[Dataset]
    identifiers: dict[str, set[str]] = field(default_factory=dict)
    original_uids: set[str] = field(default_factory=set)

    def all_identifiers(self, *excluding: str) -> set[str]:
        return {
            value
            for group, values in self.identifiers.items()
            if group not in excluding
            for value in values
        }

    def burned_in(self) -> list[Dataset]:
        return [ds for ds in self.datasets if ds.get("BurnedInAnnotation") == "YES"]


def _name_parts(*names: str) -> set[str]:
    return {part for name in names for part in name.split("^") if part}


def _code(value: str, meaning: str, scheme: str = "DCM") -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _add_phi(ds: Dataset, patient_id: str) -> None:
    """Identifying values in the main data set, sequences, private blocks and an overlay."""
    spoken = PATIENT_NAME.replace("^", ", ")
    ds.InstitutionName = INSTITUTION
    ds.InstitutionAddress = INSTITUTION_ADDRESS
    ds.InstitutionalDepartmentName = DEPARTMENT
    ds.StationName = STATION
    ds.DeviceSerialNumber = DEVICE_SERIAL
    ds.ReferringPhysicianName = REFERRING
    ds.PerformingPhysicianName = PERFORMING
    ds.OperatorsName = OPERATOR
    ds.NameOfPhysiciansReadingStudy = READER
    ds.OtherPatientIDs = [f"{patient_id}-OLD", "OLDMRN-99031"]
    ds.OtherPatientNames = "Quaxworth-Pimm^Eulalia"
    ds.PatientBirthName = "Pimm^Eulalia"
    ds.PatientMotherBirthName = "Pimm^Hortensia"
    ds.PatientAddress = "7 Crumpet Row, Glimmerford"
    ds.PatientTelephoneNumbers = "+44 1632 960871"
    ds.PatientAge = "061Y"
    ds.PatientSex = "F"
    ds.PatientSize = "1.68"
    ds.PatientWeight = "71.5"
    ds.Allergies = f"Penicillin (reported by {spoken})"
    ds.StudyDescription = f"CT thorax {spoken} follow-up"
    ds.SeriesDescription = f"Axial {patient_id}"
    ds.ProtocolName = f"Thorax for {spoken}"
    ds.ImageComments = f"Patient {spoken}, born {BIRTH_DATE}, MRN {patient_id}"
    ds.PatientComments = f"{spoken} is claustrophobic"
    ds.AdditionalPatientHistory = f"Seen by {REFERRING.replace('^', ' ')} at {INSTITUTION}"
    ds.StudyComments = f"Accession {ACCESSION}"
    ds.InstanceCreationDate = STUDY_DATE
    ds.DateOfLastCalibration = "20190301"
    # Outside Table E.1-1: a person name and a free-text element (fail closed: removed).
    ds.SecondaryReviewerName = READER
    ds.AcquisitionDeviceProcessingCode = f"proc {PATIENT_NAME}"
    # A sequence the table does not list, with identifying elements in its items.
    equipment = Dataset()
    equipment.Manufacturer = "ADIT Synthetic"
    equipment.InstitutionName = INSTITUTION
    equipment.StationName = STATION
    equipment.OperatorsName = OPERATOR
    equipment.ContributionDescription = f"Reformatted for {spoken}"
    equipment.ContributionDateTime = f"{STUDY_DATE}101500"
    equipment.PurposeOfReferenceCodeSequence = Sequence([_code("109103", "Modifying Equipment")])
    nested_private = equipment.private_block(0x0043, "ACME NESTED", create=True)
    nested_private.add_new(0x01, "LO", patient_id)
    ds.ContributingEquipmentSequence = Sequence([equipment])
    request = Dataset()
    request.AccessionNumber = ACCESSION
    request.RequestedProcedureDescription = f"CT for {spoken}"
    request.RequestedProcedureID = f"RP-{ACCESSION}"
    ds.RequestAttributesSequence = Sequence([request])
    # Private blocks: a vendor's with PHI, and Siemens' b-value (safe per PS3.15 E.3.10).
    acme = ds.private_block(0x0011, "ACME PHI", create=True)
    acme.add_new(0x01, "PN", PATIENT_NAME)
    acme.add_new(0x02, "LO", f"secret MRN {patient_id}")
    acme.add_new(0x03, "UN", f"raw {PATIENT_NAME}".encode())
    siemens = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    siemens.add_new(0x0C, "IS", SAFE_PRIVATE_VALUE)
    siemens.add_new(0x10, "LO", f"{PATIENT_NAME} scan")
    # An overlay (its bits could spell a name) with a description naming the patient.
    ds.add_new(0x60000010, "US", 4)
    ds.add_new(0x60000011, "US", 4)
    ds.add_new(0x60000022, "LO", f"Overlay of {spoken}")
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", np.ones(1, dtype="<u2").tobytes())


def _structured_report(template: Dataset, patient_id: str) -> Dataset:
    """A Comprehensive SR whose content tree names the patient (TEXT, PNAME, dates, codes)."""
    sr = copy.deepcopy(template)
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit"):
        if keyword in sr:
            delattr(sr, keyword)
    for keyword in ("SamplesPerPixel", "PhotometricInterpretation", "PixelRepresentation"):
        if keyword in sr:
            delattr(sr, keyword)
    for keyword in ("RescaleIntercept", "RescaleSlope", "PixelSpacing", "ImageType"):
        if keyword in sr:
            delattr(sr, keyword)
    sr.SOPClassUID = ComprehensiveSRStorage
    sr.SOPInstanceUID = generate_uid(entropy_srcs=[template.SOPInstanceUID, "sr"])
    sr.SeriesInstanceUID = generate_uid(entropy_srcs=[template.SeriesInstanceUID, "sr"])
    sr.Modality = "SR"
    sr.file_meta = copy.deepcopy(template.file_meta)
    sr.file_meta.MediaStorageSOPClassUID = sr.SOPClassUID
    sr.file_meta.MediaStorageSOPInstanceUID = sr.SOPInstanceUID
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.ValueType = "CONTAINER"
    sr.ConceptNameCodeSequence = Sequence([_code("18748-4", "Diagnostic imaging report", "LN")])
    sr.ContinuityOfContent = "SEPARATE"
    sr.CompletionFlag = "COMPLETE"
    sr.VerificationFlag = "VERIFIED"
    observer = Dataset()
    observer.VerifyingObserverName = READER
    observer.VerifyingOrganization = INSTITUTION
    observer.VerificationDateTime = f"{STUDY_DATE}120000"
    sr.VerifyingObserverSequence = Sequence([observer])

    text = Dataset()
    text.RelationshipType = "CONTAINS"
    text.ValueType = "TEXT"
    text.ConceptNameCodeSequence = Sequence([_code("121071", "Finding")])
    text.TextValue = f"Nodule 6 mm in {PATIENT_NAME.replace('^', ' ')} (MRN {patient_id})"
    pname = Dataset()
    pname.RelationshipType = "HAS OBS CONTEXT"
    pname.ValueType = "PNAME"
    pname.ConceptNameCodeSequence = Sequence([_code("121008", "Person Observer Name")])
    pname.PersonName = READER
    when = Dataset()
    when.RelationshipType = "HAS OBS CONTEXT"
    when.ValueType = "DATETIME"
    when.ConceptNameCodeSequence = Sequence([_code("111526", "DateTime Started")])
    when.DateTime = f"{STUDY_DATE}101500"
    number = Dataset()
    number.RelationshipType = "CONTAINS"
    number.ValueType = "NUM"
    number.ConceptNameCodeSequence = Sequence([_code("121206", "Distance")])
    measured = Dataset()
    measured.NumericValue = "6"
    measured.MeasurementUnitsCodeSequence = Sequence([_code("mm", "millimeter", "UCUM")])
    number.MeasuredValueSequence = Sequence([measured])
    container = Dataset()
    container.RelationshipType = "CONTAINS"
    container.ValueType = "CONTAINER"
    container.ContinuityOfContent = "SEPARATE"
    container.ConceptNameCodeSequence = Sequence([_code("121070", "Findings")])
    container.ContentSequence = Sequence([text, number])
    sr.ContentSequence = Sequence([pname, when, container])
    return sr


def make_phi_corpus(seed: str = "phi-corpus", patient_id: str = PATIENT_ID) -> PhiCorpus:
    """The PHI-rich study: two CT instances, one SR, a burned-in SC and an unflagged US.

    Args:
        seed: makes UIDs and pixels deterministic (use a fresh one per upload to a shared PACS).
        patient_id: the PatientID (also hidden in descriptions, private tags and the SR).
    """
    datasets = make_study(
        patient_id,
        PATIENT_NAME,
        birth_date=BIRTH_DATE,
        study_date=STUDY_DATE,
        study_time="101500",
        accession_number=ACCESSION,
        series=(("CT", 2), ("OT", 1), ("US", 1)),
        compressed_series=False,
        institution_name=INSTITUTION,
        seed=seed,
        patient_sex="F",
    )
    for ds in datasets:
        _add_phi(ds, patient_id)
    secondary_capture, ultrasound = datasets[2], datasets[3]
    secondary_capture.SOPClassUID = SecondaryCaptureImageStorage
    secondary_capture.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    secondary_capture.BurnedInAnnotation = "YES"
    ultrasound.SOPClassUID = UltrasoundImageStorage
    ultrasound.file_meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    if "BurnedInAnnotation" in ultrasound:
        del ultrasound.BurnedInAnnotation
    datasets.insert(2, _structured_report(datasets[0], patient_id))

    corpus = PhiCorpus(datasets)
    corpus.identifiers = {
        "patient": {
            patient_id,
            f"{patient_id}-OLD",
            f"{patient_id}-ALT",
            "OLDMRN-99031",
            ACCESSION,
            BIRTH_DATE,
            "Crumpet Row",
            "1632 960871",
            "Pimm",
            "Hortensia",
            *_name_parts(PATIENT_NAME, REFERRING, PERFORMING, OPERATOR, READER),
        },
        "institution": {INSTITUTION, INSTITUTION_ADDRESS, DEPARTMENT},
        "device": {STATION, DEVICE_SERIAL},
        "dates": {STUDY_DATE, "20190301"},
    }
    for ds in datasets:
        for element in ds.iterall():
            if element.VR == "UI" and not element.keyword.endswith("ClassUID"):
                corpus.original_uids.add(str(element.value))
    return corpus


def _scan_texts(ds: Dataset) -> Iterable[str]:
    """Every value of every element as text, sequences, private blocks and file meta included."""
    datasets = [ds]
    if getattr(ds, "file_meta", None) is not None:
        datasets.append(ds.file_meta)
    for dataset in datasets:
        for element in dataset.iterall():
            if element.VR == "SQ":
                continue
            value = element.value
            if isinstance(value, bytes):
                yield value.decode("latin-1")
            elif isinstance(value, list | tuple) or element.VM > 1:
                yield "\\".join(str(v) for v in value)
            elif value is not None:
                yield str(value)


def find_identifiers(outputs: Iterable[Dataset | bytes], identifiers: Iterable[str]) -> set[str]:
    """The identifiers that occur (case-insensitively) in any output: a dataset (each element,
    sequences and private blocks included) or the bytes of an encoded file."""
    wanted = {identifier.upper(): identifier for identifier in identifiers}
    found = set()
    for output in outputs:
        if isinstance(output, bytes):
            texts: Iterable[str] = [output.decode("latin-1")]
        else:
            texts = _scan_texts(output)
        for text in texts:
            upper = text.upper()
            for key, identifier in wanted.items():
                if key in upper:
                    found.add(identifier)
    return found
