"""Tests of the synthetic study generator used by the other DICOM tests and the demo."""

from collections import Counter

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    BasicTextSRStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    GrayscaleSoftcopyPresentationStateStorage,
    MRImageStorage,
    RLELossless,
)

from adit.core.dicom.testing.synthetic import make_large_study, make_study, write_study


def test_study_has_series_with_matching_sop_classes_and_consistent_uids():
    datasets = make_study("PAT001", "Doe^Jane", series=(("CT", 4), ("MR", 2)))

    assert [ds.Modality for ds in datasets] == ["CT"] * 4 + ["MR"] * 2
    assert {ds.SOPClassUID for ds in datasets if ds.Modality == "CT"} == {CTImageStorage}
    assert {ds.SOPClassUID for ds in datasets if ds.Modality == "MR"} == {MRImageStorage}
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert Counter(ds.SeriesNumber for ds in datasets) == {1: 4, 2: 2}
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 2
    assert len({ds.SOPInstanceUID for ds in datasets}) == 6
    assert [ds.InstanceNumber for ds in datasets] == [1, 2, 3, 4, 1, 2]
    for ds in datasets:
        assert ds.PatientID == "PAT001"
        assert ds.PatientName == "Doe^Jane"
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
            assert uid.is_valid, uid


def test_last_series_is_rle_compressed_and_decodes():
    datasets = make_study("PAT001", series=(("CT", 2), ("MR", 2)), rows=32, columns=32)

    syntaxes = [ds.file_meta.TransferSyntaxUID for ds in datasets]
    assert syntaxes == [ExplicitVRLittleEndian] * 2 + [RLELossless] * 2
    for ds in datasets:
        pixels = ds.pixel_array
        assert pixels.shape == (32, 32)
        assert pixels.dtype == np.uint16


def test_uncompressed_when_asked():
    datasets = make_study("PAT001", compressed_series=False)

    assert {ds.file_meta.TransferSyntaxUID for ds in datasets} == {ExplicitVRLittleEndian}


def test_seeded_study_is_deterministic_and_unseeded_is_unique():
    first = make_study("PAT001", seed="s1")
    second = make_study("PAT001", seed="s1")
    other_seed = make_study("PAT001", seed="s2")
    unseeded_a = make_study("PAT001")
    unseeded_b = make_study("PAT001")

    assert [ds.SOPInstanceUID for ds in first] == [ds.SOPInstanceUID for ds in second]
    assert [ds.PixelData for ds in first] == [ds.PixelData for ds in second]
    assert first == second
    assert first[0].StudyInstanceUID != other_seed[0].StudyInstanceUID
    assert unseeded_a[0].StudyInstanceUID != unseeded_b[0].StudyInstanceUID


def test_identifying_data_is_also_nested_in_sequences():
    ds = make_study("PAT001", "Doe^Jane", accession_number="ACC42")[0]

    assert ds.OtherPatientIDsSequence[0].PatientID.startswith("PAT001")
    assert ds.RequestAttributesSequence[0].AccessionNumber == "ACC42"
    assert ds.InstitutionName == "Example Hospital"
    assert ds.ReferringPhysicianName
    assert ds.OtherPatientIDs


def test_non_image_modalities_have_no_pixel_data():
    datasets = make_study("PAT001", series=(("CT", 1), ("SR", 1), ("PR", 1)))

    sr, pr = datasets[1], datasets[2]
    assert sr.SOPClassUID == BasicTextSRStorage
    assert pr.SOPClassUID == GrayscaleSoftcopyPresentationStateStorage
    assert "PixelData" not in sr
    assert "PixelData" not in pr


def test_written_files_are_valid_part10(tmp_path):
    datasets = make_study("PAT001", seed=1)

    paths = write_study(datasets, tmp_path / "out")

    assert len(paths) == len(datasets)
    for path, original in zip(paths, datasets, strict=True):
        assert path.name == f"{original.SOPInstanceUID}.dcm"
        with path.open("rb") as file:
            assert file.read(132)[128:] == b"DICM"
        read = pydicom.dcmread(path)
        assert read.SOPInstanceUID == original.SOPInstanceUID
        assert read.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        np.testing.assert_array_equal(read.pixel_array, original.pixel_array)


def test_large_study_spreads_instances_over_series():
    datasets = make_large_study(503, n_series=5)

    assert len(datasets) == 503
    assert sorted(Counter(ds.SeriesNumber for ds in datasets).values()) == [100, 100, 101, 101, 101]
    assert len({ds.SOPInstanceUID for ds in datasets}) == 503
    assert datasets[0].Rows == 64


@pytest.mark.parametrize(
    "series, message", [((), "at least one"), ((("CT", 0),), "at least 1 instance")]
)
def test_bad_series_arguments_are_rejected(series, message):
    with pytest.raises(ValueError, match=message):
        make_study("PAT001", series=series)
