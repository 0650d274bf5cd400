"""DICOMweb connector: QIDO-RS (dicomweb-client), WADO-RS and STOW-RS, both streamed.

HTTP 408, 409, 429 and 5xx as well as connection errors and timeouts raise
`RetriableDicomError`; other HTTP errors raise `DicomError`. Retrieved instances are requested
in the transfer syntax they are stored in (``transfer-syntax=*``), so nothing is transcoded.

WADO-RS → STOW-RS without encoding again. A study retrieved with WADO-RS arrives as Part-10
files in a ``multipart/related`` body; ADIT reads it part by part (`adit_client.multipart`, one
part in memory) and every instance keeps the bytes of its data set as they arrived
(`remember_received_encoding`, the same fail-closed bookkeeping as for DIMSE: any change to the
instance drops them). Storing it unchanged (`send_stow_rs(..., unchanged=True)`, C-STORE with
`reuse_received_encoding`) sends those bytes, behind a freshly written file meta header, instead
of encoding the data set element by element again. dicomweb-client parses every part whole and
encodes every stored instance again, so WADO-RS and STOW-RS use their own few requests here.

STOW-RS is pipelined: instances are gathered into batches (by count and bytes) on the caller's
thread (which fetches them) while up to `STOW_REQUESTS_IN_FLIGHT` earlier batches are posted by
sender threads. The fetch from the source thus goes on while the destination stores the batch
before, and memory stays bounded by the batches in flight (a batch's body is written to the
socket piece by piece, never joined into one buffer).
"""

from __future__ import annotations

import logging
import queue
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from typing import TypeVar

import requests
from adit_client.multipart import (
    MultipartError,
    closing_delimiter,
    iter_parts,
    new_boundary,
    parse_content_type,
    part_header,
)
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
)

from .config import LocalConfig, ServerConfig
from .dimse import (
    SOP_INSTANCE_UID,
    received_instance,
    remember_received_encoding,
    uid_of,
)
from .errors import DicomError, RetriableDicomError
from .part10 import file_meta_bytes
from .query import QueryDataset, ResultDataset, results_from_qido

logger = logging.getLogger(__name__)

RETRIABLE_HTTP_STATUSES = frozenset({408, 409, 429})
# Ask for instances as stored: the server must not transcode (keeps compressed data compressed).
AS_STORED_MEDIA_TYPES = (("application/dicom", "*"),)
AS_STORED_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
# Reads of a WADO-RS body: large enough that a 0.5 MB instance takes one or two reads.
READ_SIZE = 1024 * 1024
# STOW-RS batches: by count and bytes; this many batches are posted at once (the destination
# stores one while the next is sent, and the fetch goes on meanwhile).
STOW_BATCH_SIZE = 64
STOW_BATCH_BYTES = 16 * 1024 * 1024
STOW_REQUESTS_IN_FLIGHT = 2
# (0002,0000) File Meta Information Group Length, explicit VR little endian, value length 4.
_GROUP_LENGTH_ELEMENT = b"\x02\x00\x00\x00UL\x04\x00"

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
        self._sender_sessions: set[requests.Session] = set()
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
        for session in list(self._sender_sessions):
            session.close()

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

    def _url(self, prefix: str | None, *parts: str) -> str:
        root = self.server.dicomweb_root_url.rstrip("/")
        prefix = (prefix or "").strip("/")
        return "/".join([root, *([prefix] if prefix else []), *parts])

    def _headers(self, **extra: str) -> dict[str, str]:
        headers = dict(extra)
        if self.server.dicomweb_authorization_header:
            headers["Authorization"] = self.server.dicomweb_authorization_header
        return headers

    def _timeouts(self) -> tuple[float, float]:
        return (self.local.timeouts.connection, self.local.timeouts.http)

    def _retrieve(self, *path: str) -> Iterator[Dataset]:
        """The instances of a WADO-RS retrieve of `path`, parsed one part at a time as the
        body arrives; each keeps the bytes its data set arrived as."""
        if self._aborted.is_set():
            raise DicomError(f"DICOMweb on {self.server}: connector was aborted")
        response = self._session.get(
            self._url(self.server.dicomweb_wado_prefix, *path),
            headers=self._headers(Accept=AS_STORED_ACCEPT),
            stream=True,
            timeout=self._timeouts(),
        )
        try:
            response.raise_for_status()
            if response.status_code == 204:
                return  # nothing matches
            media_type, params = parse_content_type(response.headers.get("Content-Type", ""))
            boundary = params.get("boundary", "")
            if media_type != "multipart/related" or not boundary:
                raise DicomError(
                    f"WADO-RS on {self.server}: the answer is not multipart/related "
                    f"({media_type or 'no content type'})"
                )
            raw = response.raw

            def read(size: int) -> bytes:
                return raw.read(size, decode_content=True)

            try:
                for headers, body in iter_parts(read, boundary, chunk_size=READ_SIZE):
                    content_type = headers.get("content-type", "application/dicom")
                    if content_type.split(";")[0].strip().lower() != "application/dicom":
                        # A server that fails mid-way may explain it in a text part (ADIT's
                        # own DICOMweb API does): the retrieve is incomplete.
                        text = body[:300].decode("utf-8", "replace")
                        raise RetriableDicomError(
                            f"WADO-RS on {self.server}: a part of type {content_type!r} "
                            f"instead of an instance: {text}"
                        )
                    yield instance_from_part10(body)
            except MultipartError as error:
                # The body broke off (the server or the connection failed mid-way).
                raise RetriableDicomError(f"WADO-RS on {self.server}: {error}") from error
        finally:
            response.close()

    def iter_study(self, study_uid: str) -> Iterator[Dataset]:
        return self._stream("WADO-RS", lambda: self._retrieve("studies", study_uid))

    def iter_series(self, study_uid: str, series_uid: str) -> Iterator[Dataset]:
        return self._stream(
            "WADO-RS", lambda: self._retrieve("studies", study_uid, "series", series_uid)
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
        batch_size: int = STOW_BATCH_SIZE,
        batch_bytes: int = STOW_BATCH_BYTES,
        unchanged: bool = False,
        requests_in_flight: int = STOW_REQUESTS_IN_FLIGHT,
    ) -> StowResult:
        """Stores instances in few requests (batches by count and bytes), pipelined.

        `unchanged`: the instances are exactly as fetched, so those that still hold the bytes
        they arrived as are sent as those bytes (see the module). A failed batch with a
        retriable status stops at once (RetriableDicomError); instances the server reports as
        failed are collected and raised as RetriableDicomError at the end.
        """
        if self._aborted.is_set():
            raise DicomError(f"DICOMweb on {self.server}: connector was aborted")
        result = StowResult()
        with _StowSenders(self, result, max(1, requests_in_flight)) as senders:
            batch: list[tuple[str, list[bytes]]] = []
            size = 0
            for ds in datasets:
                pieces = part10_pieces(ds) if unchanged else None
                if pieces is None:
                    pieces = [_encode_part10(ds)]
                batch.append((uid_of(ds, SOP_INSTANCE_UID), pieces))
                size += sum(map(len, pieces))
                if len(batch) >= batch_size or size >= batch_bytes:
                    senders.submit(batch)
                    batch, size = [], 0
            if batch:
                senders.submit(batch)
        self.warnings.extend(result.warnings)
        if result.failed_sop_instance_uids:
            raise RetriableDicomError(
                f"STOW-RS on {self.server}: {len(result.failed_sop_instance_uids)} of "
                f"{len(result.failed_sop_instance_uids) + result.stored} instances failed"
            )
        return result

    def store_batch(
        self, batch: list[Dataset], result: StowResult, unchanged: bool = False
    ) -> set[str]:
        """Stores `batch` with one STOW-RS request; returns the SOP Instance UIDs the server
        reported as failed (also added to `result`)."""
        parts = []
        for ds in batch:
            pieces = part10_pieces(ds) if unchanged else None
            parts.append((uid_of(ds, SOP_INSTANCE_UID), pieces or [_encode_part10(ds)]))
        return self._post_batch(self._session, parts, result, threading.Lock())

    def _post_batch(
        self,
        session: requests.Session,
        parts: list[tuple[str, list[bytes]]],
        result: StowResult,
        lock: threading.Lock,
    ) -> set[str]:
        """One STOW-RS request of `parts` ((SOP Instance UID, Part-10 pieces) each)."""
        boundary = new_boundary()
        body = _Body(boundary, [pieces for _, pieces in parts])
        content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
        try:
            response = session.post(
                self._url(self.server.dicomweb_stow_prefix, "studies"),
                data=body,
                headers=self._headers(
                    **{"Content-Type": content_type, "Accept": "application/dicom+json"}
                ),
                timeout=self._timeouts(),
            )
        except Exception as error:
            raise self._translate("STOW-RS", error) from error
        with response:
            if response.status_code == 409:
                # Conflict: a FailedSOPSequence names what was refused; without one, all was.
                failed = _failed_uids(response.content)
                if not failed:
                    raise self._translate("STOW-RS", _http_error(response))
            elif response.status_code >= 400:
                raise self._translate("STOW-RS", _http_error(response))
            else:
                failed = _failed_uids(response.content) or []
                if response.status_code == 202:
                    with lock:
                        result.warnings.append(
                            f"STOW-RS on {self.server}: the server stored with warnings "
                            f"(HTTP 202) some of {len(parts)} instances"
                        )
        with lock:
            result.failed_sop_instance_uids.extend(failed)
            result.stored += max(0, len(parts) - len(failed))
        return set(failed)


class _Body:
    """A multipart/related body written piece by piece, with its length known beforehand
    (requests sends it with Content-Length, not chunked, which every server accepts)."""

    def __init__(self, boundary: str, parts: list[list[bytes]]) -> None:
        self.boundary = boundary
        self.parts = parts
        header = part_header("application/dicom", boundary)
        self._length = len(closing_delimiter(boundary)) + sum(
            len(header) + sum(map(len, pieces)) + 2 for pieces in parts
        )

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        header = part_header("application/dicom", self.boundary)
        for pieces in self.parts:
            yield header
            yield from pieces
            yield b"\r\n"
        yield closing_delimiter(self.boundary)


_DONE = object()


class _StowSenders:
    """Sender threads that post the batches handed to `submit` (at most `count` in flight,
    one more waiting); the first error stops the rest and is raised by `__exit__`."""

    def __init__(self, connector: DicomWebConnector, result: StowResult, count: int) -> None:
        self.connector = connector
        self.result = result
        self.lock = threading.Lock()
        self.batches: queue.Queue = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.failed = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, name=f"stow-rs-{index}", daemon=True)
            for index in range(count)
        ]

    def __enter__(self) -> _StowSenders:
        for thread in self.threads:
            thread.start()
        return self

    def submit(self, batch: list[tuple[str, list[bytes]]]) -> None:
        while not self.failed.is_set():
            try:
                self.batches.put(batch, timeout=0.2)
                return
            except queue.Full:
                continue
        self._raise()

    def _raise(self) -> None:
        assert self.error is not None
        raise self.error

    def _run(self) -> None:
        sessions = self.connector._sender_sessions
        with requests.Session() as session:
            sessions.add(session)
            try:
                self._post_all(session)
            finally:
                sessions.discard(session)

    def _post_all(self, session: requests.Session) -> None:
        while True:
            batch = self.batches.get()
            if batch is _DONE:
                return
            if self.failed.is_set():
                continue  # drain: an earlier batch failed
            try:
                if self.connector.aborted:
                    raise DicomError(f"DICOMweb on {self.connector.server}: connector was aborted")
                self.connector._post_batch(session, batch, self.result, self.lock)
            except BaseException as error:
                with self.lock:
                    if self.error is None:
                        self.error = error
                self.failed.set()

    def __exit__(self, exc_type, exc, traceback) -> None:
        for _ in self.threads:
            while True:
                try:
                    self.batches.put(_DONE, timeout=0.2)
                    break
                except queue.Full:
                    if not any(thread.is_alive() for thread in self.threads):
                        break
        for thread in self.threads:
            thread.join()
        if exc_type is None and self.error is not None:
            self._raise()


def instance_from_part10(body: bytes) -> Dataset:
    """Reads a Part-10 file (a WADO-RS part) and remembers the bytes of its data set.

    Raises:
        DicomError: the part is not a DICOM instance.
    """
    try:
        try:
            ds = dcmread(BytesIO(body))
        except InvalidDicomError:
            ds = dcmread(BytesIO(body), force=True)  # file meta without preamble
    except Exception as error:  # noqa: BLE001 — pydicom raises many kinds for damaged data
        raise DicomError(f"a WADO-RS part is not a DICOM instance ({error})") from error
    start = _data_set_offset(body)
    transfer_syntax = ds.file_meta.get("TransferSyntaxUID") if ds.file_meta else None
    if start is not None and transfer_syntax and transfer_syntax != DeflatedExplicitVRLittleEndian:
        remember_received_encoding(ds, str(transfer_syntax), body[start:])
    return ds


def _data_set_offset(body: bytes) -> int | None:
    """Where the data set starts in a Part-10 file with preamble and a group length."""
    if body[128:132] != b"DICM" or body[132:140] != _GROUP_LENGTH_ELEMENT:
        return None
    (group_length,) = struct.unpack_from("<I", body, 140)
    start = 144 + group_length
    return start if start <= len(body) else None


def part10_pieces(ds: Dataset) -> list[bytes] | None:
    """The instance as a Part-10 file made of the bytes its data set arrived as (preamble and
    file meta written anew, then those bytes, not copied), or None if it has none any more."""
    instance = received_instance(ds)
    if instance is None or instance.transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
        return None
    # The file meta names the implementation that wrote the file the instance came from.
    implementation_uid, implementation_version = PYDICOM_IMPLEMENTATION_UID, ""
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None:
        implementation_uid = str(file_meta.get("ImplementationClassUID") or implementation_uid)
        implementation_version = str(file_meta.get("ImplementationVersionName") or "")
    header = file_meta_bytes(
        instance.sop_class_uid,
        instance.sop_instance_uid,
        instance.transfer_syntax_uid,
        implementation_uid,
        implementation_version,
    )
    return [header, bytes(instance.data_set)]  # its bytes as they are (no copy of bytes)


def _encode_part10(ds: Dataset) -> bytes:
    buffer = BytesIO()
    dcmwrite(buffer, _as_part10(ds), enforce_file_format=True)
    return buffer.getvalue()


def _http_error(response: requests.Response) -> requests.HTTPError:
    return requests.HTTPError(f"HTTP {response.status_code}", response=response)


def _failed_uids(content: bytes) -> list[str] | None:
    """SOP Instance UIDs in the FailedSOPSequence of a STOW-RS answer; None if unreadable."""
    if not content.strip():
        return []
    try:
        ds = Dataset.from_json(content.decode("utf-8"))
    except Exception:
        return None
    return [
        str(item.get("ReferencedSOPInstanceUID", "?")) for item in ds.get("FailedSOPSequence", [])
    ]


def _as_part10(ds: Dataset) -> Dataset:
    """Completes what pydicom needs to write the instance as a Part 10 file (preamble, DICM,
    meta): instances received over DIMSE carry neither preamble nor complete file meta, and
    STOW-RS (PS3.18 10.5) requires Part 10 bodies.
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
