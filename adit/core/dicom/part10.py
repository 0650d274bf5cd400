"""Instances as Part-10 files (PS3.10 7.1) made from the bytes their data sets arrived as.

An instance relayed unchanged needs no Python object of its data set: a file is the preamble,
``DICM``, a File Meta Information group written anew from three UIDs, and the data set's bytes
as the peer sent them. `EncodedInstance` is such an instance: what a C-STORE sub-operation of a
C-GET carries (SOP Class and SOP Instance UID from its command, the transfer syntax of its
presentation context, the data set) once the receiving side has checked that the data set is
whole and is the instance the command names (`DimseConnector.send_c_get_encoded`). A WADO-RS
retrieve that changes nothing sends it on without ever decoding it: decoding a CT image into
a pydicom `Dataset` cost about a third of a millisecond, the largest share of relaying it.

`file_meta_bytes` writes the group directly; pydicom would build and encode a data set for it,
about 0.3 ms per instance.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

PREAMBLE = b"\0" * 128 + b"DICM"


@dataclass(frozen=True, slots=True)
class EncodedInstance:
    """One received instance, not decoded: its identity and its data set's bytes.

    The implementation UID and version written into its file meta are pynetdicom's, the ones
    a decoded instance received by C-GET carries (`encoding.file_meta`), so both paths write
    the same file.
    """

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    data_set: bytes | memoryview  # a view of the PDU it arrived in, if it came in one

    def part10_pieces(self) -> tuple[bytes, bytes | memoryview]:
        """The Part-10 file as (preamble and file meta, data set): joined by the caller, so
        that the data set is copied once, into what goes out."""
        header = file_meta_bytes(
            self.sop_class_uid,
            self.sop_instance_uid,
            self.transfer_syntax_uid,
            PYNETDICOM_IMPLEMENTATION_UID,
            PYNETDICOM_IMPLEMENTATION_VERSION,
        )
        return header, self.data_set

    def part10(self) -> bytes:
        return b"".join(self.part10_pieces())


def file_meta_bytes(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    implementation_class_uid: str,
    implementation_version_name: str = "",
    source_ae_title: str = "",
) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information of one instance: the same bytes as
    pydicom's `write_file_meta_info` for these elements (a test compares them). The receiver's
    spool names the AE an instance came from (Source Application Entity Title)."""
    elements = [
        _explicit_long(0x0001, b"OB", b"\x00\x01"),
        _explicit_short(0x0002, b"UI", _ui(sop_class_uid)),
        _explicit_short(0x0003, b"UI", _ui(sop_instance_uid)),
        _explicit_short(0x0010, b"UI", _ui(transfer_syntax_uid)),
        _explicit_short(0x0012, b"UI", _ui(implementation_class_uid)),
    ]
    if implementation_version_name:
        elements.append(_explicit_short(0x0013, b"SH", _text(implementation_version_name)))
    if source_ae_title:
        elements.append(_explicit_short(0x0016, b"AE", _text(source_ae_title)))
    body = b"".join(elements)
    return PREAMBLE + _explicit_short(0x0000, b"UL", struct.pack("<I", len(body))) + body


def _ui(uid: str) -> bytes:
    # "replace": a peer's malformed UID is written as it can be, not an exception mid-spool.
    value = uid.encode("ascii", "replace")
    return value + b"\0" * (len(value) % 2)


def _text(value: str) -> bytes:
    encoded = value.encode("ascii", "replace")
    return encoded + b" " * (len(encoded) % 2)


def _explicit_short(element: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def _explicit_long(element: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sHI", 0x0002, element, vr, 0, len(value)) + value
