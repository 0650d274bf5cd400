"""Pure logic of query and result datasets (no network)."""

import datetime as dt

import pytest
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from adit.core.dicom.query import (
    QueryDataset,
    ResultDataset,
    matches_wildcard,
    person_name_to_dicom,
    results_from_qido,
)


def test_create_rejects_unknown_keyword_naming_it():
    with pytest.raises(ValueError, match="PatientWeight"):
        QueryDataset.create(PatientID="1", PatientWeight=70)


def test_from_dict_accepts_any_dicom_keyword_but_not_typos():
    query = QueryDataset.from_dict({"InstitutionName": "Hospital"}, PatientID="P1")
    assert query.get("InstitutionName") == "Hospital"
    assert query.get("PatientID") == "P1"
    with pytest.raises(ValueError, match="PatientIdd"):
        QueryDataset.from_dict({"PatientIdd": "x"})


@pytest.mark.parametrize(
    "value, expected",
    [
        (dt.date(2024, 3, 5), "20240305"),
        (dt.datetime(2024, 3, 5, 10, 0), "20240305"),
        ("2024-03-05", "20240305"),
        ("05.03.2024", "20240305"),
        ((dt.date(2024, 1, 1), dt.date(2024, 1, 31)), "20240101-20240131"),
        ((None, dt.date(2024, 1, 31)), "-20240131"),
        ((dt.date(2024, 1, 1), None), "20240101-"),
        ((None, None), ""),
        ("20240101-20240131", "20240101-20240131"),
        ("2024-01-01 - 2024-01-31", "20240101-20240131"),
        ("-20240131", "-20240131"),
        (None, ""),
    ],
)
def test_date_values_and_ranges(value, expected):
    assert QueryDataset.create(StudyDate=value).get("StudyDate") == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        (dt.time(8, 30), "083000"),
        ("08:30", "083000"),
        ((dt.time(8, 0), dt.time(12, 0)), "080000-120000"),
        ("0800-1200", "080000-120000"),
    ],
)
def test_time_values_and_ranges(value, expected):
    assert QueryDataset.create(StudyTime=value).get("StudyTime") == expected


@pytest.mark.parametrize("bad", ["yesterday", "2024-13-45", (dt.date(2024, 1, 1),), 20240101])
def test_invalid_dates_name_the_keyword(bad):
    with pytest.raises(ValueError, match="StudyDate"):
        QueryDataset.create(StudyDate=bad)


def test_invalid_level_uid_and_too_long_values_are_rejected():
    with pytest.raises(ValueError, match="QueryRetrieveLevel"):
        QueryDataset.create(QueryRetrieveLevel="FRAME")
    with pytest.raises(ValueError, match="StudyInstanceUID"):
        QueryDataset.create(StudyInstanceUID="1.2.abc")
    with pytest.raises(ValueError, match="PatientID"):
        QueryDataset.create(PatientID="x" * 65)


def test_person_name_conversion():
    assert person_name_to_dicom("Doe, John") == "Doe^John"
    assert person_name_to_dicom("Doe^John") == "Doe^John"
    assert person_name_to_dicom("Doe") == "Doe"
    assert person_name_to_dicom("Doe, Jo", add_wildcards=True) == "Doe*^Jo*"
    assert QueryDataset.create(PatientName="Doe, J*").get_str("PatientName") == "Doe^J*"


def test_wildcards_match_whole_values_only():
    assert matches_wildcard("CT*", "CT Thorax")
    assert not matches_wildcard("Thorax", "CT Thorax")
    assert matches_wildcard("C?", "CT")
    assert not matches_wildcard("C?", "CTX")
    assert matches_wildcard("ct*", "CT Thorax", case_sensitive=False)
    assert not matches_wildcard("ct*", "CT Thorax", case_sensitive=True)
    assert matches_wildcard("a.b", "a.b") and not matches_wildcard("a.b", "axb")
    assert matches_wildcard("", "anything") and matches_wildcard("*", "")


def test_modalities_list_and_dictify_for_qido():
    query = QueryDataset.create(
        QueryRetrieveLevel="STUDY", ModalitiesInStudy=["CT", "MR"], PatientName="*", StudyDate=None
    )
    assert query.get("ModalitiesInStudy") == ["CT", "MR"]
    filters, fields = query.get_search_filters_and_fields()
    assert filters == {"ModalitiesInStudy": "CT,MR"}
    assert set(fields) == {"ModalitiesInStudy", "PatientName", "StudyDate"}


def test_ensure_elements_adds_empty_return_keys_without_overwriting():
    query = QueryDataset.create(PatientID="P1").ensure_elements("PatientID", "StudyDate")
    assert query.get("PatientID") == "P1"
    assert query.get("StudyDate") == ""
    assert query.is_concrete("PatientID") and not query.is_concrete("StudyDate")


def test_result_typed_values():
    ds = Dataset()
    ds.PatientBirthDate = "19700101"
    ds.StudyDate = "20240305"
    ds.StudyTime = "101500.25"
    ds.ModalitiesInStudy = ["CT", "MR"]
    ds.NumberOfStudyRelatedInstances = "12"
    ds.SeriesNumber = "3"
    result = ResultDataset(ds)
    assert result.PatientBirthDate == dt.date(1970, 1, 1)
    assert result.StudyDate == dt.date(2024, 3, 5)
    assert result.StudyTime == dt.time(10, 15, 0, 250000)
    assert result.ModalitiesInStudy == ["CT", "MR"]
    assert result.NumberOfStudyRelatedInstances == 12
    assert result.SeriesNumber == 3


def test_unparsable_result_values_become_none_not_errors():
    ds = Dataset()
    ds.PatientBirthDate = "not a date"
    ds.StudyDate = "20241350"
    ds.StudyTime = "99:99"
    # As received from a peer: raw bytes that pydicom only decodes on access (and fails to).
    tag = Tag(0x00201208)  # NumberOfStudyRelatedInstances
    ds._dict[tag] = RawDataElement(tag, "IS", 6, b"twelve", 0, True, True)
    result = ResultDataset(ds)
    assert result.PatientBirthDate is None
    assert result.StudyDate is None
    assert result.StudyTime is None
    assert result.NumberOfStudyRelatedInstances is None
    assert result.SeriesNumber is None
    assert result.ModalitiesInStudy == []


def test_qido_json_with_malformed_attribute_keeps_the_rest():
    items = [
        {
            "00100020": {"vr": "LO", "Value": ["P1"]},
            "00080020": {"vr": "DA", "Value": ["garbage"]},
            "00080061": {"vr": "CS", "Value": ["CT", "SR"]},
        }
    ]
    (result,) = results_from_qido(items)
    assert result.PatientID == "P1"
    assert result.StudyDate is None
    assert result.ModalitiesInStudy == ["CT", "SR"]
