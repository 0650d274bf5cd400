"""The completeness walk refuses a deflate bomb at its limit instead of inflating it whole."""

from __future__ import annotations

import time
import zlib

import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian

from adit.core.dicom.completeness import MAX_INFLATED_BYTES, IncompleteDataSet, check_complete


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
