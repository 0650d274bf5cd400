"""The completeness walk: a deflate bomb is refused at its limit instead of inflated whole, and
the routing UIDs the receiver needs are picked up on the way."""

from __future__ import annotations

import time
import zlib

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom.dsutils import encode

from adit.core.dicom.completeness import (
    MAX_INFLATED_BYTES,
    IncompleteDataSet,
    check_complete,
    text_value,
)


def test_a_deflate_bomb_is_refused_at_the_limit():
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(1 << 24)
    bomb = b"".join(compressor.compress(zeros) for _ in range(64)) + compressor.flush()
    assert len(bomb) < 2 * 1024 * 1024  # 1 GiB of zeros
    start = time.monotonic()
    with pytest.raises(IncompleteDataSet, match=f"more than {MAX_INFLATED_BYTES >> 20} MiB"):
        check_complete(bomb, DeflatedExplicitVRLittleEndian)
    assert time.monotonic() - start < 10


def test_a_small_deflated_data_set_still_passes():
    element = b"\x10\x00\x20\x00LO\x04\x00PAT1"  # (0010,0020) PatientID
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    check_complete(
        compressor.compress(element) + compressor.flush(), DeflatedExplicitVRLittleEndian
    )


@pytest.mark.parametrize(
    "transfer_syntax",
    [
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    ],
)
def test_the_walk_picks_up_top_level_values_in_every_transfer_syntax(transfer_syntax):
    # The receiver routes an instance by these UIDs without decoding it: they must be the ones
    # pydicom reads, never a value of the same tag nested in a sequence.
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3.4.5"  # odd length: padded with a NUL
    ds.StudyInstanceUID = "1.2.3.44"
    nested = Dataset()
    nested.SeriesInstanceUID = "9.9.9"
    ds.ReferencedSeriesSequence = [nested]
    ds.SeriesInstanceUID = "1.2.3.444"
    encoded = encode(
        ds,
        is_implicit_vr=transfer_syntax == ImplicitVRLittleEndian,
        is_little_endian=transfer_syntax != ExplicitVRBigEndian,
        deflated=transfer_syntax == DeflatedExplicitVRLittleEndian,
    )
    assert encoded is not None

    found = check_complete(encoded, transfer_syntax, capture=(0x00080018, 0x0020000D, 0x0020000E))

    assert {tag: text_value(value) for tag, value in found.items()} == {
        0x00080018: "1.2.3.4.5",
        0x0020000D: "1.2.3.44",
        0x0020000E: "1.2.3.444",
    }
    assert text_value(found.get(0x00100020)) == ""


def test_a_value_cut_short_is_still_refused_while_capturing():
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3.4.5"
    encoded = encode(ds, is_implicit_vr=False, is_little_endian=True)
    assert encoded is not None
    with pytest.raises(IncompleteDataSet, match=r"the value of \(0008,0018\)"):
        check_complete(encoded[:-2], ExplicitVRLittleEndian, capture=(0x00080018,))
