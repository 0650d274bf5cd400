"""Rendering and the header table, on pydicom's own test files and datasets made here."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from adit.dicom_explorer.rendering import (
    PreviewError,
    grey_levels,
    header_rows,
    placeholder_png,
    render_png,
)


def _png_pixels(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


def _read(name: str) -> Dataset:
    return pydicom.dcmread(get_testdata_file(name))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",  # JPEG 2000 (Pillow's decoder)
        "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS (pylibjpeg-libjpeg)
        "MR_small_bigendian.dcm",
    ],
)
def test_compressed_and_other_syntaxes_render_like_the_uncompressed_file(name):
    expected = _png_pixels(render_png(_read("MR_small.dcm")))
    assert len(np.unique(expected)) > 100
    assert np.array_equal(_png_pixels(render_png(_read(name))), expected)


def _ct(values: list[int], **extra) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality = "CT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = 1, len(values)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = np.array(values, dtype=np.uint16).tobytes()
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    return ds


def test_ct_without_a_window_gets_the_soft_tissue_window():
    # Hounsfield units -1024, -160, 40, 240 → below, inside and above the window 40/400.
    ds = _ct([0, 864, 1064, 1264])
    levels = grey_levels(ds, ds.pixel_array)
    assert levels[0, 0] == 0 and levels[0, 3] == 1
    assert levels[0, 1] == pytest.approx(0.0, abs=0.01)
    assert levels[0, 2] == pytest.approx(0.5, abs=0.01)


def test_the_files_window_wins_and_monochrome1_is_inverted():
    ds = _ct([0, 864, 1064, 1264], WindowCenter=-160, WindowWidth=100)
    levels = grey_levels(ds, ds.pixel_array)
    assert levels[0, 1] == pytest.approx(0.5, abs=0.01) and levels[0, 2] == 1
    ds.PhotometricInterpretation = "MONOCHROME1"
    assert grey_levels(ds, ds.pixel_array)[0, 2] == 0


def test_frames_of_a_multi_frame_instance():
    ds = _read("SC_rgb_rle_2frame.dcm")
    first, second = (_png_pixels(render_png(ds, frame)) for frame in (1, 2))
    assert first.shape == (100, 100, 3) and not np.array_equal(first, second)
    with pytest.raises(PreviewError, match="Frame 3 does not exist: the instance has 2 frames"):
        render_png(ds, 3)


def test_thumbnails_are_shrunk():
    assert _png_pixels(render_png(_read("CT_small.dcm"), max_size=32)).shape == (32, 32)


def test_no_pixel_data_and_undecodable_syntaxes_say_why():
    ds = _read("MR_small.dcm")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.201"  # HTJ2K: no decoder installed
    with pytest.raises(PreviewError, match="High-Throughput JPEG 2000.*cannot be decoded here"):
        render_png(ds)
    del ds.PixelData
    with pytest.raises(PreviewError, match="no pixel data"):
        render_png(ds)
    assert _png_pixels(placeholder_png("no pixel data", 64)).shape == (64, 64)


def test_header_rows_mark_private_tags_and_nest_sequences():
    ds = _read("CT_small.dcm")
    ds.add_new(0x00091010, "LO", "vendor value")
    item = Dataset()
    item.CodeValue = "T-D3000"
    ds.AnatomicRegionSequence = Sequence([item])
    rows = {row.tag: row for row in header_rows(ds)}
    assert rows["(0002,0010)"].keyword == "TransferSyntaxUID"  # file meta first
    assert rows["(0009,1010)"].private and not rows["(0010,0010)"].private
    sequence = rows["(0008,2218)"]
    assert sequence.is_sequence and sequence.items[0][0].value == "T-D3000"
    assert "t-d3000" in sequence.search_text
    assert rows["(7FE0,0010)"].value == f"<{len(ds.PixelData)} bytes>"
