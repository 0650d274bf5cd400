"""The batch query file: every cell and row rule, with real .xlsx and .csv files."""

import datetime as dt
from pathlib import Path

import pytest

from adit.batch_query.parsers import NEEDS_MODALITY, NEEDS_PATIENT, parse_batch_query_file
from adit.core.spreadsheets import SpreadsheetContentError
from adit.core.testing.sheets import csv_upload, upload, xlsx_upload

HEADER = [
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "AccessionNumber",
    "From",
    "Until",
    "Modality",
    "StudyDescription",
    "SeriesDescription",
    "SeriesNumber",
    "Pseudonym",
]
SAMPLES = Path(__file__).resolve().parents[1] / "static" / "batch_query"


def parse(file):
    return parse_batch_query_file(file, max_rows=1000, max_bytes=10**6)


def row(**values):
    return [values.get(column, "") for column in HEADER]


def test_valid_xlsx_with_leading_zeros_and_an_excel_date_cell():
    file = xlsx_upload(
        [
            HEADER,
            row(PatientID="000123", Modality="ct, MR", From=dt.date(2020, 1, 1)),
            row(
                PatientName="Doe, Jane",
                PatientBirthDate=dt.date(1970, 5, 6),
                AccessionNumber="0062115911",
                SeriesNumber="1, 02",
                SeriesDescription="*T2*",
                Pseudonym="P-1",
            ),
        ]
    )
    first, second = parse(file)
    assert first.line == 2
    assert first.fields["patient_id"] == "000123"
    assert first.fields["modalities"] == ["CT", "MR"]
    assert first.fields["study_date_start"] == dt.date(2020, 1, 1)
    assert second.fields["patient_name"] == "Doe^Jane"
    assert second.fields["patient_birth_date"] == dt.date(1970, 5, 6)
    assert second.fields["accession_number"] == "0062115911"
    assert second.fields["series_numbers"] == ["1", "2"]
    assert second.fields["series_description"] == "*T2*"
    assert second.fields["lines"] == [3]


def test_valid_csv_with_bom_and_semicolons():
    file = csv_upload(
        [["PatientID", "Modality", "Until"], ["0042", "CT", "31.12.2023"]], delimiter=";", bom=True
    )
    (only,) = parse(file)
    assert only.fields["patient_id"] == "0042"
    assert only.fields["study_date_end"] == dt.date(2023, 12, 31)


def test_every_rule_violated_once_is_reported_at_once_by_line_and_column():
    file = xlsx_upload(
        [
            HEADER,
            row(PatientID="P*", Modality="CT"),  # 2
            row(PatientID="P" * 65, Modality="CT"),  # 3
            row(PatientID="A\\B", Modality="CT"),  # 4
            row(PatientName="Doe?", PatientBirthDate="1970-01-01", Modality="CT"),  # 5
            row(PatientID="1", PatientBirthDate="12/24/1970", Modality="CT"),  # 6
            row(PatientID="1", AccessionNumber="A" * 17),  # 7
            row(PatientID="1", Modality="CT", From="2024-02-01", Until="2024-01-01"),  # 8
            row(PatientID="1", Modality="C1"),  # 9
            row(PatientID="1", Modality="CT", SeriesNumber="1, x"),  # 10
            row(PatientID="1", Modality="CT", StudyDescription="D" * 65),  # 11
            row(PatientID="1", Modality="CT", Pseudonym="a\nb"),  # 12
            row(PatientName="Doe, Jane", Modality="CT"),  # 13
            row(PatientID="1"),  # 14
            row(PatientID="1", Modality="CT"),  # 15: valid
        ]
    )
    with pytest.raises(SpreadsheetContentError) as error:
        parse(file)
    assert error.value.problems.as_text() == [
        "Line 2, PatientID: Wildcards (* or ?) are not allowed here.",
        "Line 3, PatientID: At most 64 characters are allowed (this value has 65).",
        "Line 4, PatientID: Backslashes are not allowed.",
        "Line 5, PatientName: Wildcards (* or ?) are not allowed here.",
        "Line 6, PatientBirthDate: '12/24/1970' is not a valid date; write it as YYYY-MM-DD "
        "(e.g. 2024-03-31), DD.MM.YYYY or use an Excel date cell.",
        "Line 7, AccessionNumber: At most 16 characters are allowed (this value has 17).",
        "Line 8, Until: Until (2024-01-01) is before From (2024-02-01).",
        "Line 9, Modality: 'C1' is not a modality; use letters only (e.g. CT, MR), several "
        "separated by commas.",
        "Line 10, SeriesNumber: 'x' is not a series number; use whole numbers (e.g. 1 or 2, 3).",
        "Line 11, StudyDescription: At most 64 characters are allowed (this value has 65).",
        "Line 12, Pseudonym: Control characters are not allowed.",
        f"Line 13: {NEEDS_PATIENT}",
        f"Line 14: {NEEDS_MODALITY}",
    ]
    assert str(error.value) == (
        "The file has 13 problems on 13 lines; nothing was created. Fix them and upload the "
        "file again."
    )
    assert NEEDS_PATIENT == (
        "Identify the patient: give a PatientID, or a PatientName together with a PatientBirthDate."
    )
    assert NEEDS_MODALITY == (
        "Give a Modality (e.g. CT or CT, MR) unless the row has an AccessionNumber."
    )


def test_accession_number_alone_needs_no_modality():
    (only,) = parse(csv_upload([["PatientID", "AccessionNumber"], ["1", "0815"]]))
    assert only.fields["modalities"] == []


@pytest.mark.parametrize("extension", ["xlsx", "csv"])
def test_the_sample_files_are_valid_and_show_the_documented_cases(extension):
    data = (SAMPLES / f"batch_query_sample.{extension}").read_bytes()
    rows = parse(upload(data, f"sample.{extension}"))
    by_id = {r.fields["patient_id"]: r.fields for r in rows}
    assert by_id["0012345"]["accession_number"] == "0062115911"  # leading zeros kept
    assert by_id[""]["patient_birth_date"] == dt.date(1975, 4, 12)
    assert by_id["10005"]["series_description"] == "*T2*"
    assert by_id["10004"]["study_description"] == "*thorax*"
