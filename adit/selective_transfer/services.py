"""What the selective transfer views and the WebSocket consumer do: query, transfer, download."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlencode

from django.conf import settings
from django.db import transaction
from django.urls import reverse

from adit.core.dicom.errors import DicomError, RetriableDicomError
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.query import QueryDataset, ResultDataset
from adit.core.dicom_settings import local_config
from adit.core.models import DicomServer

from .forms import SelectedStudy, SelectiveTransferForm
from .models import SelectiveTransferJob, SelectiveTransferTask

logger = logging.getLogger(__name__)


@dataclass
class StudyRow:
    """One query result as the results table shows it."""

    patient_id: str
    patient_name: str
    birth_date: dt.date | None
    study_date: dt.date | None
    study_time: dt.time | None
    modalities: list[str]
    description: str
    accession_number: str
    instance_count: int | None
    study_uid: str
    download_url: str = ""
    series_url: str = ""

    @property
    def key(self) -> str:
        return f"{self.patient_id}\\{self.study_uid}"

    @property
    def sort_key(self) -> str:
        """Sorts newest first when compared descending (the table's default order)."""
        date = self.study_date.strftime("%Y%m%d") if self.study_date else "00000000"
        time = self.study_time.strftime("%H%M%S") if self.study_time else "000000"
        return date + time

    @property
    def display_name(self) -> str:
        """DICOM ``Last^First`` as people write it: ``Last, First``."""
        parts = [part for part in self.patient_name.split("^") if part]
        return ", ".join(parts[:2]) + (" " + " ".join(parts[2:]) if len(parts) > 2 else "")


def study_row(result: ResultDataset) -> StudyRow:
    return StudyRow(
        patient_id=result.PatientID,
        patient_name=result.PatientName,
        birth_date=result.PatientBirthDate,
        study_date=result.StudyDate,
        study_time=result.StudyTime,
        modalities=result.ModalitiesInStudy,
        description=result.StudyDescription,
        accession_number=result.AccessionNumber,
        instance_count=result.NumberOfStudyRelatedInstances,
        study_uid=result.StudyInstanceUID,
    )


def download_url(server_id: int, row: StudyRow, options: dict) -> str:
    """The direct download link of a study.

    The identifiers and the transfer options are encoded query parameters: a PatientID from a
    PACS may hold any character (``a/b``, ``%``, ``#``, ``?``), which a path segment could not
    carry (``reverse()`` refused ``/`` and broke the live query).
    """
    path = reverse("selective_transfer:download_study", kwargs={"server_id": server_id})
    params = {"patient_id": row.patient_id, "study_uid": row.study_uid}
    params.update((key, value) for key, value in options.items() if value)
    return f"{path}?{urlencode(params)}"


def series_url(server_id: int, row: StudyRow) -> str:
    """Where the page fetches the series of a study (to pick some of them)."""
    path = reverse("selective_transfer:study_series")
    params = {"source": server_id, "patient_id": row.patient_id, "study_uid": row.study_uid}
    return f"{path}?{urlencode(params)}"


def query_error_message(error: BaseException) -> str:
    """A message a user understands for a failed query (no PHI, no traceback)."""
    if isinstance(error, RetriableDicomError):
        return f"The server did not answer the query: {error}. Try again in a moment."
    if isinstance(error, DicomError):
        return f"The server rejected the query: {error}."
    if isinstance(error, ValueError):
        return f"The query is invalid: {error}."
    return "The query failed unexpectedly; the administrators were notified."


def make_operator(server: DicomServer) -> DicomOperator:
    return DicomOperator(server.to_config(), local_config())


def result_limit() -> int:
    return settings.SELECTIVE_TRANSFER_RESULT_LIMIT


def iter_study_rows(operator: DicomOperator, query: QueryDataset, limit: int) -> Iterator[StudyRow]:
    """Rows as the server answers; at most `limit` + 1 (one more tells that there are more)."""
    for result in operator.find_studies(query, limit_results=limit + 1):
        yield study_row(result)


@dataclass
class QueryOutcome:
    rows: list[StudyRow] = field(default_factory=list)
    more_than_limit: bool = False
    error: str = ""


def run_query(server: DicomServer, query: QueryDataset) -> QueryOutcome:
    """The whole query at once (the no-WebSocket fallback)."""
    limit = result_limit()
    outcome = QueryOutcome()
    try:
        for row in iter_study_rows(make_operator(server), query, limit):
            if len(outcome.rows) == limit:
                outcome.more_than_limit = True
                break
            outcome.rows.append(row)
    except Exception as error:  # noqa: BLE001 — every failure becomes a message for the user
        if not isinstance(error, DicomError | ValueError):
            logger.exception("Selective transfer query on %s failed", server.name)
        outcome.error = query_error_message(error)
    outcome.rows.sort(key=lambda row: row.sort_key, reverse=True)
    return outcome


def create_transfer_job(
    form: SelectiveTransferForm, studies: list[SelectedStudy]
) -> SelectiveTransferJob:
    """The job with one task per study, submitted (queued, or waiting for verification)."""
    data = form.cleaned_data
    user = form.user
    with transaction.atomic():
        job = SelectiveTransferJob.objects.create(
            owner=user,
            urgent=bool(data.get("urgent")),
            send_finished_mail=bool(data.get("send_finished_mail")),
            trial_protocol_id=data.get("trial_protocol_id", ""),
            trial_protocol_name=data.get("trial_protocol_name", ""),
            archive_password=data.get("archive_password", ""),
            deid_options=data.get("deid_options") or [],
        )
        SelectiveTransferTask.objects.bulk_create(
            SelectiveTransferTask(
                job=job,
                source=data["source"],
                destination=data["destination"],
                patient_id=study.patient_id,
                study_uid=study.study_uid,
                series_uids=list(study.series_uids),
                pseudonym=data.get("pseudonym", ""),
            )
            for study in studies
        )
        job.submit(by_staff=user.is_staff)
    job.refresh_from_db()
    return job
