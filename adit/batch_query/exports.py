"""Exports of a batch query job's results as .xlsx or .csv.

The export of found studies has the columns a batch transfer file needs (PatientID,
StudyInstanceUID, SeriesInstanceUID, Pseudonym); the batch transfer parser ignores the others,
so the file can be uploaded there unchanged. With failures included, every row that found
nothing or failed appears too, with its input line, status and reason, so the sheet can be
fixed and run again.

Every cell is written by `adit.core.spreadsheets` as inert text (formula prefixes quoted, xlsx
string cells): pseudonyms and descriptions come from users and PACS servers.
"""

from __future__ import annotations

from collections.abc import Iterator

from adit.core.models import DicomTask
from adit.core.spreadsheets import csv_bytes, xlsx_bytes

from .models import BatchQueryJob, BatchQueryResult, BatchQueryTask

STUDY_COLUMNS = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "AccessionNumber",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "ModalitiesInStudy",
    "NumberOfInstances",
    "StudyInstanceUID",
)
SERIES_COLUMNS = ("SeriesInstanceUID", "SeriesDescription", "SeriesNumber")
FAILURE_COLUMNS = ("Status", "Reason")
# Every column an export may have (the batch transfer parser ignores those it does not use).
ALL_EXPORT_COLUMNS = ("Line", *FAILURE_COLUMNS, "Pseudonym", *STUDY_COLUMNS, *SERIES_COLUMNS)

FOUND = "Found"
NOTHING_FOUND = "Nothing found"
FAILED = "Failed"
CONTENT_TYPES = {
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "csv": "text/csv; charset=utf-8",
}


def display_name(dicom_name: str) -> str:
    """DICOM "Last^First" as people write it: "Last, First" (batch files accept both)."""
    return ", ".join(part for part in dicom_name.rstrip("^").split("^"))


def task_outcome(task: BatchQueryTask, has_results: bool) -> str:
    if has_results:
        return FOUND
    if task.status in (DicomTask.Status.SUCCESS, DicomTask.Status.WARNING):
        return NOTHING_FOUND
    if task.status == DicomTask.Status.FAILURE:
        return FAILED
    return task.get_status_display()


def export_table(job: BatchQueryJob, include_failures: bool) -> tuple[list[str], list[list]]:
    """The header and rows of the export."""
    tasks = list(job.tasks.order_by("id"))
    with_pseudonym = any(task.pseudonym for task in tasks)
    with_series = any(task.is_series_query for task in tasks)
    header = ["Line"]
    if include_failures:
        header += FAILURE_COLUMNS
    if with_pseudonym:
        header.append("Pseudonym")
    header += STUDY_COLUMNS
    if with_series:
        header += SERIES_COLUMNS

    results_by_task: dict[int, list[BatchQueryResult]] = {}
    for result in BatchQueryResult.objects.filter(job=job).order_by("task_id", "id").iterator():
        results_by_task.setdefault(result.task_id, []).append(result)  # type: ignore[attr-defined]

    def rows() -> Iterator[list]:
        for task in tasks:
            results = results_by_task.get(task.pk, [])
            prefix = [task.lines_label]
            if include_failures:
                outcome = task_outcome(task, bool(results))
                prefix += [outcome, "" if outcome == FOUND else task.message]
            if with_pseudonym:
                prefix.append(task.pseudonym)
            for result in results:
                row = prefix + [
                    result.patient_id,
                    display_name(result.patient_name),
                    _date(result.patient_birth_date),
                    result.accession_number,
                    _date(result.study_date),
                    result.study_time.strftime("%H:%M:%S") if result.study_time else "",
                    result.study_description,
                    ", ".join(result.modalities),
                    "" if result.image_count is None else result.image_count,
                    result.study_uid,
                ]
                if with_series:
                    row += [result.series_uid, result.series_description, result.series_number]
                yield row
            if not results and include_failures:
                # The row's own query values, so the line is easy to find and fix.
                row = prefix + [
                    task.patient_id,
                    display_name(task.patient_name),
                    _date(task.patient_birth_date),
                    task.accession_number,
                    "",
                    "",
                    task.study_description,
                    ", ".join(task.modalities),
                    "",
                    "",
                ]
                if with_series:
                    row += ["", task.series_description, ", ".join(task.series_numbers)]
                yield row

    return header, list(rows())


def _date(value) -> str:
    return value.strftime("%Y-%m-%d") if value else ""


def export_bytes(job: BatchQueryJob, file_format: str, include_failures: bool) -> bytes:
    header, rows = export_table(job, include_failures)
    if file_format == "xlsx":
        return xlsx_bytes(header, rows, title=f"Batch query {job.pk}")
    return csv_bytes(header, rows)


def export_filename(job: BatchQueryJob, file_format: str, include_failures: bool) -> str:
    suffix = "_with_failures" if include_failures else ""
    return f"batch_query_job_{job.pk}_results{suffix}.{file_format}"
