"""DICOMweb connector: QIDO-RS, WADO-RS (streamed) and STOW-RS with dicomweb-client.

HTTP 408, 409, 429 and 5xx as well as connection errors and timeouts raise
`RetriableDicomError`; other HTTP errors raise `DicomError`. Retrieved instances are requested
in the transfer syntax they are stored in (``transfer-syntax=*``), so nothing is transcoded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from .config import LocalConfig, ServerConfig
from .errors import DicomError, RetriableDicomError
from .query import QueryDataset, ResultDataset, results_from_qido

logger = logging.getLogger(__name__)

RETRIABLE_HTTP_STATUSES = frozenset({408, 409, 429})
# Ask for instances as stored: the server must not transcode (keeps compressed data compressed).
AS_STORED_MEDIA_TYPES = (("application/dicom", "*"),)

T = TypeVar("T")


@dataclass
class StowResult:
    stored: int = 0
    failed_sop_instance_uids: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _is_retriable_status(status: int) -> bool:
    return status in RETRIABLE_HTTP_STATUSES or status >= 500


class DicomWebConnector:
    """DICOMweb operations against one server (one HTTP session, closed by `abort()`)."""

    def __init__(self, server: ServerConfig, local: LocalConfig) -> None:
        if not server.dicomweb_root_url:
            raise DicomError(f"Server {server}: no DICOMweb root URL configured")
        self.server = server
        self.local = local
        self.warnings: list[str] = []
        self._session = requests.Session()
        self._aborted = threading.Event()

    def _client(self) -> DICOMwebClient:
        if self._aborted.is_set():
            raise DicomError(f"DICOMweb on {self.server}: connector was aborted")
        headers = {}
        if self.server.dicomweb_authorization_header:
            headers["Authorization"] = self.server.dicomweb_authorization_header
        timeout = self.local.timeouts.http
        client = DICOMwebClient(
            url=self.server.dicomweb_root_url.rstrip("/"),
            session=self._session,
            qido_url_prefix=self.server.dicomweb_qido_prefix or None,
            wado_url_prefix=self.server.dicomweb_wado_prefix or None,
            stow_url_prefix=self.server.dicomweb_stow_prefix or None,
            headers=headers or None,
            timeout=(self.local.timeouts.connection, timeout),
        )
        # Retries belong to the task level (with backoff across workers), not inside a request.
        client.set_http_retry_params(retry=False)
        return client

    def abort(self) -> None:
        """Closes the HTTP session; ongoing and later calls end (thread-safe)."""
        self._aborted.set()
        self._session.close()

    @property
    def aborted(self) -> bool:
        return self._aborted.is_set()

    def _translate(self, operation: str, error: Exception) -> DicomError:
        where = f"{operation} on {self.server}"
        if isinstance(error, requests.HTTPError) and error.response is not None:
            status = error.response.status_code
            message = f"{where}: HTTP {status} {error.response.reason or ''}".rstrip()
            if _is_retriable_status(status):
                return RetriableDicomError(message)
            return DicomError(message)
        if isinstance(error, requests.Timeout | requests.ConnectionError | TimeoutError):
            return RetriableDicomError(f"{where}: {type(error).__name__}: {error}")
        if isinstance(error, requests.RequestException | OSError):
            return RetriableDicomError(f"{where}: {error}")
        return DicomError(f"{where}: {type(error).__name__}: {error}")

    def _call(self, operation: str, function: Callable[[], T]) -> T:
        try:
            return function()
        except DicomError:
            raise
        except Exception as error:
            raise self._translate(operation, error) from error

    def _stream(self, operation: str, make: Callable[[], Iterable[Dataset]]) -> Iterator[Dataset]:
        try:
            yield from make()
        except DicomError:
            raise
        except GeneratorExit:
            raise
        except Exception as error:
            if self.aborted:
                return
            raise self._translate(operation, error) from error

    # --- QIDO-RS ----------------------------------------------------------------------------

    def send_qido_rs(
        self, query: QueryDataset, limit_results: int | None = None
    ) -> list[ResultDataset]:
        """Searches at the query's level (STUDY, SERIES or IMAGE) with its filters and fields."""
        level = query.level
        filters, fields = query.get_search_filters_and_fields()
        study_uid = filters.pop("StudyInstanceUID", None)
        series_uid = filters.pop("SeriesInstanceUID", None)
        client = self._client()
        if level in ("STUDY", "PATIENT"):
            # Every study result carries ModalitiesInStudy (PS3.18 Table 6.7.1-2); naming it
            # in includefield makes Orthanc 1.10 answer the patient's modalities instead of
            # the study's.
            fields = [name for name in fields if name != "ModalitiesInStudy"]
            if study_uid:
                filters["StudyInstanceUID"] = study_uid
            if series_uid:
                filters["SeriesInstanceUID"] = series_uid
            items = self._call(
                "QIDO-RS",
                lambda: client.search_for_studies(
                    fields=fields or None, search_filters=filters, limit=limit_results
                ),
            )
        elif level == "SERIES":
            if series_uid:
                filters["SeriesInstanceUID"] = series_uid
            items = self._call(
                "QIDO-RS",
                lambda: client.search_for_series(
                    study_instance_uid=study_uid,
                    fields=fields or None,
                    search_filters=filters,
                    limit=limit_results,
                ),
            )
        elif level == "IMAGE":
            items = self._call(
                "QIDO-RS",
                lambda: client.search_for_instances(
                    study_instance_uid=study_uid,
                    series_instance_uid=series_uid,
                    fields=fields or None,
                    search_filters=filters,
                    limit=limit_results,
                ),
            )
        else:
            raise DicomError(f"QIDO-RS on {self.server}: query has no valid QueryRetrieveLevel")
        results = results_from_qido(items)
        return results[:limit_results] if limit_results is not None else results

    # --- WADO-RS ----------------------------------------------------------------------------

    def iter_study(self, study_uid: str) -> Iterator[Dataset]:
        client = self._client()
        return self._stream(
            "WADO-RS",
            lambda: client.iter_study(study_uid, media_types=AS_STORED_MEDIA_TYPES),
        )

    def iter_series(self, study_uid: str, series_uid: str) -> Iterator[Dataset]:
        client = self._client()
        return self._stream(
            "WADO-RS",
            lambda: client.iter_series(study_uid, series_uid, media_types=AS_STORED_MEDIA_TYPES),
        )

    def retrieve_instance(self, study_uid: str, series_uid: str, image_uid: str) -> Dataset:
        client = self._client()
        return self._call(
            "WADO-RS",
            lambda: client.retrieve_instance(
                study_uid, series_uid, image_uid, media_types=AS_STORED_MEDIA_TYPES
            ),
        )

    def retrieve_rendered(
        self, study_uid: str, series_uid: str, image_uid: str, frame: int = 1
    ) -> bytes:
        """One frame of an instance as a PNG the server rendered (WADO-RS ``/rendered``)."""
        client = self._client()
        return self._call(
            "WADO-RS rendered",
            lambda: client.retrieve_instance_frames_rendered(
                study_uid, series_uid, image_uid, [frame], media_types=("image/png",)
            ),
        )

    def send_wado_rs(self, query: QueryDataset) -> Iterator[Dataset]:
        """Streams the instances selected by the query's level and UIDs."""
        level = query.level
        study_uid = query.get_str("StudyInstanceUID")
        if not query.is_concrete("StudyInstanceUID"):
            raise DicomError(f"WADO-RS on {self.server}: a StudyInstanceUID is required")
        if level == "STUDY":
            return self.iter_study(study_uid)
        series_uid = query.get_str("SeriesInstanceUID")
        if level == "SERIES":
            return self.iter_series(study_uid, series_uid)
        if level == "IMAGE":
            image_uid = query.get_str("SOPInstanceUID")
            return iter([self.retrieve_instance(study_uid, series_uid, image_uid)])
        raise DicomError(f"WADO-RS on {self.server}: unsupported level {level or '?'}")

    # --- STOW-RS ----------------------------------------------------------------------------

    def send_stow_rs(
        self,
        datasets: Iterable[Dataset],
        batch_size: int = 64,
        batch_bytes: int = 64 * 1024 * 1024,
    ) -> StowResult:
        """Stores instances in few requests (batches by count and approximate size).

        A failed batch with a retriable status stops at once (RetriableDicomError); instances
        the server reports as failed are collected and raised as RetriableDicomError at the end.
        """
        client = self._client()
        result = StowResult()
        batch: list[Dataset] = []
        size = 0
        for ds in datasets:
            batch.append(_as_part10(ds))
            size += _approximate_size(ds)
            if len(batch) >= batch_size or size >= batch_bytes:
                self._store_batch(client, batch, result)
                batch, size = [], 0
        if batch:
            self._store_batch(client, batch, result)
        self.warnings.extend(result.warnings)
        if result.failed_sop_instance_uids:
            raise RetriableDicomError(
                f"STOW-RS on {self.server}: {len(result.failed_sop_instance_uids)} of "
                f"{len(result.failed_sop_instance_uids) + result.stored} instances failed"
            )
        return result

    def _store_batch(self, client: DICOMwebClient, batch: list[Dataset], result: StowResult):
        try:
            response = client.store_instances(batch)
        except Exception as error:
            failed = _failed_uids_from_http_error(error)
            if failed is None:
                raise self._translate("STOW-RS", error) from error
            response = None
            result.failed_sop_instance_uids.extend(failed)
            result.stored += len(batch) - len(failed)
            return
        failed = []
        if response is not None and "FailedSOPSequence" in response:
            failed = [
                str(item.get("ReferencedSOPInstanceUID", "?"))
                for item in response.FailedSOPSequence
            ]
        result.failed_sop_instance_uids.extend(failed)
        result.stored += len(batch) - len(failed)


def _as_part10(ds: Dataset) -> Dataset:
    """Makes dicomweb-client encode the instance as a Part 10 file (preamble, DICM, meta).

    It writes datasets as they are, and instances received over DIMSE carry neither preamble
    nor complete file meta; STOW-RS (PS3.18 10.5) requires Part 10 bodies.
    """
    ds.ensure_file_meta()
    meta = ds.file_meta
    if "MediaStorageSOPClassUID" not in meta and "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "MediaStorageSOPInstanceUID" not in meta and "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if "TransferSyntaxUID" not in meta:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if not getattr(ds, "preamble", None):
        ds.preamble = b"\x00" * 128
    return ds


def _approximate_size(ds: Dataset) -> int:
    pixel_data = ds.get("PixelData")
    return len(pixel_data) + 4096 if isinstance(pixel_data, bytes | bytearray) else 4096


def _failed_uids_from_http_error(error: Exception) -> list[str] | None:
    """Failed instances of a STOW-RS answer 409 with a FailedSOPSequence, else None."""
    if not isinstance(error, requests.HTTPError) or error.response is None:
        return None
    if error.response.status_code != 409:
        return None
    try:
        ds = Dataset.from_json(error.response.content)
        return [str(item.ReferencedSOPInstanceUID) for item in ds.FailedSOPSequence]
    except Exception:
        return None
