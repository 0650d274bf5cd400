"""`encoding.encode_dataset` writes what pydicom's writer writes, byte for byte.

Each data set is decoded from its bytes (elements raw, as a transfer receives them), some of
its elements are changed the ways a transform changes them (converted, replaced, added,
deleted), and then encoded both ways: with `encode_dataset` and with pynetdicom's `encode`
(pydicom's ``write_dataset``), in the syntax it was read in. Where only pydicom can encode
(another syntax, Big Endian, a data set built in memory), `encode_dataset` must say so (None).
"""

from __future__ import annotations

import warnings

import pytest
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)
from pynetdicom.dsutils import create_file_meta, encode, encode_file_meta

from adit.core.dicom.dimse import _decode_from, _encode_for
from adit.core.dicom.encoding import encode_dataset, file_meta, raw_element
from adit.core.dicom.testing.phi_corpus import make_phi_corpus
from adit.core.dicom.testing.synthetic import make_study
from adit.core.dicom.tests.test_pseudonymizer_raw import rich_dataset, transfer_bytes

SYNTAXES = [
    pytest.param(ImplicitVRLittleEndian, id="implicit"),
    pytest.param(ExplicitVRLittleEndian, id="explicit"),
]


def pydicom_encoding(ds: Dataset, syntax: str) -> bytes:
    encoded = encode(ds, is_implicit_vr=syntax == ImplicitVRLittleEndian, is_little_endian=True)
    assert encoded is not None
    return encoded


def undefined_lengths(ds: Dataset) -> Dataset:
    """`ds` with a sequence of undefined length whose items have undefined lengths too."""
    item = Dataset()
    item.CodeValue = "121206"
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = "Distance"
    item.is_undefined_length_sequence_item = True
    ds.ConceptNameCodeSequence = Sequence([item, Dataset()])
    ds["ConceptNameCodeSequence"].is_undefined_length = True
    ds.ConceptNameCodeSequence[1].is_undefined_length_sequence_item = True
    return ds


def varied() -> list[tuple[str, Dataset]]:
    datasets = [(f"phi-{i}", ds) for i, ds in enumerate(make_phi_corpus().datasets)]
    modalities = make_study(
        "PAT-ENC",
        series=(("CT", 1), ("MR", 1), ("US", 1), ("SR", 1), ("PR", 1)),
        compressed_series=False,
        seed="encoding",
    )
    datasets += [(f"modality-{ds.Modality}", ds) for ds in modalities]
    big = make_study("PAT-BIG", series=(("CT", 1),), compressed_series=False, rows=512, columns=512)
    datasets.append(("ct-512", big[0]))
    datasets.append(("undefined-lengths", undefined_lengths(make_phi_corpus().datasets[0])))
    return datasets


def changed(ds: Dataset) -> Dataset:
    """Changes of the kinds a transform makes: converted, replaced, new, deleted, emptied."""
    ds.PatientName  # noqa: B018 - converted, unchanged
    ds.PatientID = "NEW-ID"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = ["one", "two"]
    if "StudyDescription" in ds:
        del ds.StudyDescription
    if "AccessionNumber" in ds:
        raw = ds._dict[BaseTag(0x00080050)]
        if isinstance(raw, RawDataElement):
            ds._dict[raw.tag] = raw._replace(value=b"", length=0)
    return ds


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_same_bytes_as_pydicom(syntax):
    for label, original in varied():
        encoded = _encode_for(original, syntax)
        for change in (lambda ds: ds, changed):
            ds = change(_decode_from(encoded, syntax))
            expected = pydicom_encoding(ds, syntax)
            fast = encode_dataset(ds, syntax == ImplicitVRLittleEndian, True)
            assert fast is not None, label
            assert fast == expected, label
            if change is not changed:
                assert fast == encoded, f"{label}: unchanged data set, other bytes"


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_same_bytes_with_elements_received_as_un(syntax):
    ds = _decode_from(transfer_bytes(rich_dataset(), syntax), syntax)
    assert encode_dataset(ds, syntax == ImplicitVRLittleEndian, True) == pydicom_encoding(
        ds, syntax
    )
    ds.ReferencedImageSequence  # noqa: B018 - a sequence received as UN, now converted
    assert encode_dataset(ds, syntax == ImplicitVRLittleEndian, True) == pydicom_encoding(
        ds, syntax
    )


def test_same_bytes_for_encapsulated_pixel_data():
    ds = make_study("PAT-RLE", series=(("MR", 1),), compressed_series=True, seed="rle")[0]
    encoded = _encode_for(ds, RLELossless)
    received = _decode_from(encoded, RLELossless)
    pixel_data = received._dict[BaseTag(0x7FE00010)]
    assert isinstance(pixel_data, RawDataElement) and pixel_data.length == 0xFFFFFFFF
    assert encode_dataset(received, False, True) == encoded


def test_long_value_of_a_short_vr_is_written_as_un_like_pydicom():
    ds = _decode_from(
        _encode_for(make_phi_corpus().datasets[0], ExplicitVRLittleEndian), ExplicitVRLittleEndian
    )
    tag = BaseTag(0x00091099)
    ds._dict[tag] = RawDataElement(tag, "LO", 70000, b"A" * 70000, 0, False, True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns that it writes UN
        expected = pydicom_encoding(ds, ExplicitVRLittleEndian)
    assert encode_dataset(ds, False, True) == expected


def test_only_pydicom_encodes_what_it_would_convert():
    original = make_phi_corpus().datasets[0]
    ds = _decode_from(_encode_for(original, ExplicitVRLittleEndian), ExplicitVRLittleEndian)
    assert encode_dataset(ds, True, True) is None  # another syntax than received
    assert encode_dataset(ds, False, False) is None  # Big Endian
    assert encode_dataset(Dataset(original), False, True) is None  # built in memory
    big_endian = _decode_from(_encode_for(original, ExplicitVRBigEndian), ExplicitVRBigEndian)
    assert encode_dataset(big_endian, False, True) is None


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_raw_element_holds_what_pydicom_writes(syntax):
    # Replacing a converted element by its `raw_element` changes nothing pydicom writes.
    encoded = _encode_for(undefined_lengths(make_phi_corpus().datasets[0]), syntax)
    implicit = syntax == ImplicitVRLittleEndian
    for tag in _decode_from(encoded, syntax).keys():
        converted = _decode_from(encoded, syntax)
        element = converted[tag]
        expected = pydicom_encoding(converted, syntax)
        raw = raw_element(element, implicit, converted.get("SpecificCharacterSet"))
        assert raw is not None, element.keyword
        assert raw.length == (0xFFFFFFFF if element.is_undefined_length else len(raw.value or b""))
        converted._dict[tag] = raw
        assert pydicom_encoding(converted, syntax) == expected, element.keyword
        assert encode_dataset(converted, implicit, True) == expected, element.keyword


@pytest.mark.parametrize("instance_uid", ["1.2.840.113619.2.55.3.1", "1.2.840.113619.2.55.3.12"])
def test_file_meta_is_what_pynetdicom_creates(instance_uid):
    for syntax in (ExplicitVRLittleEndian, RLELossless):
        expected = create_file_meta(
            sop_class_uid=UID(CTImageStorage),
            sop_instance_uid=UID(instance_uid),
            transfer_syntax=UID(syntax),
        )
        for _ in range(2):  # built, then from the template
            meta = file_meta(CTImageStorage, instance_uid, syntax)
            assert encode_file_meta(meta) == encode_file_meta(expected)
            assert meta.MediaStorageSOPInstanceUID == expected.MediaStorageSOPInstanceUID
            assert meta.TransferSyntaxUID == syntax
            assert meta.original_encoding == (False, True)


def test_file_meta_elements_are_not_shared():
    first = file_meta(CTImageStorage, "1.2.3", ExplicitVRLittleEndian)
    second = file_meta(CTImageStorage, "1.2.4", ExplicitVRLittleEndian)
    first.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    first.ImplementationVersionName = "CHANGED"
    assert second.MediaStorageSOPClassUID == CTImageStorage
    assert second.ImplementationVersionName != "CHANGED"
    assert file_meta(CTImageStorage, "1.2.5", ExplicitVRLittleEndian).MediaStorageSOPClassUID == (
        CTImageStorage
    )


def test_file_meta_without_instance_uid_fails_to_encode_like_pynetdicom():
    expected = create_file_meta(
        sop_class_uid=UID(CTImageStorage),
        sop_instance_uid=UID(""),
        transfer_syntax=UID(ExplicitVRLittleEndian),
    )
    with pytest.raises(AttributeError, match="Media Storage SOP Instance UID"):
        encode_file_meta(expected)
    with pytest.raises(AttributeError, match="Media Storage SOP Instance UID"):
        encode_file_meta(file_meta(CTImageStorage, "", ExplicitVRLittleEndian))
