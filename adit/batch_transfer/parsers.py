"""The batch transfer file: columns, cell rules, rules across rows, grouping rows into studies.

Rows with the same StudyInstanceUID become one task (one worker pseudonymizes the whole study
consistently): its series are the union of the rows' SeriesInstanceUIDs, or the whole study
when any of those rows has no SeriesInstanceUID.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from adit.batch_query.exports import ALL_EXPORT_COLUMNS
from adit.core.spreadsheets import (
    Problems,
    SheetRow,
    SpreadsheetContentError,
    max_length,
    read_sheet,
)
from adit.core.validators import (
    validate_no_backslash_or_control_characters,
    validate_no_wildcards,
    validate_uid,
)

COLUMNS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Pseudonym")
# A batch query export can be uploaded unchanged: its other columns are ignored.
IGNORED_COLUMNS = tuple(column for column in ALL_EXPORT_COLUMNS if column not in COLUMNS)

REQUIRED = "This cell is required."
PSEUDONYM_REQUIRED = (
    "A Pseudonym is required (only users allowed to transfer unpseudonymized data may leave "
    "it empty)."
)


@dataclass
class StudyRequest:
    """One task to be: a study (or some of its series) of one patient, with its lines."""

    patient_id: str
    study_uid: str
    pseudonym: str
    lines: list[int] = field(default_factory=list)
    series_uids: list[str] = field(default_factory=list)
    whole_study: bool = False


def parse_batch_transfer_file(
    upload,
    *,
    pseudonym_required: bool,
    max_rows: int,
    max_bytes: int,
    row_limit_hint: str = "",
) -> list[StudyRequest]:
    """Read, validate and group a batch transfer file into studies (in order of appearance).

    Raises:
        SpreadsheetError: the file cannot be read (type, size, header, row count).
        SpreadsheetContentError: some rows are invalid or contradict each other.
    """
    required = ["PatientID", "StudyInstanceUID"] + (["Pseudonym"] if pseudonym_required else [])
    rows = read_sheet(
        upload,
        columns=COLUMNS,
        required_columns=required,
        ignored_columns=IGNORED_COLUMNS,
        max_rows=max_rows,
        max_bytes=max_bytes,
        row_limit_hint=row_limit_hint,
    )
    problems = Problems()
    for row in rows:
        _check_row(row, problems, pseudonym_required)
    _check_across_rows(rows, problems)
    if problems:
        raise SpreadsheetContentError(problems)
    return group_into_studies(rows)


def _check_row(row: SheetRow, problems: Problems, pseudonym_required: bool) -> None:
    line = row.line
    if not row["PatientID"]:
        problems.add(line, "PatientID", REQUIRED)
    else:
        problems.check(
            line,
            "PatientID",
            row["PatientID"],
            max_length(64),
            validate_no_backslash_or_control_characters,
            validate_no_wildcards,
        )
    if not row["StudyInstanceUID"]:
        problems.add(line, "StudyInstanceUID", REQUIRED)
    else:
        problems.check(line, "StudyInstanceUID", row["StudyInstanceUID"], validate_uid)
    if row["SeriesInstanceUID"]:
        problems.check(line, "SeriesInstanceUID", row["SeriesInstanceUID"], validate_uid)
    if row["Pseudonym"]:
        problems.check(
            line,
            "Pseudonym",
            row["Pseudonym"],
            max_length(64),
            validate_no_backslash_or_control_characters,
        )
    elif pseudonym_required:
        problems.add(line, "Pseudonym", PSEUDONYM_REQUIRED)


def _describe(values: dict[str, list[int]]) -> str:
    def lines(numbers: list[int]) -> str:
        label = "line" if len(numbers) == 1 else "lines"
        return f"{label} {', '.join(map(str, numbers))}"

    return "; ".join(
        f"{value or '(empty)'} on {lines(numbers)}" for value, numbers in values.items()
    )


def _check_across_rows(rows: list[SheetRow], problems: Problems) -> None:
    patients_of_study: dict[str, dict[str, list[int]]] = {}
    pseudonyms_of_patient: dict[str, dict[str, list[int]]] = {}
    patients_of_pseudonym: dict[str, dict[str, list[int]]] = {}
    for row in rows:
        patient_id, study_uid, pseudonym = (
            row["PatientID"],
            row["StudyInstanceUID"],
            row["Pseudonym"],
        )
        if study_uid and patient_id:
            patients_of_study.setdefault(study_uid, {}).setdefault(patient_id, []).append(row.line)
        if patient_id:
            pseudonyms_of_patient.setdefault(patient_id, {}).setdefault(pseudonym, []).append(
                row.line
            )
        if pseudonym and patient_id:
            patients_of_pseudonym.setdefault(pseudonym, {}).setdefault(patient_id, []).append(
                row.line
            )
    for study_uid, patients in patients_of_study.items():
        if len(patients) > 1:
            problems.add(
                [line for numbers in patients.values() for line in numbers],
                "StudyInstanceUID",
                f"The study {study_uid} is listed with different PatientIDs "
                f"({_describe(patients)}); a study belongs to one patient.",
            )
    for patient_id, pseudonyms in pseudonyms_of_patient.items():
        if len(pseudonyms) > 1:
            problems.add(
                [line for numbers in pseudonyms.values() for line in numbers],
                "Pseudonym",
                f"The patient {patient_id} has different pseudonyms ({_describe(pseudonyms)}); "
                "one patient gets one pseudonym.",
            )
    for pseudonym, patients in patients_of_pseudonym.items():
        if len(patients) > 1:
            problems.add(
                [line for numbers in patients.values() for line in numbers],
                "Pseudonym",
                f"The pseudonym {pseudonym} is given to different patients "
                f"({_describe(patients)}); a pseudonym stands for one patient.",
            )


def group_into_studies(rows: list[SheetRow]) -> list[StudyRequest]:
    studies: dict[str, StudyRequest] = {}
    for row in rows:
        study_uid = row["StudyInstanceUID"]
        study = studies.get(study_uid)
        if study is None:
            study = studies[study_uid] = StudyRequest(
                patient_id=row["PatientID"], study_uid=study_uid, pseudonym=row["Pseudonym"]
            )
        study.lines.append(row.line)
        series_uid = row["SeriesInstanceUID"]
        if not series_uid:
            study.whole_study = True
        elif series_uid not in study.series_uids:
            study.series_uids.append(series_uid)
    for study in studies.values():
        if study.whole_study:
            study.series_uids = []
    return list(studies.values())
