"""What the explorer's views do: find the server, query a level, fetch and render an instance.

Queries go through `DicomOperator` like everywhere else in ADIT (C-FIND, else QIDO-RS), with
timeouts short enough for a page: a server that is down or silent gives a message after
``DICOM_EXPLORER_CONNECT_TIMEOUT`` / ``DICOM_EXPLORER_QUERY_TIMEOUT`` seconds, not a hung tab.

Answers are cached per user for ``DICOM_EXPLORER_CACHE_TTL`` seconds (Django's cache), keyed by
server, level and the query's keys: going back up the breadcrumb or reloading a page does not
ask the PACS again. The cache is per user, not shared, because what a user may see depends on
the group they act for; failures are not cached, so "try again" really tries again.

Every query and every preview is written to the audit trail, from the cache or not: the audit
says who looked at what, not what the PACS was asked.

Images: a server that speaks WADO-RS renders the frame itself (``/rendered``); otherwise (or
when that fails) ADIT fetches the one instance (C-GET, C-MOVE through the receiver, or WADO-RS)
and renders it with `rendering.render_png`. The fetched instance is cached like a query, so the
instance page (header) and its image cost one fetch.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pydicom
from django.conf import settings
from django.core.cache import cache
from django.http import Http404
from pydicom import Dataset
from pydicom.uid import UID

from adit.audit.models import AuditEntry
from adit.audit.services import record, record_query
from adit.core.dicom.config import LocalConfig
from adit.core.dicom.errors import DicomError, RetriableDicomError
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.query import QueryDataset, ResultDataset
from adit.core.dicom_settings import local_config
from adit.core.models import DicomNode, DicomServer

from .rendering import PreviewError, render_png, shrink_png

logger = logging.getLogger(__name__)

CACHE_PREFIX = "dicom_explorer"
MAX_CACHED_INSTANCE_BYTES = 32 * 1024 * 1024


def source_servers(user):
    """The servers the user's active group may use as source (folders cannot be queried)."""
    return (
        DicomNode.objects.accessible_by_user(user, "source")
        .filter(node_type=DicomNode.NodeType.SERVER)
        .order_by("name")
    )


def get_server(user, server_id: int) -> DicomServer:
    """The server, if the active group may use it as source; 404 otherwise (a server the user
    may not use is not revealed to exist)."""
    node = source_servers(user).filter(pk=server_id).first()
    if node is None:
        raise Http404("No such server, or your active group may not use it as a source.")
    return node.concrete  # type: ignore[return-value]


def explorer_local_config() -> LocalConfig:
    """ADIT's side of the network, with the explorer's (interactive) timeouts."""
    config = local_config()
    query_timeout = settings.DICOM_EXPLORER_QUERY_TIMEOUT
    timeouts = dataclasses.replace(
        config.timeouts,
        connection=settings.DICOM_EXPLORER_CONNECT_TIMEOUT,
        acse=query_timeout,
        dimse=query_timeout,
        network=query_timeout,
        http=query_timeout,
    )
    return dataclasses.replace(config, timeouts=timeouts)


def make_operator(server: DicomServer) -> DicomOperator:
    return DicomOperator(server.to_config(), explorer_local_config())


def error_message(server: DicomServer, error: BaseException) -> str:
    """A message a user understands (no PHI, no traceback)."""
    if isinstance(error, RetriableDicomError):
        return (
            f"{server.name} did not answer: {error}. The server may be down or busy; try again "
            "in a moment."
        )
    if isinstance(error, DicomError):
        return f"{server.name} refused the request: {error}."
    return f"The request to {server.name} failed unexpectedly; the administrators were notified."


# --- rows of each level -----------------------------------------------------------------------


def _display_name(dicom_name: str) -> str:
    parts = [part for part in dicom_name.split("^") if part]
    return ", ".join(parts[:2]) + (" " + " ".join(parts[2:]) if len(parts) > 2 else "")


@dataclass
class PatientRow:
    patient_id: str
    patient_name: str
    birth_date: dt.date | None
    sex: str
    study_count: int = 0
    latest_study: dt.date | None = None
    modalities: list[str] = field(default_factory=list)

    @property
    def display_name(self) -> str:
        return _display_name(self.patient_name)


@dataclass
class StudyRow:
    patient_id: str
    patient_name: str
    birth_date: dt.date | None
    study_uid: str
    study_date: dt.date | None
    study_time: dt.time | None
    description: str
    accession_number: str
    modalities: list[str]
    series_count: int | None
    instance_count: int | None

    @property
    def display_name(self) -> str:
        return _display_name(self.patient_name)


@dataclass
class SeriesRow:
    series_uid: str
    number: int | None
    modality: str
    description: str
    instance_count: int | None


@dataclass
class InstanceRow:
    sop_uid: str
    sop_class_uid: str
    number: int | None

    @property
    def sop_class_name(self) -> str:
        uid = UID(self.sop_class_uid)
        return uid.name if uid.is_valid and uid.name != uid else self.sop_class_uid


def study_row(result: ResultDataset) -> StudyRow:
    return StudyRow(
        patient_id=result.PatientID,
        patient_name=result.PatientName,
        birth_date=result.PatientBirthDate,
        study_uid=result.StudyInstanceUID,
        study_date=result.StudyDate,
        study_time=result.StudyTime,
        description=result.StudyDescription,
        accession_number=result.AccessionNumber,
        modalities=result.ModalitiesInStudy,
        series_count=result.NumberOfStudyRelatedSeries,
        instance_count=result.NumberOfStudyRelatedInstances,
    )


def patients_of(studies: Iterable[StudyRow]) -> list[PatientRow]:
    """The patients of a study search, with how many of their studies matched."""
    patients: dict[str, PatientRow] = {}
    for study in studies:
        patient = patients.get(study.patient_id)
        if patient is None:
            patient = patients[study.patient_id] = PatientRow(
                study.patient_id, study.patient_name, study.birth_date, ""
            )
        patient.study_count += 1
        latest = patient.latest_study
        if study.study_date and (latest is None or study.study_date > latest):
            patient.latest_study = study.study_date
        patient.modalities = sorted(set(patient.modalities) | set(study.modalities))
    return sorted(patients.values(), key=lambda p: (p.display_name.lower(), p.patient_id))


# --- queries ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a level's query gave: rows, whether there were more than the limit, or an error."""

    rows: list[Any] = field(default_factory=list)
    more: bool = False
    error: str = ""
    cached: bool = False


def _cache_key(user, *parts: Any) -> str:
    digest = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()
    return f"{CACHE_PREFIX}:{user.pk}:{digest}"


def run_query(
    request,
    server: DicomServer,
    level: str,
    query: QueryDataset,
    find: Callable[[DicomOperator, QueryDataset, int], Iterable[ResultDataset]],
    to_row: Callable[[ResultDataset], Any],
) -> Outcome:
    """Runs (or answers from the user's cache) one level's query; audits it either way."""
    limit = settings.DICOM_EXPLORER_RESULT_LIMIT
    key = _cache_key(request.user, server.pk, level, sorted(query.dictify().items()), limit)
    outcome: Outcome | None = cache.get(key)
    # Recorded before the server is asked (fail closed: no query goes out unaudited); the entry
    # says what was asked, whether the answer then comes from the cache, the PACS or nowhere.
    record_query(query, level=level, request=request, source=server)
    if outcome is not None:
        return dataclasses.replace(outcome, cached=True)
    outcome = Outcome()
    try:
        for result in find(make_operator(server), query, limit + 1):
            if len(outcome.rows) == limit:
                outcome.more = True
                break
            outcome.rows.append(to_row(result))
    except Exception as error:  # noqa: BLE001 — every failure becomes a message for the user
        if not isinstance(error, DicomError):
            logger.exception("Explorer query (%s level) on %s failed", level, server.name)
        return Outcome(error=error_message(server, error))
    cache.set(key, outcome, settings.DICOM_EXPLORER_CACHE_TTL)
    return outcome


def search_studies(request, server: DicomServer, query: QueryDataset) -> Outcome:
    return run_query(
        request,
        server,
        "STUDY",
        query,
        lambda op, q, n: op.find_studies(q, limit_results=n),
        study_row,
    )


def studies_of_patient(request, server: DicomServer, patient_id: str) -> Outcome:
    query = QueryDataset.create(QueryRetrieveLevel="STUDY", PatientID=patient_id)
    return search_studies(request, server, query)


def study_of(request, server: DicomServer, study_uid: str) -> StudyRow | None:
    """The one study (for the study page's heading), or None if the server does not know it."""
    query = QueryDataset.create(QueryRetrieveLevel="STUDY", StudyInstanceUID=study_uid)
    outcome = search_studies(request, server, query)
    return outcome.rows[0] if outcome.rows else None


def series_of_study(request, server: DicomServer, patient_id: str, study_uid: str) -> Outcome:
    query = QueryDataset.create(
        QueryRetrieveLevel="SERIES", PatientID=patient_id or None, StudyInstanceUID=study_uid
    )
    outcome = run_query(
        request,
        server,
        "SERIES",
        query,
        lambda op, q, n: op.find_series(q, limit_results=n),
        lambda r: SeriesRow(
            r.SeriesInstanceUID,
            r.SeriesNumber,
            r.Modality,
            r.SeriesDescription,
            r.NumberOfSeriesRelatedInstances,
        ),
    )
    outcome.rows.sort(key=lambda s: (s.number is None, s.number or 0, s.series_uid))
    return outcome


def instances_of_series(
    request, server: DicomServer, patient_id: str, study_uid: str, series_uid: str
) -> Outcome:
    query = QueryDataset.create(
        QueryRetrieveLevel="IMAGE",
        PatientID=patient_id or None,
        StudyInstanceUID=study_uid,
        SeriesInstanceUID=series_uid,
    )
    outcome = run_query(
        request,
        server,
        "IMAGE",
        query,
        lambda op, q, n: op.find_images(q, limit_results=n),
        lambda r: InstanceRow(r.SOPInstanceUID, r.SOPClassUID, r.InstanceNumber),
    )
    outcome.rows.sort(key=lambda i: (i.number is None, i.number or 0, i.sop_uid))
    return outcome


# --- instances and previews -------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceLocation:
    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str


def _audit_preview(request, server, where: InstanceLocation, what: str, outcome: str, **details):
    record(
        AuditEntry.Action.RETRIEVE,
        request=request,
        source=server,
        outcome=outcome,
        patient_id=where.patient_id,
        study_uid=where.study_uid,
        series_uids=[where.series_uid],
        details={"explorer": what, "sop_instance_uid": where.sop_uid, **details},
    )


def fetch_instance(request, server: DicomServer, where: InstanceLocation) -> Dataset:
    """The one instance (from the user's cache when it was fetched a moment ago).

    Raises:
        PreviewError: the server did not deliver it (with the reason).
    """
    key = _cache_key(request.user, server.pk, "instance", where.sop_uid)
    data = cache.get(key)
    if data is not None:
        return pydicom.dcmread(io.BytesIO(data))
    operator = make_operator(server)
    try:
        ds = next(
            iter(
                operator.fetch_image(
                    where.patient_id, where.study_uid, where.series_uid, where.sop_uid
                )
            ),
            None,
        )
    except Exception as error:  # noqa: BLE001 — the reason is shown instead of the image
        if not isinstance(error, DicomError):
            logger.exception("Explorer fetch from %s failed", server.name)
        raise PreviewError(error_message(server, error)) from None
    if ds is None:
        raise PreviewError(f"{server.name} did not deliver the instance.")
    output = io.BytesIO()
    ds.save_as(output, enforce_file_format=True)
    if output.tell() <= MAX_CACHED_INSTANCE_BYTES:
        cache.set(key, output.getvalue(), settings.DICOM_EXPLORER_CACHE_TTL)
    return ds


def instance_for_page(request, server: DicomServer, where: InstanceLocation) -> Dataset:
    """The instance for the instance page (its header), audited as a retrieve."""
    try:
        ds = fetch_instance(request, server, where)
    except PreviewError:
        _audit_preview(request, server, where, "header", AuditEntry.Outcome.FAILURE)
        raise
    _audit_preview(request, server, where, "header", AuditEntry.Outcome.SUCCESS)
    return ds


def _rendered_by_server(server: DicomServer, where: InstanceLocation, frame: int) -> bytes | None:
    """The server's own rendering when it speaks WADO-RS, else None (ADIT renders then)."""
    if not (server.dicomweb_root_url and server.dicomweb_wado_support):
        return None
    operator = make_operator(server)
    assert operator.dicomweb is not None
    try:
        data = operator.dicomweb.retrieve_rendered(
            where.study_uid, where.series_uid, where.sop_uid, frame
        )
    except DicomError as error:
        logger.debug("WADO-RS /rendered on %s failed (%s); rendering in ADIT", server.name, error)
        return None
    return data if data.startswith(b"\x89PNG") else None


def _render(ds: Dataset, frame: int, max_size: int | None) -> bytes:
    try:
        return render_png(ds, frame, max_size)
    except PreviewError:
        raise
    except Exception as error:  # noqa: BLE001 — a file a PACS delivers may be broken in any way
        logger.exception("Rendering an instance failed")
        raise PreviewError(f"The image could not be rendered ({type(error).__name__}).") from None


def preview_png(
    request, server: DicomServer, where: InstanceLocation, frame: int, max_size: int | None
) -> bytes:
    """A PNG of one frame (thumbnails are at most `max_size` pixels wide and high).

    Raises:
        PreviewError: why there is no image.
    """
    what = "thumbnail" if max_size else "image"
    try:
        data = _rendered_by_server(server, where, frame)
        if data is not None and max_size:
            data = shrink_png(data, max_size)
        if data is None:
            data = _render(fetch_instance(request, server, where), frame, max_size)
    except PreviewError as error:
        _audit_preview(
            request, server, where, what, AuditEntry.Outcome.FAILURE, frame=frame, reason=str(error)
        )
        raise
    _audit_preview(request, server, where, what, AuditEntry.Outcome.SUCCESS, frame=frame)
    return data


def representative_instance(
    request, server: DicomServer, patient_id: str, study_uid: str, series_uid: str
) -> InstanceLocation:
    """The middle instance of a series (by InstanceNumber): what a thumbnail shows."""
    outcome = instances_of_series(request, server, patient_id, study_uid, series_uid)
    if outcome.error:
        raise PreviewError(outcome.error)
    if not outcome.rows:
        raise PreviewError("The series has no instances.")
    middle = outcome.rows[len(outcome.rows) // 2]
    return InstanceLocation(patient_id, study_uid, series_uid, middle.sop_uid)
