"""The walk decides on elements as received (raw bytes, VR UN, Implicit VR) as on decoded ones.

The pseudonymizer looks at an element's tag and VR without converting it (a transfer's
instances arrive as `RawDataElement`s, many never need decoding). For that to be safe, an
instance decoded from transfer bytes must give exactly the result of the same instance with
every element converted first: element by element and byte for byte, in Implicit and Explicit
VR, with standard elements stored as UN (whose real VR only the dictionary knows).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
from pydicom import DataElement, Dataset
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from adit.core.dicom.dimse import _decode_from, _encode_for
from adit.core.dicom.pseudonymizer import Pseudonymizer
from adit.core.dicom.testing.phi_corpus import make_phi_corpus
from adit.core.dicom.testing.synthetic import make_study

SEED = "s"
PSEUDONYM = "PSN"
TRANSFER_SYNTAXES = [
    pytest.param(ImplicitVRLittleEndian, id="implicit"),
    pytest.param(ExplicitVRLittleEndian, id="explicit"),
]
OPTION_SETS = [
    pytest.param([], id="basic"),
    pytest.param(["retain_modified_dates", "clean_descriptors"], id="modified-dates-clean"),
    pytest.param(
        ["retain_full_dates", "retain_patient_characteristics", "retain_device_identity"],
        id="full-dates-characteristics-device",
    ),
    pytest.param(
        ["retain_institution_identity", "clean_structured_content", "retain_safe_private"],
        id="institution-structured-safe-private",
    ),
]

MITRA_CREATOR = "MITRA LINKED ATTRIBUTES 1.0"


# --- data sets ----------------------------------------------------------------------------------


def implicit_sequence_bytes(*items: Dataset) -> bytes:
    """The value of a sequence of `items` encoded in Implicit VR LE with defined lengths (what a
    sequence stored with VR UN holds)."""
    value = b""
    for item in items:
        encoded = _encode_for(item, ImplicitVRLittleEndian)
        value += b"\xfe\xff\x00\xe0" + len(encoded).to_bytes(4, "little") + encoded
    return value


def rich_dataset() -> Dataset:
    """An instance with every kind of element a dicognito handler acts on, and many it skips."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1001"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1002"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1003"
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.1004"
    # Multi-valued UI.
    ds.IrradiationEventUID = ["1.2.826.0.1.3680043.8.498.1005", "1.2.826.0.1.3680043.8.498.1006"]
    ds.Modality = "CT"
    ds.Manufacturer = "ACME"

    # Patient.
    ds.PatientName = "Müller^Jörg^^Dr."
    ds.PatientID = "PID-0042"
    ds.IssuerOfPatientID = "SAINT-EXAMPLE"
    ds.OtherPatientIDs = ["OLD-1", "OLD-2"]
    ds.PatientBirthDate = "19630415"
    ds.PatientBirthTime = "101500"
    ds.PatientSex = "F"
    ds.PatientAge = "060Y"
    ds.PatientAddress = "12 Example Street, Exampletown"
    ds.RegionOfResidence = "Example County"
    ds.CountryOfResidence = "Exampleland"
    ds.PatientTelephoneNumbers = "+1 555 0100"
    ds.PatientComments = "Jörg, the neighbour's son"
    ds.AdditionalPatientHistory = "Fell off a ladder at home"
    ds.MilitaryRank = "Major"

    # Institution, request, location.
    ds.InstitutionName = "Saint Example Memorial Hospital"
    ds.InstitutionAddress = "1 Hospital Road, Exampletown"
    ds.InstitutionalDepartmentName = "Radiology"
    ds.RequestingService = "Cardiology"
    ds.CurrentPatientLocation = "Ward 3, bed 7"
    ds.AccessionNumber = "ACC-99812"
    ds.StudyID = ""  # empty ID
    ds.StationName = "CT-STATION-1"
    ds.StudyDescription = "Chest CT"
    ds.ReferringPhysicianName = ""  # empty PN
    ds.OperatorsName = ["Operator^Olivia", "Assistant^Anton"]  # multi-valued PN
    ds.PhysiciansOfRecord = "Record^Rita"

    # Dates and times: kept, shifted, ACR-NEMA style, malformed, multi-valued, empty.
    ds.StudyDate = "20240315"
    ds.StudyTime = "101500"
    ds.SeriesDate = "20240315"
    ds.SeriesTime = "101600.123"
    ds.InstanceCreationDate = "2024.03.15"
    ds.InstanceCreationTime = "10:17:00"
    ds.PerformedProcedureStepStartDate = "20241301"  # month 13
    ds.PerformedProcedureStepStartTime = "101800"
    ds.PerformedProcedureStepEndDate = "2024031"  # too short
    ds.PerformedProcedureStepEndTime = "111800"
    ds.DateOfSecondaryCapture = "notadate"
    ds.DateOfLastCalibration = ["20230101", "20230202"]
    ds.TimeOfLastCalibration = ["0800", "0915"]
    ds.DateOfLastDetectorCalibration = ""  # empty DA
    ds.FrameAcquisitionDateTime = "20240315101500.123456+0100"
    ds.AcquisitionDateTime = "20240315101500"
    ds.ContentDate = "20240315"
    ds.ContentTime = "101700"

    # Elements no handler touches.
    ds.SeriesNumber = 3
    ds.InstanceNumber = 12
    ds.SliceThickness = "1.25"
    ds.PixelSpacing = ["0.5", "0.5"]
    ds.ImagePositionPatient = ["-120.5", "-99.0", "33.75"]
    ds.BurnedInAnnotation = "NO"
    ds.DeidentificationMethod = "Previous tool"
    ds.Rows = 2
    ds.Columns = 2
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.SmallestImagePixelValue = -5  # "US or SS": resolved through PixelRepresentation
    ds.LargestImagePixelValue = 300
    ds.PixelData = b"\x01\x00\x02\x00\x03\x00\xfb\xff"

    # Nested sequences with PN, UI, DA, IDs and private elements.
    inner = Dataset()
    inner.ReferencedSOPClassUID = CTImageStorage
    inner.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.2001"
    inner.PersonName = "Inner^Isabel"
    inner.ContentDate = "20240101"
    inner.ContentTime = "080000"
    inner.ObservationDateTime = "20240101080000"
    inner.add_new(0x00091010, "LO", "ACME NESTED 1.0")
    inner.add_new(0x00091001, "PN", "Nested^Private")
    request = Dataset()
    request.AccessionNumber = "ACC-99812"
    request.RequestedProcedureID = "RP-1"
    request.ScheduledProcedureStepID = "SPS-1"
    request.RequestedProcedureDescription = "Chest CT"
    request.ScheduledPerformingPhysicianName = "Scheduled^Sam"
    request.ScheduledProcedureStepStartDate = "20240314"
    request.ScheduledProcedureStepStartTime = "090000"
    request.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1002"
    request.IssuerOfPatientID = ""  # empty issuer: left alone
    request.InstitutionName = "Other Hospital"
    request.ReferencedStudySequence = Sequence([inner])
    ds.RequestAttributesSequence = Sequence([request])
    other_id = Dataset()
    other_id.PatientID = "PID-0042-ALT"
    other_id.IssuerOfPatientID = "OTHER-HOSPITAL"
    other_id.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([other_id])
    code = Dataset()
    code.CodeValue = "18748-4"
    code.CodingSchemeDesignator = "LN"
    code.CodeMeaning = "Diagnostic Imaging Report"
    ds.ConceptNameCodeSequence = Sequence([code])
    ds.ReferencedPerformedProcedureStepSequence = Sequence([])  # empty sequence

    # Private elements: Mitra Global Patient IDs in two blocks, and a vendor block.
    ds.add_new(0x00310010, "LO", MITRA_CREATOR)
    ds.add_new(0x00311020, "LO", "GLOBAL-PID-0042")
    ds.add_new(0x00310011, "LO", MITRA_CREATOR)
    ds.add_new(0x00311120, "LO", "GLOBAL-PID-0042-B")
    ds.add_new(0x00311121, "LO", "not the global patient ID")
    ds.add_new(0x00090010, "LO", "ACME 1.0")
    ds.add_new(0x00091001, "PN", "Private^Paula")
    ds.add_new(0x00091002, "UI", "1.2.826.0.1.3680043.8.498.3001")
    ds.add_new(0x00091003, "DA", "20240102")
    ds.add_new(0x00091004, "LO", "Vendor text")
    ds.add_new(0x00091005, "SQ", Sequence([inner.copy()]))

    # Standard elements that `transfer_bytes` stores with VR UN (see UN_TAGS).
    ds.PerformingPhysicianName = "Performer^Paul"
    ds.SynchronizationFrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.40011"
    ds.AcquisitionDate = "20240316"
    ds.AcquisitionTime = "101900"
    ds.StudyArrivalDate = "20240317"
    ds.StudyArrivalTime = "102000"
    referenced_image = Dataset()
    referenced_image.ReferencedSOPClassUID = CTImageStorage
    referenced_image.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.5001"
    referenced_image.PerformingPhysicianName = "Referenced^Ron"
    ds.ReferencedImageSequence = Sequence([referenced_image])
    return ds


UN_TAGS = {
    0x00081050: "PerformingPhysicianName (PN)",
    0x00081140: "ReferencedImageSequence (SQ)",
    0x00080022: "AcquisitionDate (DA, kept)",
    0x00080032: "AcquisitionTime (TM)",
    0x00100030: "PatientBirthDate (DA)",
    0x00200200: "SynchronizationFrameOfReferenceUID (UI)",
    0x00321033: "RequestingService (LO): claimed by its tag",
    0x00321040: "StudyArrivalDate (DA)",
    0x00321041: "StudyArrivalTime (TM)",
}
"""Standard elements of `rich_dataset()` that `transfer_bytes` stores with VR UN."""


def transfer_bytes(ds: Dataset, transfer_syntax: str, un_tags=UN_TAGS) -> bytes:
    """`ds` encoded for a transfer in `transfer_syntax`; in Explicit VR the `un_tags` get VR UN
    (sequences as Implicit VR LE with defined lengths, as the standard has it for UN)."""
    encoded = _encode_for(ds, transfer_syntax)
    if transfer_syntax == ImplicitVRLittleEndian:
        return encoded  # no VR in the encoding: an element stored as UN looks the same
    received = _decode_from(encoded, transfer_syntax)
    for tag in sorted(set(un_tags) & set(received.keys())):
        if dictionary_VR(tag) == "SQ":
            value = implicit_sequence_bytes(*received[tag].value)
        else:
            raw = received._dict[tag]
            assert isinstance(raw, RawDataElement)
            value = cast(bytes, raw.value)
        received._dict[Tag(tag)] = RawDataElement(Tag(tag), "UN", len(value), value, 0, False, True)
    rewritten = _encode_for(received, transfer_syntax)
    check = _decode_from(rewritten, transfer_syntax)
    for tag in set(un_tags) & set(received.keys()):
        assert check._dict[Tag(tag)].VR == "UN", hex(tag)
    return rewritten


def synthetic_instances() -> Iterator[tuple[str, Dataset]]:
    """One instance of each modality of a synthetic study (uncompressed)."""
    datasets = make_study(
        "PAT-7731-XQ",
        "Smithfield^Harriet",
        birth_date="19630415",
        accession_number="ACC-1",
        institution_name="Saint Example Memorial Hospital",
        series=(("CT", 1), ("MR", 1), ("US", 1), ("NM", 1), ("SR", 1), ("PR", 1)),
        compressed_series=False,
        seed="filter-test",
        patient_sex="F",
    )
    for ds in datasets:
        yield str(ds.Modality), ds


# --- the comparison -----------------------------------------------------------------------------


def convert_all(ds: Dataset) -> Dataset:
    """Converts every element (recursively), as code that reads each value would."""
    for _ in ds.iterall():
        pass
    return ds


def pseudonymize_both_ways(
    encoded: bytes, transfer_syntax: str, options: list[str]
) -> tuple[Dataset, Dataset]:
    raw = _decode_from(encoded, transfer_syntax)
    converted = convert_all(_decode_from(encoded, transfer_syntax))
    assert any(isinstance(element, RawDataElement) for element in raw._dict.values())
    assert not any(isinstance(element, RawDataElement) for element in converted._dict.values())
    Pseudonymizer(seed=SEED, options=options).pseudonymize(raw, PSEUDONYM)
    Pseudonymizer(seed=SEED, options=options).pseudonymize(converted, PSEUDONYM)
    return raw, converted


def element_summary(element: DataElement) -> object:
    if element.VR == "SQ":
        return f"SQ with {len(element.value)} items"
    value = element.value
    if isinstance(value, MultiValue | list | tuple):
        value = [str(item) for item in value]
    elif value is not None and not isinstance(value, bytes | int | float):
        value = str(value)
    return (element.VR, value)


def differences(raw: Dataset, converted: Dataset, path: str = "") -> Iterator[str]:
    """Readable differences between two data sets, recursing into sequences."""
    for tag in sorted(set(raw.keys()) | set(converted.keys())):
        where = f"{path}{tag}"
        if tag not in raw:
            yield f"{where}: only in the converted's result: {element_summary(converted[tag])}"
            continue
        if tag not in converted:
            yield f"{where}: only in the raw result: {element_summary(raw[tag])}"
            continue
        a, b = raw[tag], converted[tag]
        if element_summary(a) != element_summary(b):
            yield f"{where}: raw {element_summary(a)!r} != converted {element_summary(b)!r}"
        elif a.VR == "SQ":
            for index, (item_a, item_b) in enumerate(zip(a.value, b.value, strict=True)):
                yield from differences(item_a, item_b, f"{where}[{index}].")


def assert_same_result(raw: Dataset, converted: Dataset) -> None:
    # The bytes first: comparing element by element decodes the raw result's elements.
    raw_bytes = _encode_for(raw, ExplicitVRLittleEndian)
    converted_bytes = _encode_for(converted, ExplicitVRLittleEndian)
    found = list(differences(raw, converted))
    found += [f"file meta: {line}" for line in differences(raw.file_meta, converted.file_meta)]
    assert not found, "\n".join(found)
    assert raw_bytes == converted_bytes


# --- tests --------------------------------------------------------------------------------------


def test_rich_dataset_arrives_as_built():
    # Guards the test data: the UN elements decode with their real VR, the Mitra block is there.
    ds = _decode_from(
        transfer_bytes(rich_dataset(), ExplicitVRLittleEndian), ExplicitVRLittleEndian
    )
    assert ds._dict[Tag(0x00081050)].VR == "UN"
    assert ds[0x00081050].VR == "PN"
    assert ds[0x00200200].VR == "UI"
    assert ds[0x00321040].VR == "DA"
    assert ds[0x00081140].VR == "SQ"
    assert ds.ReferencedImageSequence[0].PerformingPhysicianName == "Referenced^Ron"
    assert ds.private_block(0x0031, MITRA_CREATOR)[0x20].value == "GLOBAL-PID-0042"


@pytest.mark.parametrize("options", OPTION_SETS)
@pytest.mark.parametrize("transfer_syntax", TRANSFER_SYNTAXES)
def test_rich_dataset_gives_the_same_result_raw_and_converted(transfer_syntax, options):
    encoded = transfer_bytes(rich_dataset(), transfer_syntax)

    raw, converted = pseudonymize_both_ways(encoded, transfer_syntax, options)

    assert_same_result(raw, converted)
    # The profile acted on the elements stored as UN (not a no-op on both).
    assert raw.PatientName == PSEUDONYM
    assert 0x00081050 not in raw  # PerformingPhysicianName (PN as UN): X
    assert str(raw[0x00200200].value) != "1.2.826.0.1.3680043.8.498.40011"  # UI as UN: U
    (image,) = raw.ReferencedImageSequence  # SQ as UN, X/Z/U*: kept, its UIDs replaced
    assert image.ReferencedSOPInstanceUID != "1.2.826.0.1.3680043.8.498.5001"
    assert "PerformingPhysicianName" not in image
    assert not [element.tag for element in raw if element.tag.is_private] or (
        "retain_safe_private" in options
    )
    assert "OtherPatientIDsSequence" not in raw
    if "clean_descriptors" in options:
        assert raw.PatientComments == "***, the neighbour's son"  # "Jörg" is a name part
    else:
        assert "PatientComments" not in raw


@pytest.mark.parametrize("transfer_syntax", TRANSFER_SYNTAXES)
@pytest.mark.parametrize("modality", ["CT", "MR", "US", "NM", "SR", "PR"])
def test_synthetic_instances_give_the_same_result_raw_and_converted(modality, transfer_syntax):
    ds = dict(synthetic_instances())[modality]
    encoded = _encode_for(ds, transfer_syntax)
    for options in ([], ["retain_modified_dates"]):
        raw, converted = pseudonymize_both_ways(encoded, transfer_syntax, options)
        assert_same_result(raw, converted)
        assert raw.StudyInstanceUID != ds.StudyInstanceUID


@pytest.mark.parametrize("options", OPTION_SETS)
def test_phi_corpus_gives_the_same_result_raw_and_converted(options):
    for ds in make_phi_corpus().datasets:
        encoded = _encode_for(ds, ExplicitVRLittleEndian)
        raw, converted = pseudonymize_both_ways(encoded, ExplicitVRLittleEndian, options)
        assert_same_result(raw, converted)


def test_compressed_instance_gives_the_same_result_raw_and_converted():
    ds = make_study("PAT-RLE", series=(("MR", 1),), compressed_series=True, seed="rle")[0]
    assert ds.file_meta.TransferSyntaxUID == RLELossless
    raw, converted = pseudonymize_both_ways(_encode_for(ds, RLELossless), RLELossless, [])
    assert_same_result(raw, converted)
    assert raw.PixelData == ds.PixelData
