"""Encoding a data set whose elements are mostly still the bytes they arrived as.

A transfer that changes instances (pseudonym, trial protocol) must encode each one again, and
pydicom's writer costs more than the change: it writes every element into a buffer of its own,
copies that buffer into the output and the output once more into the bytes it returns, so the
half megabyte of a CT image's Pixel Data is copied four times, and each of the hundred other
elements pays for a buffer object. Yet almost every element of such an instance is a
`RawDataElement` whose bytes are already what the writer would produce.

`encode_dataset` writes exactly what pydicom's ``write_dataset`` writes, byte for byte, in one
pass: the header of a raw element is packed with ``struct`` and its value referenced, not copied,
until one final ``join``; every other element (a converted or new one) is written by pydicom's own
``write_data_element``. It mirrors ``write_dataset``'s rules (group lengths left out, the
sequence delimiter after an undefined length, an explicit-VR value too long for a 16-bit length
written as UN) and hands the whole data set to pydicom where pydicom would convert every raw
element first: another transfer syntax than the one it was read in, a changed character set,
Deflate, Big Endian. `test_encoding.py` checks the equality on varied data sets.

`raw_element` turns a converted element back into a `RawDataElement` holding the bytes pydicom
would write for it, so a changed element costs no more to encode than an unchanged one (the
pseudonymizer stores its results so, see `pseudonymizer.py`).
"""

from __future__ import annotations

import functools
import struct

from pydicom import Dataset
from pydicom.charset import default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32
from pynetdicom.dsutils import create_file_meta

PIXEL_DATA = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF
_LONG_VRS = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
_IMPLICIT_HEADER = struct.Struct("<HHI")
_EXPLICIT_SHORT_HEADER = struct.Struct("<HH2sH")
_EXPLICIT_LONG_HEADER = struct.Struct("<HH2sHI")
_SEQUENCE_DELIMITER = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
_ITEM_TAG = b"\xfe\xff\x00\xe0"


def encode_dataset(ds: Dataset, is_implicit_vr: bool, is_little_endian: bool) -> bytes | None:
    """``ds`` (without file meta) encoded as pydicom's ``write_dataset`` encodes it, or None when
    only pydicom itself can (the data set would be converted as a whole, see the module notes).

    Raises:
        ValueError: where pydicom's writer raises it (an element it cannot write).
    """
    if not is_little_endian:
        return None
    if ds.original_encoding != (is_implicit_vr, True):
        return None
    if ds.original_character_set != ds._character_set:
        return None
    encodings = ds.get("SpecificCharacterSet", default_encoding)
    parts: list[bytes] = []
    append = parts.append
    elements = ds._dict
    for tag in sorted(elements):
        if tag & 0xFFFF == 0 and tag >> 16 > 6:
            continue  # group lengths are not written (PS3.5 7.2)
        element = elements[tag]
        if type(element) is RawDataElement:
            header = _raw_header(element, is_implicit_vr)
            if header is not None:
                append(header)
                append(element.value)  # type: ignore[arg-type]
                if element.length == UNDEFINED_LENGTH:
                    append(_SEQUENCE_DELIMITER)
                continue
        append(_written(ds.get_item(BaseTag(tag)), is_implicit_vr, True, encodings))
    return b"".join(parts)


def _raw_header(element: RawDataElement, implicit: bool) -> bytes | None:
    """The header `write_data_element` writes before a raw element's value, or None where
    only that function knows what to do (another encoding, an unusual element)."""
    value = element.value
    if (
        value is None
        or element.is_implicit_VR != implicit
        or not element.is_little_endian
        or element.is_buffered
    ):
        return None
    tag = element.tag
    group, number = tag >> 16, tag & 0xFFFF
    length = len(value)
    if element.length == UNDEFINED_LENGTH:
        if tag == PIXEL_DATA and not value.startswith(_ITEM_TAG):
            return None  # not encapsulated: pydicom raises its error for this
        length = UNDEFINED_LENGTH
    if implicit:
        return _IMPLICIT_HEADER.pack(group, number, length)
    vr = element.VR
    if vr is None or len(vr) != 2:
        return None
    if vr in _LONG_VRS:
        return _EXPLICIT_LONG_HEADER.pack(group, number, vr.encode(), 0, length)
    if length == UNDEFINED_LENGTH:
        return None
    if length > 0xFFFF:  # pydicom writes it as UN (PS3.5 6.2.2)
        return _EXPLICIT_LONG_HEADER.pack(group, number, b"UN", 0, length)
    return _EXPLICIT_SHORT_HEADER.pack(group, number, vr.encode(), length)


def _written(
    element: DataElement | RawDataElement, implicit: bool, little: bool, encodings
) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit
    fp.is_little_endian = little
    write_data_element(fp, element, encodings)
    return fp.getvalue()


def raw_element(element: DataElement, is_implicit_vr: bool, encodings) -> RawDataElement | None:
    """The `RawDataElement` (Little Endian) whose bytes pydicom writes for ``element`` in that
    encoding and character set (``encodings``: the SpecificCharacterSet value of its data set),
    or None for an element of undefined length whose VR has no 32-bit length field."""
    written = _written(element, is_implicit_vr, True, encodings)
    if is_implicit_vr:
        vr, start = element.VR, 8
        length = int.from_bytes(written[4:8], "little")
    else:
        vr = written[4:6].decode("ascii")  # UN where the value was too long for its VR
        if vr in _LONG_VRS:
            start, length = 12, int.from_bytes(written[8:12], "little")
        elif element.is_undefined_length:
            return None
        else:
            start, length = 8, int.from_bytes(written[6:8], "little")
    # Without the sequence delimiter that follows a value of undefined length.
    value = written[start:-8] if length == UNDEFINED_LENGTH else written[start:]
    return RawDataElement(BaseTag(element.tag), vr, length, value, 0, is_implicit_vr, True)


MEDIA_STORAGE_SOP_CLASS_UID = BaseTag(0x00020002)
MEDIA_STORAGE_SOP_INSTANCE_UID = BaseTag(0x00020003)


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> FileMetaDataset:
    """The file meta of a received instance as pynetdicom's ``create_file_meta`` makes it.

    That function sets seven elements through pydicom's attribute access, a fifth of the cost
    of receiving an instance; here the elements are raw, built once per SOP class and transfer
    syntax, and only the SOP Instance UID is new (a UI value padded to even length with NUL, as
    pydicom writes it). Raw elements are immutable; reading or setting one converts it in this
    file meta only.
    """
    meta = FileMetaDataset()
    meta._dict.update(_file_meta_template(sop_class_uid, transfer_syntax))
    meta._dict[MEDIA_STORAGE_SOP_INSTANCE_UID] = ui_element(
        MEDIA_STORAGE_SOP_INSTANCE_UID, sop_instance_uid
    )
    meta.set_original_encoding(False, True)
    return meta


def ui_element(tag: BaseTag, uid: str) -> RawDataElement:
    """A UI element (Explicit VR Little Endian) holding what pydicom writes for ``uid``: its
    characters, padded to even length with NUL."""
    value = uid.encode("latin-1")
    if len(value) % 2:
        value += b"\0"
    return RawDataElement(tag, "UI", len(value), value, 0, False, True)


@functools.lru_cache(maxsize=512)
def _file_meta_template(sop_class_uid: str, transfer_syntax: str) -> dict[BaseTag, RawDataElement]:
    built = create_file_meta(
        sop_class_uid=UID(sop_class_uid),
        sop_instance_uid=UID("1.2"),
        transfer_syntax=UID(transfer_syntax),
    )
    template = {}
    for element in built:
        if element.tag != MEDIA_STORAGE_SOP_INSTANCE_UID:
            raw = raw_element(element, False, None)
            assert raw is not None  # file meta elements have defined lengths
            template[BaseTag(element.tag)] = raw
    return template
