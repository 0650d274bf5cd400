"""Exports of the audit log (CSV, streamed) and of the pseudonym mapping (CSV or xlsx).

Every cell goes through `adit.core.spreadsheets.export_text`: a PatientID, a pseudonym or a
query value may start with ``=`` and must never become a formula in the reader's spreadsheet.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator

from django.db.models import QuerySet

from adit.core.spreadsheets import csv_bytes, export_text, xlsx_bytes

CONTENT_TYPES = {
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "csv": "text/csv; charset=utf-8",
}

AUDIT_COLUMNS = (
    "Time",
    "User",
    "Action",
    "Outcome",
    "PatientID",
    "Pseudonym",
    "StudyInstanceUID",
    "SeriesInstanceUIDs",
    "Source",
    "Destination",
    "Job",
    "Task",
    "ClientAddress",
    "Details",
)

MAPPING_COLUMNS = (
    "JobType",
    "Job",
    "Task",
    "PatientID",
    "Pseudonym",
    "StudyInstanceUID",
    "PseudonymizedStudyInstanceUID",
    "SeriesInstanceUID",
    "PseudonymizedSeriesInstanceUID",
    "Recorded",
)


def _audit_row(entry) -> list:
    return [
        entry.time.isoformat(),
        entry.username,
        entry.action,
        entry.outcome,
        entry.patient_id,
        entry.pseudonym,
        entry.study_uid,
        " ".join(entry.series_uids or []),
        entry.source,
        entry.destination,
        f"{entry.job_type}:{entry.job_id}" if entry.job_id else "",
        entry.task_id or "",
        entry.client_address or "",
        entry.details_json,
    ]


def _csv_line(values: Iterable) -> str:
    # The same dialect as `spreadsheets.csv_bytes` (all fields quoted, CRLF), line by line.
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_ALL).writerow(
        [export_text(value) for value in values]
    )
    return buffer.getvalue()


def audit_csv_chunks(entries: QuerySet, chunk_size: int = 2000) -> Iterator[bytes]:
    """The entries as a UTF-8 CSV with BOM, streamed chunk by chunk (the log may be large)."""
    yield ("\ufeff" + _csv_line(AUDIT_COLUMNS)).encode("utf-8")
    lines: list[str] = []
    for entry in entries.iterator(chunk_size=chunk_size):
        lines.append(_csv_line(_audit_row(entry)))
        if len(lines) >= chunk_size:
            yield "".join(lines).encode("utf-8")
            lines = []
    if lines:
        yield "".join(lines).encode("utf-8")


def _mapping_row(row) -> list:
    return [
        row.job_type,
        row.job_id,
        row.task_id,
        row.patient_id,
        row.pseudonym,
        row.study_uid,
        row.pseudonymized_study_uid,
        row.series_uid,
        row.pseudonymized_series_uid,
        row.created.isoformat(),
    ]


def mapping_bytes(rows: QuerySet, file_format: str) -> bytes:
    values = [_mapping_row(row) for row in rows]
    if file_format == "xlsx":
        return xlsx_bytes(MAPPING_COLUMNS, values, title="Pseudonym mapping")
    return csv_bytes(MAPPING_COLUMNS, values)
