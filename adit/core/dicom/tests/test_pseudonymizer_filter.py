"""`_ElementFilter` gives exactly the result of dicognito's full `Anonymizer.anonymize()` walk.

Every instance is first encoded and decoded again in Implicit or Explicit VR Little Endian, as
in a transfer, so that its elements are `RawDataElement`s (the filter decides on those without
converting them). One copy is pseudonymized with the filter, another by the same pseudonymizer
(same dicognito anonymizer) with the filter switched off, i.e. with the full walk; both results
must be the same, element by element and byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
from dicognito.anonymizer import Anonymizer
from dicognito.element_anonymizer import ElementAnonymizer
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

from adit.core.dicom import pseudonymizer as pseudonymizer_module
from adit.core.dicom.dimse import _decode_from, _encode_for
from adit.core.dicom.pseudonymizer import Pseudonymizer, _ElementFilter
from adit.core.dicom.testing.synthetic import make_study

SEED = "s"
PSEUDONYM = "PSN"
TRANSFER_SYNTAXES = [
    pytest.param(ImplicitVRLittleEndian, id="implicit"),
    pytest.param(ExplicitVRLittleEndian, id="explicit"),
]
PSEUDONYMIZER_OPTIONS = [
    pytest.param({}, id="defaults"),
    pytest.param({"keep_elements": ()}, id="keep-nothing"),
    pytest.param({"remove_private_tags": True}, id="remove-private"),
    pytest.param(
        {"keep_elements": ("InstitutionName", "PatientAddress", "StudyDescription", "0031,1020")},
        id="keep-identifiers",
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


def pseudonymize_both_ways(
    pseudonymizer: Pseudonymizer, encoded: bytes, transfer_syntax: str, monkeypatch
) -> tuple[Dataset, Dataset]:
    """Pseudonymizes two copies decoded from `encoded`: with the filter and with dicognito's full
    walk (same pseudonymizer, same dicognito anonymizer)."""
    filtered = _decode_from(encoded, transfer_syntax)
    full = _decode_from(encoded, transfer_syntax)
    anonymizer, element_filter = pseudonymizer._anonymizer_for(str(filtered.get("PatientID", "")))
    assert element_filter is not None, "the filter is not used: nothing to compare"

    claimed: list[bool] = []
    full_walks: list[Dataset] = []
    claims, anonymize = element_filter.claims, anonymizer.anonymize

    def recording_claims(tag: int, element: DataElement | RawDataElement) -> bool:
        claimed.append(result := claims(tag, element))
        return result

    def recording_anonymize(dataset: Dataset) -> None:
        full_walks.append(dataset)
        anonymize(dataset)

    with monkeypatch.context() as patch:
        patch.setattr(element_filter, "claims", recording_claims)
        patch.setattr(anonymizer, "anonymize", recording_anonymize)
        pseudonymizer.pseudonymize(filtered, PSEUDONYM)
        # The filter was used and really left elements out, else nothing would be compared.
        assert not full_walks
        assert True in claimed and False in claimed
        claimed.clear()
        patch.setattr(pseudonymizer, "_anonymizer_for", lambda _patient_id: (anonymizer, None))
        pseudonymizer.pseudonymize(full, PSEUDONYM)
        assert len(full_walks) == 1 and full_walks[0] is full and not claimed
    return filtered, full


def element_summary(element: DataElement) -> object:
    if element.VR == "SQ":
        return f"SQ with {len(element.value)} items"
    value = element.value
    if isinstance(value, MultiValue | list | tuple):
        value = [str(item) for item in value]
    elif value is not None and not isinstance(value, bytes | int | float):
        value = str(value)
    return (element.VR, value)


def differences(filtered: Dataset, full: Dataset, path: str = "") -> Iterator[str]:
    """Readable differences between two data sets, recursing into sequences."""
    for tag in sorted(set(filtered.keys()) | set(full.keys())):
        where = f"{path}{tag}"
        if tag not in filtered:
            yield f"{where}: only in the full walk's result: {element_summary(full[tag])}"
            continue
        if tag not in full:
            yield f"{where}: only in the filtered result: {element_summary(filtered[tag])}"
            continue
        a, b = filtered[tag], full[tag]
        if element_summary(a) != element_summary(b):
            yield f"{where}: filtered {element_summary(a)!r} != full {element_summary(b)!r}"
        elif a.VR == "SQ":
            for index, (item_a, item_b) in enumerate(zip(a.value, b.value, strict=True)):
                yield from differences(item_a, item_b, f"{where}[{index}].")


def assert_same_result(filtered: Dataset, full: Dataset) -> None:
    # The bytes first: comparing element by element decodes the filtered result's raw elements.
    filtered_bytes = _encode_for(filtered, ExplicitVRLittleEndian)
    full_bytes = _encode_for(full, ExplicitVRLittleEndian)
    found = list(differences(filtered, full))
    found += [f"file meta: {line}" for line in differences(filtered.file_meta, full.file_meta)]
    assert not found, "\n".join(found)
    assert filtered_bytes == full_bytes


def check_same_as_full_walk(
    encoded: bytes, transfer_syntax: str, monkeypatch, **options
) -> Dataset:
    """Asserts that both ways give the same result; returns the filtered one."""
    pseudonymizer = Pseudonymizer(seed=SEED, **options)
    filtered, full = pseudonymize_both_ways(pseudonymizer, encoded, transfer_syntax, monkeypatch)
    assert_same_result(filtered, full)
    return filtered


def value_of(ds: Dataset, tag: int) -> str:
    value = ds[tag].value
    return value.decode() if isinstance(value, bytes) else str(value)


# --- tests --------------------------------------------------------------------------------------


def test_rich_dataset_arrives_as_built():
    # Guards the test data: the UN elements decode with their real VR, the Mitra block is there.
    ds = _decode_from(
        transfer_bytes(rich_dataset(), ExplicitVRLittleEndian), ExplicitVRLittleEndian
    )
    assert ds._dict[Tag(0x00081050)].VR == "UN"
    assert ds[0x00081050].VR == "PN"
    assert ds[0x00081050].value == "Performer^Paul"
    assert ds[0x00200200].VR == "UI"
    assert ds[0x00321040].VR == "DA"
    assert ds[0x00081140].VR == "SQ"
    assert ds.ReferencedImageSequence[0].PerformingPhysicianName == "Referenced^Ron"
    assert ds.private_block(0x0031, MITRA_CREATOR)[0x20].value == "GLOBAL-PID-0042"
    assert ds.RequestAttributesSequence[0].ReferencedStudySequence[0].PersonName == "Inner^Isabel"


@pytest.mark.parametrize("options", PSEUDONYMIZER_OPTIONS)
@pytest.mark.parametrize("transfer_syntax", TRANSFER_SYNTAXES)
def test_rich_dataset_gives_the_same_result_as_the_full_walk(transfer_syntax, options, monkeypatch):
    encoded = transfer_bytes(rich_dataset(), transfer_syntax)
    filtered = check_same_as_full_walk(encoded, transfer_syntax, monkeypatch, **options)
    # The pseudonymization did act on elements the filter had to offer (not a no-op on both).
    assert filtered.PatientName == PSEUDONYM
    assert "PatientComments" not in filtered
    assert "PatientTelephoneNumbers" not in filtered
    assert filtered.RequestingService == ""
    assert filtered.CurrentPatientLocation == ""
    assert filtered.IssuerOfPatientID == "DICOGNITO"
    assert filtered.OtherPatientIDs != ["OLD-1", "OLD-2"]
    assert filtered.InstitutionalDepartmentName != "Radiology"
    assert filtered.SOPInstanceUID != "1.2.826.0.1.3680043.8.498.1001"
    assert value_of(filtered, 0x00081050) != "Performer^Paul"  # the PN stored as UN
    assert value_of(filtered, 0x00200200) != "1.2.826.0.1.3680043.8.498.40011"  # UI stored as UN
    assert filtered.ReferencedImageSequence[0].PerformingPhysicianName != "Referenced^Ron"
    assert filtered.PerformedProcedureStepStartDate == ""  # malformed: blanked with its time
    assert filtered.PerformedProcedureStepStartTime == ""
    request = filtered.RequestAttributesSequence[0]
    assert request.ScheduledPerformingPhysicianName != "Scheduled^Sam"
    assert request.ReferencedStudySequence[0].PersonName != "Inner^Isabel"
    kept = options.get("keep_elements", ())
    assert (filtered.InstitutionName == "Saint Example Memorial Hospital") == (
        "InstitutionName" in kept
    )
    assert (filtered.PatientAddress == "12 Example Street, Exampletown") == (
        "PatientAddress" in kept
    )


@pytest.mark.parametrize("transfer_syntax", TRANSFER_SYNTAXES)
def test_mitra_global_patient_ids_are_replaced_as_by_the_full_walk(transfer_syntax, monkeypatch):
    encoded = transfer_bytes(rich_dataset(), transfer_syntax)
    filtered = check_same_as_full_walk(encoded, transfer_syntax, monkeypatch)
    assert value_of(filtered, 0x00311020) != "GLOBAL-PID-0042"
    assert value_of(filtered, 0x00311120) != "GLOBAL-PID-0042-B"
    # The element next to it in the same block is not the Global Patient ID: unchanged.
    assert value_of(filtered, 0x00311121).rstrip() == "not the global patient ID"


@pytest.mark.parametrize("transfer_syntax", TRANSFER_SYNTAXES)
@pytest.mark.parametrize("modality", ["CT", "MR", "US", "NM", "SR", "PR"])
def test_synthetic_instances_give_the_same_result_as_the_full_walk(
    modality, transfer_syntax, monkeypatch
):
    ds = dict(synthetic_instances())[modality]
    encoded = _encode_for(ds, transfer_syntax)
    filtered = check_same_as_full_walk(encoded, transfer_syntax, monkeypatch)
    assert filtered.StudyInstanceUID != ds.StudyInstanceUID
    filtered = check_same_as_full_walk(encoded, transfer_syntax, monkeypatch, keep_elements=())
    assert filtered.StudyDate != ds.StudyDate


def test_compressed_instance_gives_the_same_result_as_the_full_walk(monkeypatch):
    ds = make_study("PAT-RLE", series=(("MR", 1),), compressed_series=True, seed="rle")[0]
    assert ds.file_meta.TransferSyntaxUID == RLELossless
    check_same_as_full_walk(_encode_for(ds, RLELossless), RLELossless, monkeypatch)


def test_same_result_for_instances_of_several_patients_with_one_pseudonymizer(monkeypatch):
    # One pseudonymizer caches an anonymizer (and its filter) per patient.
    pseudonymizer = Pseudonymizer(seed=SEED)
    first = make_study("PAT-A", series=(("CT", 2),), compressed_series=False, seed="a")
    second = make_study("PAT-B", series=(("MR", 2),), compressed_series=False, seed="b")
    for ds in [*first, rich_dataset(), *second]:
        for transfer_syntax in (ImplicitVRLittleEndian, ExplicitVRLittleEndian):
            encoded = transfer_bytes(ds, transfer_syntax)
            filtered, full = pseudonymize_both_ways(
                pseudonymizer, encoded, transfer_syntax, monkeypatch
            )
            assert_same_result(filtered, full)
    assert set(pseudonymizer._anonymizers) == {"PAT-A", "PAT-B", "PID-0042"}


def test_same_tag_with_another_vr_in_the_next_instance_gives_the_same_result(monkeypatch):
    # A private PN arrives without its VR in Implicit VR (pydicom makes it UN: no handler takes
    # it) and as PN in Explicit VR (the PN handler takes it). One pseudonymizer, one patient:
    # what the filter learned from one instance must not decide for the next.
    pseudonymizer = Pseudonymizer(seed=SEED)
    results = []
    for transfer_syntax in (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        encoded = transfer_bytes(rich_dataset(), transfer_syntax)
        filtered, full = pseudonymize_both_ways(
            pseudonymizer, encoded, transfer_syntax, monkeypatch
        )
        assert_same_result(filtered, full)
        results.append(filtered[0x00091001])
    assert [element.VR for element in results] == ["UN", "PN", "UN"]
    assert results[0].value == b"Private^Paula "
    assert results[1].value != "Private^Paula"


def test_untouched_elements_keep_their_bytes_and_equal_the_full_walks_values(monkeypatch):
    # The one intended difference: an element no handler claims is written again as read, so a
    # value with surplus padding keeps it; the full walk decodes it and writes it normalized.
    # Their values are the same. An element stored as UN is converted like in the full walk
    # (pydicom gives it the dictionary's VR).
    ds = rich_dataset()
    ds.Manufacturer = "ACME  "  # decodes as "ACME"
    ds.ImageComments = "Called Jörg   "  # claimed by its tag (removed): no difference
    un_tags = {0x00081030: "StudyDescription (LO): no handler claims it"}
    encoded = transfer_bytes(ds, ExplicitVRLittleEndian, un_tags=un_tags)
    filtered, full = pseudonymize_both_ways(
        Pseudonymizer(seed=SEED), encoded, ExplicitVRLittleEndian, monkeypatch
    )

    written = _decode_from(_encode_for(filtered, ExplicitVRLittleEndian), ExplicitVRLittleEndian)
    assert written._dict[Tag(0x00080070)].value == b"ACME  "
    assert written._dict[Tag(0x00081030)].VR == "LO"
    assert written._dict[Tag(0x00081030)].value == b"Chest CT"
    full_written = _decode_from(_encode_for(full, ExplicitVRLittleEndian), ExplicitVRLittleEndian)
    assert full_written._dict[Tag(0x00080070)].value == b"ACME"
    assert full_written._dict[Tag(0x00081030)].VR == "LO"

    assert not list(differences(filtered, full))
    assert "ImageComments" not in filtered


def test_unknown_handler_makes_for_anonymizer_return_none():
    anonymizer = Anonymizer(seed="x")
    assert _ElementFilter.for_anonymizer(anonymizer) is not None

    class DoesNothing(ElementAnonymizer):
        def __call__(self, dataset: Dataset, data_element: DataElement) -> bool:
            return False

        def describe_actions(self) -> Iterator[str]:
            yield "nothing"

    anonymizer.add_element_handler(DoesNothing())
    assert _ElementFilter.for_anonymizer(anonymizer) is None


@pytest.mark.parametrize("transfer_syntax", TRANSFER_SYNTAXES)
def test_pseudonymizer_with_an_unknown_handler_offers_it_every_element(
    transfer_syntax, monkeypatch
):
    # A handler that acts on an element no known handler claims (a CS) must still get it.
    seen: set[int] = set()

    class BodyPartReplacer(ElementAnonymizer):
        def __call__(self, dataset: Dataset, data_element: DataElement) -> bool:
            seen.add(int(data_element.tag))
            if data_element.keyword == "BodyPartExamined":
                data_element.value = "REDACTED"
                return True
            return False

        def describe_actions(self) -> Iterator[str]:
            yield "Replace BodyPartExamined"

    class AnonymizerWithExtraHandler(Anonymizer):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.add_element_handler(BodyPartReplacer())

    monkeypatch.setattr(pseudonymizer_module, "Anonymizer", AnonymizerWithExtraHandler)
    ds = dict(synthetic_instances())["CT"]
    assert ds.BodyPartExamined == "CHEST"
    received = _decode_from(_encode_for(ds, transfer_syntax), transfer_syntax)

    pseudonymizer = Pseudonymizer(seed=SEED)
    pseudonymizer.pseudonymize(received, PSEUDONYM)

    assert pseudonymizer._anonymizer_for(str(ds.PatientID))[1] is None
    assert received.BodyPartExamined == "REDACTED"
    assert {0x00180015, 0x00280010, 0x7FE00010} <= seen  # BodyPartExamined, Rows, PixelData


def test_filter_leaves_out_elements_no_handler_acts_on():
    # Without this the comparisons above would also pass for a filter that claims everything.
    element_filter = _ElementFilter.for_anonymizer(Anonymizer(seed="x"))
    assert element_filter is not None
    for transfer_syntax in (ImplicitVRLittleEndian, ExplicitVRLittleEndian):
        ds = _decode_from(transfer_bytes(rich_dataset(), transfer_syntax), transfer_syntax)
        claimed = {tag for tag, element in ds._dict.items() if element_filter.claims(tag, element)}
        # CS, DS, IS, US, OW; StudyDescription even when stored as UN.
        for tag in (0x00080060, 0x00180050, 0x00200013, 0x00280010, 0x7FE00010, 0x00081030):
            assert tag not in claimed, (transfer_syntax, hex(tag))
        # PN, UI, DA, SQ (also as UN or without VR), claimed tags, private elements.
        for tag in (0x00081050, 0x00200200, 0x00321040, 0x00081140, 0x00321033, 0x00311020):
            assert tag in claimed, (transfer_syntax, hex(tag))


@pytest.mark.parametrize(
    "transfer_syntax",
    [ImplicitVRLittleEndian, ExplicitVRLittleEndian],
    ids=["implicit", "explicit"],
)
def test_instances_of_one_study_reuse_remembered_replacements_with_the_same_result(
    transfer_syntax,
):
    study = make_study("STUDY-PAT", series=(("CT", 4), ("MR", 3)), compressed_series=False)
    # Names are replaced by value and the patient's sex: the same name with another sex (or
    # none, or an unusual value) must not get the remembered replacement.
    for ds, sex in zip(study, ["F", "F", "M", None, "O", "F", "M"], strict=True):
        if sex is None:
            del ds.PatientSex
        else:
            ds.PatientSex = sex
        ds.ReferringPhysicianName = "Same^Doctor"
    encoded = [_encode_for(ds, transfer_syntax) for ds in study]
    with_memory = Pseudonymizer(seed=SEED)
    full_walk = Pseudonymizer(seed=SEED)
    anonymizer, _ = full_walk._anonymizer_for("STUDY-PAT")
    full_walk._anonymizers["STUDY-PAT"] = (anonymizer, None)

    results, study_uid_raw = [], []
    for data in encoded:
        filtered = _decode_from(data, transfer_syntax)
        full = _decode_from(data, transfer_syntax)
        with_memory.pseudonymize(filtered, PSEUDONYM)
        full_walk.pseudonymize(full, PSEUDONYM)
        # Before comparing, which converts every element.
        study_uid_raw.append(type(filtered._dict[Tag(0x0020000D)]) is RawDataElement)
        assert_same_result(filtered, full)
        results.append(filtered)

    # From the second instance on, the study's UID came from memory: still raw, not converted.
    assert study_uid_raw == [False] + [True] * (len(study) - 1)
    assert len({value_of(ds, 0x0020000D) for ds in results}) == 1
    assert len({value_of(ds, 0x00080018) for ds in results}) == len(study)  # SOP Instance UIDs
    names = [value_of(ds, 0x00080090) for ds in results]  # ReferringPhysicianName
    assert names[0] == names[1] == names[5] and names[2] == names[6]
    assert len({names[0], names[2], names[3]}) == 3
