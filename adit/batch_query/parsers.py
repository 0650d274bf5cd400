"""The batch query file: columns, cell rules and row rules (see the help page for users).

Matching semantics (the help text and the sample file say the same):

* PatientID, PatientName, PatientBirthDate and AccessionNumber are exact values; wildcards are
  not allowed there. PatientName is compared without regard to case; "Last, First" may be
  written for the DICOM form "Last^First".
* StudyDescription and SeriesDescription are DICOM wildcard patterns matched against the whole
  description, ignoring case: ``*`` stands for any run of characters, ``?`` for one character
  (``*thorax*`` finds "CT Thorax nativ", ``Thorax`` finds only "Thorax").
* Modality and SeriesNumber are comma lists; a study matches when it has any of the listed
  modalities, a series when it has one of the listed numbers.
* From and Until limit the study date (both inclusive).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError

from adit.core.dicom.query import person_name_to_dicom
from adit.core.spreadsheets import (
    Problems,
    SheetRow,
    SpreadsheetContentError,
    max_length,
    parse_sheet_date,
    read_sheet,
    split_list,
)
from adit.core.validators import (
    validate_no_backslash_or_control_characters,
    validate_no_wildcards,
)

COLUMNS = (
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
)
# The columns an export adds (so an export with its failures can be fixed and uploaded again).
EXPORT_ONLY_COLUMNS = ("Line", "Status", "Reason")

NEEDS_PATIENT = (
    "Identify the patient: give a PatientID, or a PatientName together with a PatientBirthDate."
)
NEEDS_MODALITY = "Give a Modality (e.g. CT or CT, MR) unless the row has an AccessionNumber."

_MODALITY = re.compile(r"^[A-Za-z]{1,16}$")
_SERIES_NUMBER = re.compile(r"^-?\d{1,11}$")


@dataclass
class BatchQueryRow:
    """A valid row: its line and the `BatchQueryTask` field values."""

    line: int
    fields: dict[str, Any]


def parse_batch_query_file(upload, *, max_rows: int, max_bytes: int, row_limit_hint: str = ""):
    """Read and validate a batch query file.

    Returns:
        One `BatchQueryRow` per non-empty row, in file order.

    Raises:
        SpreadsheetError: the file cannot be read (type, size, header, row count).
        SpreadsheetContentError: some rows are invalid (all problems listed).
    """
    rows = read_sheet(
        upload,
        columns=COLUMNS,
        ignored_columns=EXPORT_ONLY_COLUMNS,
        max_rows=max_rows,
        max_bytes=max_bytes,
        row_limit_hint=row_limit_hint,
    )
    problems = Problems()
    parsed = [parse_row(row, problems) for row in rows]
    if problems:
        raise SpreadsheetContentError(problems)
    return parsed


def _text(problems: Problems, row: SheetRow, column: str, limit: int, wildcards: bool) -> str:
    value = row[column]
    validators = [max_length(limit), validate_no_backslash_or_control_characters]
    if not wildcards:
        validators.append(validate_no_wildcards)
    problems.check(row.line, column, value, *validators)
    return value


def _date(problems: Problems, row: SheetRow, column: str):
    if not row[column]:
        return None
    try:
        return parse_sheet_date(row[column])
    except ValidationError as error:
        problems.add(row.line, column, error.messages[0])
        return None


def parse_row(row: SheetRow, problems: Problems) -> BatchQueryRow:
    line = row.line
    patient_id = _text(problems, row, "PatientID", 64, wildcards=False)
    patient_name = _text(problems, row, "PatientName", 64, wildcards=False)
    if patient_name:
        patient_name = person_name_to_dicom(patient_name)
    birth_date = _date(problems, row, "PatientBirthDate")
    accession_number = _text(problems, row, "AccessionNumber", 16, wildcards=False)
    date_from = _date(problems, row, "From")
    date_until = _date(problems, row, "Until")
    if date_from and date_until and date_until < date_from:
        problems.add(
            line, "Until", f"Until ({date_until:%Y-%m-%d}) is before From ({date_from:%Y-%m-%d})."
        )

    modalities = [modality.upper() for modality in split_list(row["Modality"])]
    for modality in modalities:
        if not _MODALITY.match(modality):
            problems.add(
                line,
                "Modality",
                f"{modality!r} is not a modality; use letters only (e.g. CT, MR), "
                "several separated by commas.",
            )
    series_numbers = split_list(row["SeriesNumber"])
    for number in series_numbers:
        if not _SERIES_NUMBER.match(number):
            problems.add(
                line,
                "SeriesNumber",
                f"{number!r} is not a series number; use whole numbers (e.g. 1 or 2, 3).",
            )

    study_description = _text(problems, row, "StudyDescription", 64, wildcards=True)
    series_description = _text(problems, row, "SeriesDescription", 64, wildcards=True)
    pseudonym = _text(problems, row, "Pseudonym", 64, wildcards=True)

    if not patient_id and not (row["PatientName"] and row["PatientBirthDate"]):
        problems.add(line, "", NEEDS_PATIENT)
    if not modalities and not row["AccessionNumber"]:
        problems.add(line, "", NEEDS_MODALITY)

    return BatchQueryRow(
        line,
        {
            "lines": [line],
            "patient_id": patient_id,
            "patient_name": patient_name,
            "patient_birth_date": birth_date,
            "accession_number": accession_number,
            "study_date_start": date_from,
            "study_date_end": date_until,
            "modalities": modalities,
            "study_description": study_description,
            "series_description": series_description,
            "series_numbers": [str(int(n)) for n in series_numbers if _SERIES_NUMBER.match(n)],
            "pseudonym": pseudonym,
        },
    )
