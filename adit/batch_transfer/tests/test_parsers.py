"""The batch transfer file: row rules, rules across rows, grouping rows into studies."""

from pathlib import Path

import pytest

from adit.batch_transfer.parsers import (
    PSEUDONYM_REQUIRED,
    REQUIRED,
    parse_batch_transfer_file,
)
from adit.core.spreadsheets import SpreadsheetContentError, SpreadsheetError
from adit.core.testing.sheets import csv_upload, upload, xlsx_upload

HEADER = ["PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Pseudonym"]
SAMPLES = Path(__file__).resolve().parents[1] / "static" / "batch_transfer"


def parse(file, pseudonym_required=True):
    return parse_batch_transfer_file(
        file, pseudonym_required=pseudonym_required, max_rows=1000, max_bytes=10**6
    )


def test_rows_of_one_study_become_one_request_with_the_union_of_series():
    file = xlsx_upload(
        [
            HEADER,
            ["0001", "1.2.3", "1.2.3.1", "A"],
            ["0002", "1.2.4", "", "B"],
            ["0001", "1.2.3", "1.2.3.2", "A"],
            ["0001", "1.2.3", "1.2.3.1", "A"],
            ["0002", "1.2.4", "1.2.4.9", "B"],
        ]
    )
    first, second = parse(file)
    assert (first.patient_id, first.study_uid, first.series_uids, first.lines) == (
        "0001",
        "1.2.3",
        ["1.2.3.1", "1.2.3.2"],
        [2, 4, 5],
    )
    # One row without a series means the whole study.
    assert (second.study_uid, second.series_uids, second.lines) == ("1.2.4", [], [3, 6])


def test_csv_with_bom_and_semicolons():
    file = csv_upload([HEADER, ["007", "1.2.3", "", "X"]], delimiter=";", bom=True)
    (study,) = parse(file)
    assert study.patient_id == "007"


def test_every_rule_violated_once_all_reported_with_exact_messages():
    file = xlsx_upload(
        [
            HEADER,
            ["", "1.2.1", "", "A"],  # 2
            ["P2", "", "", "B"],  # 3
            ["P3", "1.02.3", "", "C"],  # 4
            ["P4", "1.2.4", "1.2.x", "D"],  # 5
            ["P5*", "1.2.5", "", "E"],  # 6
            ["P6", "1.2.6", "", ""],  # 7
            ["P7", "1.2.7", "", "G\\H"],  # 8
            ["P8", "1.2.8", "", "I"],  # 9
            ["P9", "1.2.8", "", "J"],  # 10: same study, other patient
            ["P10", "1.2.10", "", "K"],  # 11
            ["P10", "1.2.11", "", "L"],  # 12: same patient, other pseudonym
            ["P12", "1.2.12", "", "M"],  # 13
            ["P13", "1.2.13", "", "M"],  # 14: same pseudonym, other patient
        ]
    )
    with pytest.raises(SpreadsheetContentError) as error:
        parse(file)
    assert error.value.problems.as_text() == [
        f"Line 2, PatientID: {REQUIRED}",
        f"Line 3, StudyInstanceUID: {REQUIRED}",
        "Line 4, StudyInstanceUID: 1.02.3 is not a valid DICOM UID (digits and dots only, max. "
        "64 characters).",
        "Line 5, SeriesInstanceUID: 1.2.x is not a valid DICOM UID (digits and dots only, max. "
        "64 characters).",
        "Line 6, PatientID: Wildcards (* or ?) are not allowed here.",
        f"Line 7, Pseudonym: {PSEUDONYM_REQUIRED}",
        "Line 8, Pseudonym: Backslashes are not allowed.",
        "Lines 9, 10, StudyInstanceUID: The study 1.2.8 is listed with different PatientIDs "
        "(P8 on line 9; P9 on line 10); a study belongs to one patient.",
        "Lines 11, 12, Pseudonym: The patient P10 has different pseudonyms (K on line 11; L on "
        "line 12); one patient gets one pseudonym.",
        "Lines 13, 14, Pseudonym: The pseudonym M is given to different patients (P12 on line "
        "13; P13 on line 14); a pseudonym stands for one patient.",
    ]
    assert REQUIRED == "This cell is required."
    assert PSEUDONYM_REQUIRED == (
        "A Pseudonym is required (only users allowed to transfer unpseudonymized data may leave "
        "it empty)."
    )


def test_an_empty_pseudonym_counts_as_a_different_one():
    file = csv_upload([HEADER, ["P1", "1.2.1", "", "A"], ["P1", "1.2.2", "", ""]])
    with pytest.raises(SpreadsheetContentError) as error:
        parse(file, pseudonym_required=False)
    assert error.value.problems.as_text() == [
        "Lines 2, 3, Pseudonym: The patient P1 has different pseudonyms (A on line 2; (empty) "
        "on line 3); one patient gets one pseudonym."
    ]


def test_without_pseudonym_permission_the_column_is_required():
    with pytest.raises(SpreadsheetError, match=r"Missing required column\(s\): Pseudonym\."):
        parse(csv_upload([["PatientID", "StudyInstanceUID"], ["P1", "1.2.3"]]))
    (study,) = parse(
        csv_upload([["PatientID", "StudyInstanceUID"], ["P1", "1.2.3"]]), pseudonym_required=False
    )
    assert study.pseudonym == ""


def test_the_columns_of_a_batch_query_export_are_ignored_but_typos_are_not():
    export_header = [
        "Line",
        "PatientID",
        "PatientName",
        "StudyDate",
        "StudyInstanceUID",
        "Pseudonym",
    ]
    (study,) = parse(csv_upload([export_header, ["2", "P1", "Doe, J", "2024-01-01", "1.2.3", "X"]]))
    assert study.study_uid == "1.2.3"
    with pytest.raises(SpreadsheetError, match=r"Unknown column\(s\): StudyUID\."):
        parse(csv_upload([["PatientID", "StudyInstanceUID", "StudyUID", "Pseudonym"]]))


@pytest.mark.parametrize("extension", ["xlsx", "csv"])
def test_the_sample_files_are_valid(extension):
    data = (SAMPLES / f"batch_transfer_sample.{extension}").read_bytes()
    studies = parse(upload(data, f"sample.{extension}"))
    assert [study.lines for study in studies] == [[2], [3, 4], [5]]
    assert studies[0].patient_id == "0012345"
    assert len(studies[1].series_uids) == 2
