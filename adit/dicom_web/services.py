"""What the DICOMweb views do: find the server, query, stream retrieved instances, store.

The views stay thin; everything here works with plain values and the DICOM layer.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

from adit_client.multipart import MultipartError, iter_parts
from django.conf import settings
from pydicom import Dataset, dcmread
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.errors import InvalidDicomError
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.filewriter import dcmwrite
from pydicom.multival import MultiValue
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from adit.core.deidentification import options_for_new_job, pseudonymization_seed
from adit.core.dicom.completeness import IncompleteDataSet, check_complete
from adit.core.dicom.errors import DicomError, RetriableDicomError
from adit.core.dicom.operator import DicomOperator
from adit.core.dicom.part10 import EncodedInstance
from adit.core.dicom.pseudonymizer import InstanceTransformer, PseudonymizationError
from adit.core.dicom.query import (
    QueryDataset,
    has_wildcards,
    matches_wildcard,
    person_name_to_dicom,
)
from adit.core.dicom_settings import local_config
from adit.core.models import DicomServer

from .errors import BadRequest, api_error_for
from .handoff import Handoff

logger = logging.getLogger(__name__)

QIDO_RESERVED_PARAMETERS = ("includefield", "limit", "offset", "fuzzymatching")
MAX_QIDO_LIMIT = 10_000
# Failure reasons of STOW-RS (PS3.4 Storage Service status codes).
FAILURE_PROCESSING = 0x0110
FAILURE_OUT_OF_RESOURCES = 0xA700
FAILURE_CANNOT_UNDERSTAND = 0xC000
FAILURE_SOP_CLASS_MISMATCH = 0xA900


def find_server(user, ae_title: str, direction: str) -> DicomServer | None:
    """The active server with this AE title that the user's active group may use that way."""
    return (
        DicomServer.objects.accessible_by_user(user, direction)  # type: ignore[attr-defined]
        .filter(ae_title=ae_title)
        .first()
    )


def make_operator(server: DicomServer) -> DicomOperator:
    return DicomOperator(server.to_config(), local_config())


# --- QIDO-RS --------------------------------------------------------------------------------

# Attributes every result carries (PS3.18 Table 6.7.1-2, "Required Attributes"), as far as the
# source knows them; RetrieveURL is ADIT's own (set after the search). Study-level attributes
# are merged into series and instance results, series-level ones into instance results (what
# Table 6.7.1-2a asks for searches that do not name the study or series in the path).
STUDY_RETURN_KEYS = (
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
SERIES_RETURN_KEYS = (
    "Modality",
    "SeriesDescription",
    "SeriesInstanceUID",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
)
INSTANCE_RETURN_KEYS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
)
# What `includefield=all` adds: the further attributes of each level that a PACS index
# commonly answers for (C-FIND return keys need names; "all" has to be spelled out).
ALL_FIELDS = {
    "STUDY": ("StudyDescription", "InstitutionName", "PatientAge", "OtherPatientIDs"),
    "SERIES": (
        "StudyDescription",
        "BodyPartExamined",
        "ProtocolName",
        "SeriesDate",
        "SeriesTime",
        "Laterality",
    ),
    "IMAGE": (
        "StudyDescription",
        "ContentDate",
        "ContentTime",
        "AcquisitionNumber",
        "ImageType",
        "PhotometricInterpretation",
        "SamplesPerPixel",
    ),
}
RETURN_KEYS = {
    "STUDY": STUDY_RETURN_KEYS,
    "SERIES": SERIES_RETURN_KEYS,
    "IMAGE": INSTANCE_RETURN_KEYS,
}
# Matching keys that belong to the study (or patient) level: a search across studies sends
# them to the study-level query and the rest to the series/instance query.
STUDY_LEVEL_KEYWORDS = frozenset(STUDY_RETURN_KEYS) | {
    "StudyDescription",
    "InstitutionName",
    "PatientAge",
    "OtherPatientIDs",
    "IssuerOfPatientID",
    "PatientComments",
    "PatientWeight",
    "PatientSize",
    "AdmittingDiagnosesDescription",
}
SERIES_LEVEL_KEYWORDS = frozenset(SERIES_RETURN_KEYS) | {
    "BodyPartExamined",
    "ProtocolName",
    "SeriesDate",
    "SeriesTime",
    "Laterality",
    "StationName",
    "Manufacturer",
    "ManufacturerModelName",
}
FUZZY_KEYWORDS = ("PatientName", "ReferringPhysicianName")


@dataclass
class SearchRequest:
    query: QueryDataset
    limit: int | None = None
    offset: int = 0
    include_fields: list[str] = field(default_factory=list)
    include_all: bool = False
    fuzzy: bool = False


def _keyword_of(key: str) -> str:
    """A QIDO-RS attribute key: a keyword, or a tag as 8 hex digits (e.g. 00100020)."""
    if len(key) == 8 and all(c in "0123456789abcdefABCDEF" for c in key):
        keyword = keyword_for_tag(int(key, 16))
        if not keyword:
            raise BadRequest(f"Unknown DICOM tag {key!r} in the query parameters.")
        return keyword
    if tag_for_keyword(key) is None:
        raise BadRequest(
            f"Unknown query parameter {key!r}: not a DICOM keyword, a tag (8 hex digits) or "
            f"one of {', '.join(QIDO_RESERVED_PARAMETERS)}."
        )
    return key


def _non_negative_int(name: str, text: str, maximum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, got {text!r}.") from None
    if value < 0 or value > maximum:
        raise BadRequest(f"{name} must be between 0 and {maximum}, got {value}.")
    return value


def _fuzzy(keyword: str, text: str) -> str:
    """Fuzzy matching of person names as ADIT offers it on every source: each name component
    matches as a case-insensitive prefix ("smi^jo" finds "Smith^John")."""
    if keyword not in FUZZY_KEYWORDS or not text:
        return text
    return "\\".join(person_name_to_dicom(value, add_wildcards=True) for value in text.split("\\"))


def build_search(params, path_uids: dict[str, str]) -> SearchRequest:
    """Turns QIDO-RS query parameters (a QueryDict) into a validated query.

    Several values of an attribute (``Modality=CT,MR`` or ``Modality=CT&Modality=MR``, a list
    of UIDs) match any of them (PS3.18 8.3.4.1).

    Raises:
        BadRequest: naming the parameter for unknown keywords, bad values or bad paging.
    """
    values: dict[str, Any] = {}
    include_fields: list[str] = []
    include_all = False
    fuzzy = False
    limit: int | None = None
    offset = 0
    for key in params:
        items = [item for item in params.getlist(key)]
        if key == "includefield":
            for item in items:
                for name in item.split(","):
                    name = name.strip()
                    if not name:
                        continue
                    if name.lower() == "all":
                        include_all = True
                        continue
                    include_fields.append(_keyword_of(name))
        elif key == "limit":
            limit = _non_negative_int("limit", items[-1], MAX_QIDO_LIMIT)
        elif key == "offset":
            offset = _non_negative_int("offset", items[-1], MAX_QIDO_LIMIT)
        elif key == "fuzzymatching":
            if items[-1].lower() not in ("true", "false"):
                raise BadRequest(f"fuzzymatching must be true or false, got {items[-1]!r}.")
            fuzzy = items[-1].lower() == "true"
        else:
            keyword = _keyword_of(key)
            if keyword in path_uids:
                raise BadRequest(
                    f"{keyword} is given in the path; do not repeat it as a parameter."
                )
            if any("\\" in item for item in items):
                # A backslash separates DICOM values: sent on, "A\B" would match A or B.
                raise BadRequest(
                    f"Backslashes are not allowed in the value of {key}; separate several "
                    "values with commas."
                )
            text = "\\".join(item.replace(",", "\\") for item in items)
            values[keyword] = text
    if fuzzy:
        values = {keyword: _fuzzy(keyword, text) for keyword, text in values.items()}
    for keyword in include_fields:
        values.setdefault(keyword, None)
    values.update(path_uids)
    values.pop("QueryRetrieveLevel", None)
    try:
        query = QueryDataset.from_dict(values)
    except ValueError as error:
        raise BadRequest(f"Invalid query parameter: {error}.") from None
    return SearchRequest(
        query=query,
        limit=limit,
        offset=offset,
        include_fields=include_fields,
        include_all=include_all,
        fuzzy=fuzzy,
    )


def _split(query: QueryDataset, keywords: frozenset[str] | set[str]) -> QueryDataset:
    """The part of `query` whose keywords are in `keywords`."""
    part = QueryDataset()
    for keyword in query.keywords():
        if keyword in keywords:
            part.dataset[keyword] = copy.deepcopy(query.dataset[keyword])
    return part


def _rest(query: QueryDataset, keywords: frozenset[str] | set[str]) -> QueryDataset:
    part = QueryDataset()
    for keyword in query.keywords():
        if keyword not in keywords:
            part.dataset[keyword] = copy.deepcopy(query.dataset[keyword])
    return part


def _single_uid(query: QueryDataset, keyword: str) -> str | None:
    value = query.get(keyword)
    if isinstance(value, str) and value and not has_wildcards(value):
        return value
    return None


def _merge(result: Dataset, parent: Dataset | None) -> None:
    """Fills attributes the source left out (or empty) from the parent level's result."""
    if parent is None:
        return
    for element in parent:
        if element.tag == 0x00081190 or element.keyword == "QueryRetrieveLevel":
            continue
        if element.tag not in result or result[element.tag].is_empty:
            result[element.tag] = copy.deepcopy(element)


class _Searcher:
    """One QIDO-RS search: the levels above the asked one are searched first when the path
    does not name them (C-FIND and ADIT's operator search hierarchically), and their
    attributes are merged into the results."""

    def __init__(self, operator: DicomOperator, request: SearchRequest, level: str) -> None:
        self.operator = operator
        self.request = request
        self.query = request.query
        self.level = level
        self.extra = request.include_all

    def _keys(self, level: str) -> tuple[str, ...]:
        return RETURN_KEYS[level] + (ALL_FIELDS[level] if self.extra else ())

    def studies(self, limit: int | None = None) -> Iterator[Dataset]:
        # At the study level every key is the study's; above a series or instance search only
        # the study-level ones are.
        if self.level == "STUDY":
            query = self.query.copy()
        else:
            query = _split(self.query, STUDY_LEVEL_KEYWORDS)
        query.ensure_elements(*self._keys("STUDY"))
        for result in self.operator.find_studies(query, limit_results=limit):
            yield result.dataset

    def _study_attributes(self, study_uid: str) -> Dataset | None:
        query = QueryDataset.from_dict({"StudyInstanceUID": study_uid})
        query.ensure_elements(*self._keys("STUDY"))
        for result in self.operator.find_studies(query, limit_results=1):
            return result.dataset
        return None

    def _series_of(self, study: Dataset, limit: int | None) -> Iterator[Dataset]:
        if self.level == "SERIES":
            query = _rest(self.query, STUDY_LEVEL_KEYWORDS)
        else:
            query = _split(self.query, SERIES_LEVEL_KEYWORDS | {"SeriesInstanceUID"})
        query.set("StudyInstanceUID", str(study.StudyInstanceUID))
        query.ensure_elements(*self._keys("SERIES"))
        for result in self.operator.find_series(query, limit_results=limit):
            ds = result.dataset
            _merge(ds, study)
            yield ds

    def series(self, limit: int | None) -> Iterator[Dataset]:
        study_uid = _single_uid(self.query, "StudyInstanceUID")
        if study_uid is not None:
            study = self._study_attributes(study_uid)
            if study is None:
                return
            yield from self._series_of(study, limit)
            return
        produced = 0
        for study in self.studies():
            remaining = None if limit is None else limit - produced
            for ds in self._series_of(study, remaining):
                yield ds
                produced += 1
                if limit is not None and produced >= limit:
                    return

    def _instances_of(self, series: Dataset, limit: int | None) -> Iterator[Dataset]:
        query = _rest(self.query, STUDY_LEVEL_KEYWORDS | SERIES_LEVEL_KEYWORDS)
        query.set("StudyInstanceUID", str(series.StudyInstanceUID))
        query.set("SeriesInstanceUID", str(series.SeriesInstanceUID))
        query.ensure_elements(*self._keys("IMAGE"))
        for result in self.operator.find_images(query, limit_results=limit):
            ds = result.dataset
            _merge(ds, series)
            yield ds

    def instances(self, limit: int | None) -> Iterator[Dataset]:
        produced = 0
        for series in self.series(None):
            remaining = None if limit is None else limit - produced
            for ds in self._instances_of(series, remaining):
                yield ds
                produced += 1
                if limit is not None and produced >= limit:
                    return


def _local_matching(
    request: SearchRequest,
) -> tuple[SearchRequest, list[Callable[[Dataset], bool]]]:
    """Moves matching on several values of a non-UID attribute (``Modality=CT,MR``) and fuzzy
    name matching out of the query: C-FIND has list matching for UIDs only (PS3.4 C.2.2.2.2)
    and sources differ in the case sensitivity of names, so the source gets a return key and
    ADIT keeps the results whose value matches any of the values."""
    checks: list[Callable[[Dataset], bool]] = []
    query = request.query.copy()
    for element in list(query.dataset):
        fuzzy = request.fuzzy and element.keyword in FUZZY_KEYWORDS and not element.is_empty
        if not fuzzy and (element.VR == "UI" or element.VM <= 1):
            continue
        values = element.value if isinstance(element.value, MultiValue) else [element.value]
        patterns = [str(value) for value in values]
        keyword = element.keyword
        query.set(keyword, None)

        def check(ds: Dataset, keyword=keyword, patterns=patterns, fuzzy=fuzzy) -> bool:
            value = ds.get(keyword)
            values = [str(v) for v in value] if isinstance(value, MultiValue) else [str(value)]
            # Fuzzy names match case-insensitively (sources differ in how they match PN).
            return any(
                matches_wildcard(p, v, case_sensitive=not fuzzy)
                for p in patterns
                for v in values
                if value
            )

        checks.append(check)
    return dataclasses.replace(request, query=query), checks


def search(
    operator: DicomOperator,
    level: str,
    request: SearchRequest,
    retrieve_url: Callable[[str, str | None, str | None], str] | None = None,
) -> list[dict]:
    """Runs the query at `level` ("STUDY", "SERIES" or "IMAGE"); DICOM JSON of the results.

    `retrieve_url(study, series, instance)` gives the RetrieveURL (0008,1190) of a result: the
    source's own URL (a QIDO-RS source answers with one) must not leak to the client.
    """
    request, local_checks = _local_matching(request)
    searcher = _Searcher(operator, request, level)
    wanted = None if request.limit is None else request.limit + request.offset
    if local_checks:
        wanted = None  # the source's answers are filtered here before paging
    levels = {
        "STUDY": lambda: searcher.studies(wanted),
        "SERIES": lambda: searcher.series(wanted),
        "IMAGE": lambda: searcher.instances(wanted),
    }
    try:
        json_results = []
        matching = (ds for ds in levels[level]() if all(check(ds) for check in local_checks))
        for index, ds in enumerate(matching):
            if index < request.offset:
                continue
            if "QueryRetrieveLevel" in ds:
                del ds.QueryRetrieveLevel
            if retrieve_url is not None:
                ds.RetrieveURL = retrieve_url(
                    str(ds.StudyInstanceUID),
                    str(ds.SeriesInstanceUID) if level != "STUDY" else None,
                    str(ds.SOPInstanceUID) if level == "IMAGE" else None,
                )
            elif 0x00081190 in ds:
                del ds[0x00081190]
            json_results.append(ds.to_json_dict())
            if request.limit is not None and len(json_results) >= request.limit:
                break
    except DicomError as error:
        raise api_error_for(error) from error
    return json_results


# --- WADO-RS --------------------------------------------------------------------------------


def build_transformer(params, user=None) -> InstanceTransformer:
    """The transformer for the optional pseudonym, trial protocol and ``deid_options``
    parameters (comma-separated option codes; default: those of the user's active group).

    The seed is the installation-wide one of the pseudonym, so a retrieve gives the same UIDs
    and date shift as every transfer job with that pseudonym.

    Raises:
        BadRequest: naming the bad parameter.
    """
    values = {}
    for name in ("pseudonym", "trial_protocol_id", "trial_protocol_name"):
        value = params.get(name)
        values[name] = value.strip() if value and value.strip() else None
    pseudonym = values["pseudonym"]
    if pseudonym and any(char in pseudonym for char in "*?"):
        raise BadRequest("pseudonym must not contain wildcards (* or ?).")
    chosen = params.get("deid_options")
    try:
        options = options_for_new_job(
            user, [code.strip() for code in chosen.split(",") if code.strip()] if chosen else None
        )
    except ValueError as error:
        raise BadRequest(f"Invalid parameter deid_options: {error}.") from None
    try:
        return InstanceTransformer(
            pseudonym=pseudonym,
            trial_protocol_id=values["trial_protocol_id"],
            trial_protocol_name=values["trial_protocol_name"],
            seed=pseudonymization_seed(pseudonym) if pseudonym else None,
            exclude_modalities=settings.EXCLUDE_MODALITIES,
            deid_options=options,
        )
    except ValueError as error:
        raise BadRequest(f"Invalid parameter: {error}.") from None


def validate_uid(name: str, value: str) -> str:
    try:
        QueryDataset.from_dict({name: value})
    except ValueError as error:
        raise BadRequest(f"Invalid path: {error}.") from None
    return value


def encode_instance(ds: Dataset) -> bytes:
    """The instance as a DICOM Part-10 file (its transfer syntax kept)."""
    if not hasattr(ds, "file_meta") or ds.file_meta is None:
        ds.ensure_file_meta()
    if "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if "SOPClassUID" in ds:
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "SOPInstanceUID" in ds:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


# What `InstanceStream` hands on per instance: its bytes, or the pieces they are made of (a
# Part-10 header and a received data set, joined only into the chunk that goes out).
Payload = bytes | tuple[bytes | memoryview, ...]


def payload_pieces(payload: Payload) -> tuple[bytes | memoryview, ...]:
    return payload if isinstance(payload, tuple) else (payload,)


def payload_bytes(payload: Payload) -> bytes:
    return payload if isinstance(payload, bytes) else b"".join(payload)


def _payload_size(payload: Payload) -> int:
    return len(payload) if isinstance(payload, bytes) else sum(len(piece) for piece in payload)


class InstanceStream:
    """Fetches instances in a background thread and hands them to an async consumer.

    A bounded `Handoff` between the fetch and the response keeps memory constant: when the
    client reads slowly, the fetch (and the PACS) waits. `first()` blocks until the first
    encoded item (or the end, or the error) arrived, so the view can still answer with a proper
    error status. Closing the stream (client gone, response finished) aborts the fetch.
    """

    def __init__(
        self,
        operator: DicomOperator,
        fetch: Callable[[], Iterator[Any]],
        transform: Callable[[Any], Any | None],
        encode: Callable[[Any], Payload],
        queue_size: int = 4,
    ) -> None:
        self._operator = operator
        self._fetch = fetch
        self._transform = transform
        self._encode = encode
        self._handoff: Handoff[Payload] = Handoff(queue_size, _payload_size)
        self._thread = threading.Thread(target=self._run, name="wado-rs-fetch", daemon=True)
        self._thread.start()

    @property
    def count(self) -> int:
        """Instances handed to the consumer so far."""
        return self._handoff.taken

    def _run(self) -> None:
        instances: Iterator[Any] | None = None
        try:
            instances = self._fetch()
            for ds in instances:
                if self._handoff.closed:
                    return
                transformed = self._transform(ds)
                if transformed is None:
                    continue
                if not self._handoff.put(self._encode(transformed)):
                    return
            self._handoff.end()
        except BaseException as error:  # handed over to the consumer
            self._handoff.fail(error)
        finally:
            close = getattr(instances, "close", None)
            if close is not None:
                try:
                    close()  # ends the association / HTTP stream at once
                except Exception:  # the consumer is gone; nothing to report to
                    logger.debug("Closing the fetch failed", exc_info=True)

    def first(self) -> Payload | None:
        """The first encoded instance, or None when there is none.

        Raises:
            DicomError: the fetch failed before delivering anything.
            ValueError: the transformation failed (e.g. pseudonymization).
        """
        return self._handoff.get()

    async def rest(self) -> AsyncIterator[Payload]:
        """The remaining encoded instances."""
        async for items in self.rest_in_batches():
            for item in items:
                yield item

    async def rest_in_batches(
        self, max_bytes: int = 4 * 1024 * 1024
    ) -> AsyncIterator[list[Payload]]:
        """The remaining encoded instances, as many at a time as are ready (up to about
        `max_bytes`): one message through daphne for several instances when the fetch is ahead.
        """
        async for items in self._handoff.batches(max_bytes):
            yield items

    def close(self) -> None:
        if self._handoff.closed and not self._thread.is_alive():
            return
        self._handoff.close()
        self._operator.abort()


def fetcher(
    operator: DicomOperator, study_uid: str, series_uid: str | None, image_uid: str | None
) -> Callable[[], Iterator[Dataset]]:
    # PatientID is unknown to the API: study-root retrieval only.
    if image_uid is not None:
        assert series_uid is not None
        return lambda: operator.fetch_image("", study_uid, series_uid, image_uid)
    if series_uid is not None:
        return lambda: operator.fetch_series("", study_uid, series_uid)
    return lambda: operator.fetch_study("", study_uid)


def encoded_fetcher(
    operator: DicomOperator, study_uid: str, series_uid: str | None, image_uid: str | None
) -> Callable[[], Iterator[EncodedInstance]]:
    """`fetcher` for a retrieve that passes the instances on as they arrived (not decoded)."""
    return lambda: operator.fetch_encoded("", study_uid, series_uid, image_uid)


def exists(
    operator: DicomOperator, study_uid: str, series_uid: str | None, image_uid: str | None
) -> bool:
    """Whether the server lists the study/series/instance (errors count as "yes")."""
    values: dict[str, str | None] = {"StudyInstanceUID": study_uid}
    try:
        if image_uid is not None:
            values.update(SeriesInstanceUID=series_uid, SOPInstanceUID=image_uid)
            results = operator.find_images(QueryDataset.from_dict(values), limit_results=1)
        elif series_uid is not None:
            values["SeriesInstanceUID"] = series_uid
            results = operator.find_series(QueryDataset.from_dict(values), limit_results=1)
        else:
            results = operator.find_studies(QueryDataset.from_dict(values), limit_results=1)
        return any(True for _ in results)
    except DicomError:
        return True


def transform_function(transformer: InstanceTransformer) -> Callable[[Dataset], Dataset | None]:
    def transform(ds: Dataset) -> Dataset | None:
        try:
            return transformer.transform(ds)
        except (ValueError, PseudonymizationError) as error:
            # Not the client's fault: the PACS delivered data we could not pseudonymize.
            raise DicomError(f"An instance could not be transformed: {error}") from error

    return transform


# --- STOW-RS --------------------------------------------------------------------------------


@dataclass
class StowOutcome:
    stored: list[tuple[str, str, str, str]] = field(default_factory=list)
    """(SOP class UID, SOP instance UID, study UID, series UID) of every stored instance."""
    failed: list[tuple[str, str, int, str]] = field(default_factory=list)
    """(SOP class UID, SOP instance UID, failure reason, message) of every failed part."""
    bytes_received: int = 0


class CountingReader:
    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self.count = 0

    def __call__(self, size: int) -> bytes:
        data = self._read(size)
        self.count += len(data)
        return data


class PartRefused(ValueError):
    """A STOW-RS part that is not one whole, readable DICOM instance (the reason says why)."""


def _check_structure(body: bytes) -> int:
    """Refuses a part whose element structure does not fit its bytes, before pydicom reads it.

    pydicom reads leniently (a value cut short keeps its declared length, an unterminated
    sequence ends at the end of the data) and recursively (deep nesting exhausts the stack),
    and inflates a deflated data set whole. The completeness walk of the receiver checks
    every declared length and delimiter without decoding values, and inflates a deflated data
    set only up to its limit.

    Returns:
        Where the data set starts in `body` (after preamble and file meta).
    """
    fp = BytesIO(body)
    try:
        read_preamble(fp, True)
        file_meta = _read_file_meta_info(fp)
    except Exception as error:  # noqa: BLE001 — pydicom raises many kinds for damaged meta
        raise PartRefused(f"its file meta information cannot be read ({error})") from None
    transfer_syntax = file_meta.get("TransferSyntaxUID")
    start = fp.tell()
    if transfer_syntax is None:
        return start  # no transfer syntax: checked after reading (its encoding guessed)
    _check_complete(memoryview(body)[start:], str(transfer_syntax))
    return start


def _check_complete(dataset: memoryview | bytes, transfer_syntax: str) -> None:
    try:
        check_complete(dataset, transfer_syntax)  # type: ignore[arg-type]
    except IncompleteDataSet as error:
        raise PartRefused(f"the data set is not whole: {error}") from None


def _read_instance(body: bytes) -> Dataset:
    """Reads a part as a DICOM instance.

    Raises:
        PartRefused: naming what is wrong with the part.
    """
    if not body:
        raise PartRefused("the part is empty")
    start = _check_structure(body)
    try:
        try:
            ds = dcmread(BytesIO(body))
        except InvalidDicomError:
            # Some clients (dicomweb-client among them) send file meta without the 128-byte
            # preamble and "DICM" prefix; garbage still fails below (no SOP UIDs).
            ds = dcmread(BytesIO(body), force=True)
        if "TransferSyntaxUID" not in ds.file_meta:
            implicit, little = ds.original_encoding
            syntax = (
                ImplicitVRLittleEndian
                if implicit
                else ExplicitVRLittleEndian
                if little
                else ExplicitVRBigEndian
            )
            _check_complete(memoryview(body)[start:], syntax)
        str(ds.SOPClassUID), str(ds.SOPInstanceUID)  # noqa: B018 — must be readable
    except PartRefused:
        raise
    except (
        InvalidDicomError,
        AttributeError,
        ValueError,
        EOFError,
        KeyError,
        TypeError,
        OSError,
        RecursionError,
    ) as err:
        raise PartRefused(
            f"not a valid DICOM instance with SOP class and instance UID ({type(err).__name__})"
        ) from None
    if not ds.preamble:
        # Written on as a proper Part-10 file (dicomweb-client's STOW writes datasets "as
        # read"; a PACS would otherwise keep a file without the DICM prefix).
        ds.preamble = b"\x00" * 128
    return ds


def _parse_instances(
    parts: Iterable[tuple[int, dict[str, str], bytes]], study_uid: str | None, outcome: StowOutcome
) -> Iterator[Dataset]:
    """Datasets of the (numbered) parts that are DICOM instances; the others go to
    `outcome.failed`."""
    for number, headers, body in parts:
        content_type = headers.get("content-type", "application/dicom").split(";")[0].strip()
        if content_type.lower() != "application/dicom":
            outcome.failed.append(
                (
                    "",
                    "",
                    FAILURE_CANNOT_UNDERSTAND,
                    f"Part {number}: content type "
                    f"{content_type!r} is not supported; send application/dicom.",
                )
            )
            continue
        try:
            ds = _read_instance(body)
        except PartRefused as refused:
            outcome.failed.append(("", "", FAILURE_CANNOT_UNDERSTAND, f"Part {number}: {refused}."))
            continue
        sop_class_uid = str(ds.SOPClassUID)
        sop_instance_uid = str(ds.SOPInstanceUID)
        if study_uid is not None and str(ds.get("StudyInstanceUID", "")) != study_uid:
            outcome.failed.append(
                (
                    sop_class_uid,
                    sop_instance_uid,
                    FAILURE_SOP_CLASS_MISMATCH,
                    f"Part {number}: the instance does not belong to the study {study_uid}.",
                )
            )
            continue
        yield ds


def store_instances(
    operator: DicomOperator, read: Callable[[int], bytes], boundary: str, study_uid: str | None
) -> StowOutcome:
    """Parses the multipart body part by part and stores the instances in one go.

    C-STORE on one association if the server accepts it, else STOW-RS in batches. Only the
    current part (or batch) is in memory.

    Raises:
        BadRequest: the body is not a valid multipart message.
        APIException: the server could not be reached or refused everything (502/503).
    """
    outcome = StowOutcome()
    reader = CountingReader(read)
    attempted: dict[str, tuple[str, str, str]] = {}
    exhausted = False

    last_number = 0

    def refused(number: int, reason: str) -> None:
        nonlocal last_number
        last_number = number
        outcome.failed.append(("", "", FAILURE_CANNOT_UNDERSTAND, f"Part {number}: {reason}"))

    def numbered_parts() -> Iterator[tuple[int, dict[str, str], bytes]]:
        # Parts refused by the reader (oversized headers) still count in the numbering.
        nonlocal last_number
        for headers, body in iter_parts(reader, boundary, on_refused=refused):
            last_number += 1
            yield last_number, headers, body

    parsed = _parse_instances(numbered_parts(), study_uid, outcome)
    # The first instance is parsed before the server is contacted: a malformed body is the
    # client's error (400) even when the server is down, and a body without any valid
    # instance needs no association at all.
    try:
        first = next(parsed, None)
    except MultipartError as multipart_error:
        raise BadRequest(f"Invalid multipart body: {multipart_error}") from None
    if first is None:
        outcome.bytes_received = reader.count
        return outcome

    def instances() -> Iterator[Dataset]:
        nonlocal exhausted
        attempted[str(first.SOPInstanceUID)] = _identity(first)
        yield first
        for ds in parsed:
            attempted[str(ds.SOPInstanceUID)] = _identity(ds)
            yield ds
        exhausted = True

    stored: set[str] = set()
    server = operator.server
    error: Exception | None = None
    try:
        if operator.dimse is not None and server.store_scp_support:
            operator.dimse.send_c_store(
                instances(), on_stored=lambda ds: stored.add(str(ds.SOPInstanceUID))
            )
        elif operator.dicomweb is not None and server.dicomweb_stow_support:
            _stow_in_batches(operator, instances(), stored)
        else:
            raise DicomError(f"Upload to {server}: neither C-STORE nor STOW-RS is supported")
    except MultipartError as multipart_error:
        raise BadRequest(f"Invalid multipart body: {multipart_error}") from None
    except DicomError as dicom_error:
        error = dicom_error
    outcome.bytes_received = reader.count
    if error is not None and not stored and not exhausted:
        # Nothing was stored and the body was not (fully) processed: the server is the problem.
        raise api_error_for(error)  # type: ignore[arg-type]
    if error is not None and not exhausted:
        # The connection broke off midway; the rest of the body is reported as failed.
        try:
            for ds in parsed:
                attempted[str(ds.SOPInstanceUID)] = _identity(ds)
        except MultipartError:
            pass
    reason = (
        FAILURE_OUT_OF_RESOURCES if isinstance(error, RetriableDicomError) else FAILURE_PROCESSING
    )
    for sop_instance_uid, (sop_class_uid, study, series) in attempted.items():
        if sop_instance_uid in stored:
            outcome.stored.append((sop_class_uid, sop_instance_uid, study, series))
        else:
            message = (
                f"The server did not store the instance: {error}"
                if error
                else ("The server did not store the instance.")
            )
            outcome.failed.append((sop_class_uid, sop_instance_uid, reason, message))
    return outcome


def _stow_in_batches(
    operator: DicomOperator, instances: Iterator[Dataset], stored: set[str], batch_size: int = 16
) -> None:
    # The connector's batch call reports failed instances per batch; its send_stow_rs only
    # raises a summary, and the API must answer per instance.
    from adit.core.dicom.dicomweb import StowResult

    connector = operator.dicomweb
    assert connector is not None
    result = StowResult()
    batch: list[Dataset] = []

    def flush() -> None:
        failed = connector.store_batch(batch, result)
        stored.update(
            str(ds.SOPInstanceUID) for ds in batch if str(ds.SOPInstanceUID) not in failed
        )
        batch.clear()

    for ds in instances:
        batch.append(ds)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    if result.failed_sop_instance_uids:
        raise RetriableDicomError(
            f"STOW-RS on {operator.server}: {len(result.failed_sop_instance_uids)} instance(s) "
            "were refused"
        )


def _identity(ds: Dataset) -> tuple[str, str, str]:
    return (
        str(ds.SOPClassUID),
        str(ds.get("StudyInstanceUID", "")),
        str(ds.get("SeriesInstanceUID", "")),
    )


def stow_response(
    outcome: StowOutcome, instance_url: Callable[[str, str, str], str], study_url: str | None
) -> Dataset:
    """The STOW-RS response dataset (PS3.18 10.5.3)."""
    response = Dataset()
    if study_url:
        response.RetrieveURL = study_url
    referenced = []
    for sop_class_uid, sop_instance_uid, study, series in outcome.stored:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class_uid
        item.ReferencedSOPInstanceUID = sop_instance_uid
        if study and series:
            item.RetrieveURL = instance_url(study, series, sop_instance_uid)
        referenced.append(item)
    failed = []
    for sop_class_uid, sop_instance_uid, reason, message in outcome.failed:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class_uid
        item.ReferencedSOPInstanceUID = sop_instance_uid
        item.FailureReason = reason
        # ErrorComment (0000,0902) is a command element; TextValue carries the explanation.
        item.TextValue = message[:1024]
        failed.append(item)
    response.ReferencedSOPSequence = referenced
    response.FailedSOPSequence = failed
    return response
