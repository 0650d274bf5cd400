"""Runs the query of one batch query row against the job's source and stores what it found."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging

from django.db import transaction

from adit.core.association_limits import association_slot
from adit.core.dicom.query import QueryDataset, ResultDataset, matches_wildcard
from adit.core.processing import ProcessingResult
from adit.core.processors import DicomTaskProcessor
from adit.core.statuses import Status

from .models import BatchQueryResult, BatchQueryTask

logger = logging.getLogger(__name__)


class RowMismatch(Exception):
    """The row contradicts what the PACS holds (e.g. another name for the PatientID)."""


class BatchQueryTaskProcessor(DicomTaskProcessor):
    """Find the row's patient(s), then their studies (or series), and store them as results.

    Outcome: Success with the number found; Warning "Nothing found: ..." when the patient or
    matching studies/series do not exist; Failure when the row contradicts the PACS (a
    PatientID with another name or birth date, a PatientID held by several patients).
    """

    task: BatchQueryTask

    def process(self) -> ProcessingResult:
        from adit.core.dicom.operator import DicomOperator
        from adit.core.dicom_settings import local_config

        task = self.task
        source = task.source.concrete
        if not source.is_server:
            return ProcessingResult(Status.FAILURE, f"The source {source.name} is not a server.")
        _audit_query(task, source)
        self.log: list[str] = []
        with contextlib.ExitStack() as stack:
            stack.enter_context(
                association_slot(source.pk, source.max_associations, aborted=self.aborted)
            )
            operator = DicomOperator(source.to_config(), local_config())  # type: ignore[union-attr]
            self.on_abort(operator.abort)
            self.operator = operator
            try:
                patients = self._find_patients()
            except RowMismatch as mismatch:
                return ProcessingResult(Status.FAILURE, str(mismatch), self.log)
            self.check_aborted()
            if not patients:
                return self._store([], "Nothing found: no such patient at the source.")
            studies = self._find_studies(patients)
            self.check_aborted()
            if len({study.PatientID for study in studies}) > 1:
                # The name and birth date matched several patients; the user should know.
                self.log.append(
                    f"The studies belong to {len({s.PatientID for s in studies})} different "
                    "patients with this name and birth date."
                )
            if not task.is_series_query:
                results = [self._result(study) for study in studies]
                what = "study" if len(results) == 1 else "studies"
                empty = "Nothing found: the patient has no studies matching the row."
                return self._store(results, f"{len(results)} {what} found.", empty)
            results = []
            for study in studies:
                for series in self._find_series(study):
                    results.append(self._result(study, series))
            self.check_aborted()
            what = "series"
            empty = "Nothing found: no series of the patient's studies match the row."
            return self._store(results, f"{len(results)} {what} found.", empty)

    # --- queries --------------------------------------------------------------------------------

    def _find_patients(self) -> list[ResultDataset]:
        task = self.task
        if task.patient_id:
            query = QueryDataset.create(PatientID=task.patient_id)
            patients = list(self.operator.find_patients(query))
            if len(patients) > 1:
                raise RowMismatch(
                    f"{len(patients)} patients have this PatientID at the source; the row is "
                    "ambiguous."
                )
            if patients:
                self._check_patient_matches_row(patients[0])
            return patients
        query = QueryDataset.create(
            PatientName=task.patient_name, PatientBirthDate=task.patient_birth_date
        )
        return list(self.operator.find_patients(query))

    def _check_patient_matches_row(self, patient: ResultDataset) -> None:
        task = self.task
        if task.patient_name and _name_key(patient.PatientName) != _name_key(task.patient_name):
            raise RowMismatch(
                "The patient with this PatientID has another PatientName at the source "
                f"({patient.PatientName or 'empty'})."
            )
        birth_date = patient.PatientBirthDate
        if task.patient_birth_date and birth_date != task.patient_birth_date:
            found = f"{birth_date:%Y-%m-%d}" if birth_date else "empty"
            raise RowMismatch(
                f"The patient with this PatientID has another PatientBirthDate at the source "
                f"({found})."
            )

    def _find_studies(self, patients: list[ResultDataset]) -> list[ResultDataset]:
        task = self.task
        found: dict[str, ResultDataset] = {}
        for patient in patients:
            base: dict = {"PatientID": patient.PatientID}
            if task.accession_number:
                base["AccessionNumber"] = task.accession_number
            if task.study_date_start or task.study_date_end:
                base["StudyDate"] = (task.study_date_start, task.study_date_end)
            # Descriptions are matched here, not by the server: servers differ in whether
            # their wildcard matching ignores case, the help promises that it does.
            # One query per modality: many servers match ModalitiesInStudy with one value only.
            for modality in task.modalities or [None]:
                query = QueryDataset.create(**base, ModalitiesInStudy=modality)
                for study in self.operator.find_studies(query):
                    if matches_wildcard(task.study_description, study.StudyDescription, False):
                        found.setdefault(study.StudyInstanceUID, study)
                self.check_aborted()
        return sorted(
            found.values(),
            key=lambda s: (s.StudyDate or dt.date.min, s.StudyTime or dt.time.min),
        )

    def _find_series(self, study: ResultDataset) -> list[ResultDataset]:
        task = self.task
        base: dict = {"PatientID": study.PatientID, "StudyInstanceUID": study.StudyInstanceUID}
        found: dict[str, ResultDataset] = {}
        for number in task.series_numbers or [None]:
            query = QueryDataset.create(**base, SeriesNumber=number)
            for series in self.operator.find_series(query):
                if matches_wildcard(task.series_description, series.SeriesDescription, False):
                    found.setdefault(series.SeriesInstanceUID, series)
        wanted = {modality.upper() for modality in task.modalities}
        series_list = [
            series
            for series in found.values()
            if not wanted or not series.Modality or series.Modality.upper() in wanted
        ]
        return sorted(series_list, key=lambda s: (s.SeriesNumber is None, s.SeriesNumber or 0))

    # --- results --------------------------------------------------------------------------------

    def _result(self, study: ResultDataset, series: ResultDataset | None = None):
        task = self.task
        image_count = (
            series.NumberOfSeriesRelatedInstances
            if series is not None
            else study.NumberOfStudyRelatedInstances
        )
        series_number = series.SeriesNumber if series is not None else None
        return BatchQueryResult(
            job_id=task.job_id,  # type: ignore[attr-defined]
            task=task,
            patient_id=study.PatientID,
            patient_name=study.PatientName,
            patient_birth_date=study.PatientBirthDate,
            accession_number=study.AccessionNumber,
            study_date=study.StudyDate,
            study_time=study.StudyTime,
            modalities=study.ModalitiesInStudy,
            image_count=image_count if image_count is None or image_count >= 0 else None,
            study_description=study.StudyDescription[:64],
            series_description=series.SeriesDescription[:64] if series is not None else "",
            series_number="" if series_number is None else str(series_number),
            pseudonym=task.pseudonym,
            study_uid=study.StudyInstanceUID,
            series_uid=series.SeriesInstanceUID if series is not None else "",
        )

    def _store(
        self, results: list[BatchQueryResult], message: str, empty_message: str = ""
    ) -> ProcessingResult:
        self.check_aborted()
        with transaction.atomic():
            # A task that runs again replaces what it found before.
            BatchQueryResult.objects.filter(task=self.task).delete()
            BatchQueryResult.objects.bulk_create(results, batch_size=1000)
        self.log.extend(self.operator.warnings)
        if not results:
            return ProcessingResult(Status.WARNING, empty_message or message, self.log)
        if self.log:
            return ProcessingResult(Status.WARNING, f"{message} {self.log[0]}", self.log)
        return ProcessingResult(Status.SUCCESS, message, self.log)


def _name_key(name: str) -> str:
    """A person name compared without case, surrounding spaces and trailing empty components."""
    return "^".join(part.strip() for part in name.upper().split("^")).rstrip("^")


# The row's values that the queries match on (the audit records the question, not the answer).
QUERY_FIELDS = (
    "patient_id",
    "patient_name",
    "patient_birth_date",
    "accession_number",
    "study_date_start",
    "study_date_end",
    "modalities",
    "study_description",
    "series_description",
    "series_numbers",
)


def _audit_query(task: BatchQueryTask, source) -> None:
    from adit.audit.models import AuditEntry
    from adit.audit.services import record

    keys = {}
    for name in QUERY_FIELDS:
        value = getattr(task, name)
        if value:
            keys[name] = value if isinstance(value, list) else str(value)
    record(
        AuditEntry.Action.QUERY,
        user=task.job.owner,
        patient_id=task.patient_id,
        pseudonym=task.pseudonym,
        source=source,
        task=task,
        details={"query": keys, "level": "SERIES" if task.is_series_query else "STUDY"},
    )
