"""DicomOperator: one API over the DIMSE and DICOMweb connectors of one server.

Query order: C-FIND when the server supports a usable model, else QIDO-RS. Results are
de-duplicated (some servers, e.g. pynetdicom's qrscp, answer one match per instance) and
re-filtered client-side for keys servers often ignore or match differently (ModalitiesInStudy,
descriptions with whole-value wildcards, series numbers, birth dates).

Fetch order: **C-GET → C-MOVE through the receiver → WADO-RS.**
C-GET first: a single association both asks and receives, no receiver hop, no AE registration
at the PACS, and the instances arrive in their stored transfer syntax. C-MOVE next because it is
the one retrieve every PACS offers (but it needs ADIT's receiver registered at the PACS and the
`move_fetcher` hook). WADO-RS last: many PACS expose DICOMweb through gateways that are slower
or transcode. A method that fails permanently *before* delivering the first instance hands over
to the next one (noted in `warnings`); once instances flowed, errors propagate (no duplicates).

C-MOVE hook: the receiver side lives in `receiver.py`/`file_transmit.py`. The operator only
knows the `MoveFetcher` protocol: it calls ``move_fetcher(request)`` with a `MoveRequest` that
carries the expected SOP Instance UIDs (from an IMAGE-level C-FIND done beforehand) and a
`send_c_move` callable. The fetcher must subscribe at the receiver *first*, then call
``request.send_c_move()`` (it may do so in a thread), yield each expected instance as it arrives
and raise `RetriableDicomError` naming the missing count if the fetch ends incomplete. Register a
default with `set_default_move_fetcher()` or pass ``move_fetcher=`` to the operator; without one
the C-MOVE path is skipped.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, cast

from pydicom import Dataset

from .config import LocalConfig, ServerConfig
from .dicomweb import DicomWebConnector
from .dimse import (
    SOP_INSTANCE_UID,
    DimseConnector,
    RetrieveResult,
    encoded_instance_of,
    uid_of,
)
from .errors import DicomError, RetriableDicomError
from .part10 import EncodedInstance
from .query import (
    QueryDataset,
    ResultDataset,
    has_wildcards,
    matches_wildcard,
    parse_date,
)

PATIENT_KEYS = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "NumberOfPatientRelatedStudies",
)
STUDY_KEYS = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "AccessionNumber",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
SERIES_KEYS = (
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SeriesDescription",
    "SeriesNumber",
    "Modality",
    "NumberOfSeriesRelatedInstances",
)
IMAGE_KEYS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "InstanceNumber",
)


logger = logging.getLogger(__name__)


@dataclass
class MoveRequest:
    """What a `MoveFetcher` needs to fetch instances through C-MOVE and the receiver."""

    server: ServerConfig
    local: LocalConfig
    query: QueryDataset
    """Level STUDY, SERIES or IMAGE with the UIDs to move."""
    expected_sop_instance_uids: frozenset[str]
    """Every instance the source listed; the fetch is complete when all arrived."""
    send_c_move: Callable[[], RetrieveResult]
    """Issues the C-MOVE to `local.receiver_ae_title`; blocks until the PACS reports the end."""
    sop_classes: dict[str, str] = field(default_factory=dict)
    """SOP Class UID of each listed instance (where the source said), to name what is missing."""
    cancel_c_move: Callable[[], None] | None = None
    """Asks the PACS to stop the C-MOVE (C-CANCEL), from the fetching thread."""
    warnings: list[str] = field(default_factory=list)
    """Append warnings for the task log here (shared with the operator)."""


class MoveFetcher(Protocol):
    def __call__(self, request: MoveRequest) -> Iterator[Dataset]: ...


_default_move_fetcher: MoveFetcher | None = None


def set_default_move_fetcher(fetcher: MoveFetcher | None) -> None:
    """Registers the C-MOVE fetcher operators use when none is passed (e.g. at app start)."""
    global _default_move_fetcher
    _default_move_fetcher = fetcher


def get_default_move_fetcher() -> MoveFetcher | None:
    return _default_move_fetcher


class DicomOperator:
    """Queries, fetches and uploads for one server, choosing DIMSE or DICOMweb per operation.

    Attributes:
        warnings: messages for the task log (partial sub-operations, skipped instances,
            fallbacks to another retrieve method).
        side_association: where the server's association limit allows it, a second
            association beside a fetch's own one (C-GET lists the study on it meanwhile): a
            callable returning a context manager that yields True while a further association
            slot is held, False if none is free now. None (the default): never a second one.
    """

    side_association: Callable[[], contextlib.AbstractContextManager[bool]] | None = None

    def __init__(
        self,
        server: ServerConfig,
        local: LocalConfig | None = None,
        move_fetcher: MoveFetcher | None = None,
    ) -> None:
        self.server = server
        self.local = local or LocalConfig()
        self.move_fetcher = move_fetcher
        self.warnings: list[str] = []
        self._aborted = threading.Event()
        self.dimse = DimseConnector(server, self.local) if server.supports_dimse else None
        self.dicomweb = DicomWebConnector(server, self.local) if server.dicomweb_root_url else None
        for connector in (self.dimse, self.dicomweb):
            if connector is not None:
                connector.warnings = self.warnings  # one list for the task log

    def abort(self) -> None:
        """Ends ongoing queries/fetches at once (thread-safe); meant for interactive queries."""
        self._aborted.set()
        if self.dimse is not None:
            self.dimse.abort()
        if self.dicomweb is not None:
            self.dicomweb.abort()

    # --- capability helpers -----------------------------------------------------------------

    def _can_c_find(self, query: QueryDataset) -> bool:
        if self.dimse is None:
            return False
        if query.level != "PATIENT" and self.server.study_root_find_support:
            return True
        return self.server.patient_root_find_support and (
            query.level == "PATIENT" or query.is_concrete("PatientID")
        )

    def _can_qido(self) -> bool:
        return self.dicomweb is not None and self.server.dicomweb_qido_support

    def _search(
        self, query: QueryDataset, limit: int | None, server_side_limit: bool
    ) -> Iterator[ResultDataset]:
        server_limit = limit if server_side_limit else None
        if self._can_c_find(query):
            assert self.dimse is not None
            return self.dimse.send_c_find(query, limit_results=server_limit)
        if self._can_qido():
            assert self.dicomweb is not None
            return iter(self.dicomweb.send_qido_rs(query, limit_results=server_limit))
        raise DicomError(
            f"Query on {self.server}: neither C-FIND ({query.level or '?'} level) nor QIDO-RS "
            "is supported"
        )

    # --- queries ----------------------------------------------------------------------------

    def find_patients(
        self, query: QueryDataset, limit_results: int | None = None
    ) -> Iterator[ResultDataset]:
        """Patients matching `query` (unique by PatientID).

        Uses PATIENT-level C-FIND (patient root), else STUDY-level C-FIND/QIDO-RS and
        collapses the studies to patients.
        """
        query = query.copy()
        query.remove("QueryRetrieveLevel")
        query.ensure_elements(*PATIENT_KEYS)
        use_patient_level = self.dimse is not None and self.server.patient_root_find_support
        if use_patient_level:
            query.set("QueryRetrieveLevel", "PATIENT")
        else:
            query.set("QueryRetrieveLevel", "STUDY")
            query.remove("NumberOfPatientRelatedStudies")
        checks = _patient_checks(query)
        results = self._search(query, limit_results, server_side_limit=False)
        return _limited(_dedupe(_filtered(results, checks), "PatientID"), limit_results)

    def find_studies(
        self, query: QueryDataset, limit_results: int | None = None
    ) -> Iterator[ResultDataset]:
        """Studies matching `query` (STUDY level)."""
        query = query.copy()
        query.set("QueryRetrieveLevel", "STUDY")
        query.ensure_elements(*STUDY_KEYS)
        checks = _patient_checks(query) + _study_checks(query)
        modalities = [m.upper() for m in _as_list(query.get("ModalitiesInStudy"))]
        server_side = not checks and not modalities
        results: Iterator[ResultDataset] = self._search(query, limit_results, server_side)
        results = _dedupe(_filtered(results, checks), "StudyInstanceUID")
        if modalities:
            results = self._filter_modalities(results, set(modalities))
        return _limited(results, limit_results)

    def _filter_modalities(
        self, results: Iterable[ResultDataset], wanted: set[str]
    ) -> Iterator[ResultDataset]:
        for result in results:
            present = {m.upper() for m in result.ModalitiesInStudy}
            if not present:
                # The server ignored ModalitiesInStudy; learn it from the study's series.
                series_query = QueryDataset.create(
                    QueryRetrieveLevel="SERIES",
                    PatientID=result.PatientID or None,
                    StudyInstanceUID=result.StudyInstanceUID,
                    Modality=None,
                    SeriesInstanceUID=None,
                )
                present = {s.Modality.upper() for s in self.find_series(series_query) if s.Modality}
                result.dataset.ModalitiesInStudy = sorted(present)
            if present & wanted:
                yield result

    def find_series(
        self, query: QueryDataset, limit_results: int | None = None
    ) -> Iterator[ResultDataset]:
        """Series of one study (a concrete StudyInstanceUID is required)."""
        if not query.is_concrete("StudyInstanceUID"):
            raise DicomError(f"Series query on {self.server}: a StudyInstanceUID is required")
        query = query.copy()
        query.set("QueryRetrieveLevel", "SERIES")
        query.ensure_elements(*SERIES_KEYS)
        checks = _series_checks(query)
        results = self._search(query, limit_results, server_side_limit=not checks)
        return _limited(_dedupe(_filtered(results, checks), "SeriesInstanceUID"), limit_results)

    def find_images(
        self, query: QueryDataset, limit_results: int | None = None
    ) -> Iterator[ResultDataset]:
        """Instances of one series (StudyInstanceUID and SeriesInstanceUID are required)."""
        if not (query.is_concrete("StudyInstanceUID") and query.is_concrete("SeriesInstanceUID")):
            raise DicomError(
                f"Image query on {self.server}: StudyInstanceUID and SeriesInstanceUID are required"
            )
        query = query.copy()
        query.set("QueryRetrieveLevel", "IMAGE")
        query.ensure_elements(*IMAGE_KEYS)
        results = self._search(query, limit_results, server_side_limit=True)
        return _limited(_dedupe(results, "SOPInstanceUID"), limit_results)

    def instances_held(
        self, study_uid: str, series_uid: str, expected: set[str] | None = None
    ) -> set[str]:
        """SOP Instance UIDs of one series that the server holds (to verify a transfer).

        Asks for nothing but the SOP Instance UID, which a PACS answers from its index without
        opening the files. C-FIND is asked first when the server offers it; QIDO-RS otherwise,
        and also when C-FIND lacks any of `expected` (some servers cap their C-FIND results).
        """
        query = QueryDataset.create(
            QueryRetrieveLevel="IMAGE",
            StudyInstanceUID=study_uid,
            SeriesInstanceUID=series_uid,
            SOPInstanceUID="",
        )
        held: set[str] = set()
        if self._can_c_find(query):
            assert self.dimse is not None
            held = {r.get_str("SOPInstanceUID") for r in self.dimse.send_c_find(query)}
            if (expected is not None and expected <= held) or not self._can_qido():
                return held
        if self._can_qido():
            assert self.dicomweb is not None
            return held | {r.get_str("SOPInstanceUID") for r in self.dicomweb.send_qido_rs(query)}
        raise DicomError(
            f"Query on {self.server}: neither C-FIND (IMAGE level) nor QIDO-RS is supported"
        )

    # --- fetches ----------------------------------------------------------------------------

    def fetch_study(self, patient_id: str, study_uid: str) -> Iterator[Dataset]:
        """Yields every instance of a study, one at a time as it arrives."""
        return self._fetch(_retrieve_query(patient_id, study_uid))

    def fetch_series(self, patient_id: str, study_uid: str, series_uid: str) -> Iterator[Dataset]:
        """Yields every instance of a series, one at a time as it arrives."""
        return self._fetch(_retrieve_query(patient_id, study_uid, series_uid))

    def fetch_image(
        self, patient_id: str, study_uid: str, series_uid: str, image_uid: str
    ) -> Iterator[Dataset]:
        """Yields the one instance."""
        return self._fetch(_retrieve_query(patient_id, study_uid, series_uid, image_uid))

    def fetch_encoded(
        self,
        patient_id: str,
        study_uid: str,
        series_uid: str | None = None,
        image_uid: str | None = None,
    ) -> Iterator[EncodedInstance]:
        """Yields every instance of the study (series, instance) as the bytes it arrived as,
        for a consumer that passes instances on unchanged.

        C-GET hands them over without decoding them at all (`send_c_get_encoded`); C-MOVE and
        WADO-RS decode, and their instances are given back as the bytes they arrived as.
        """
        query = _retrieve_query(patient_id, study_uid, series_uid, image_uid)
        methods = self._retrieve_methods(query, encoded=True)
        if not methods:
            raise DicomError(
                f"Fetch from {self.server}: no retrieve method available (C-GET, C-MOVE with "
                "a receiver, or WADO-RS)"
            )
        return self._fetch_with(methods)

    def _retrieve_methods(
        self, query: QueryDataset, encoded: bool = False
    ) -> list[tuple[str, Callable[[], Iterator]]]:
        server = self.server
        patient_ok = query.is_concrete("PatientID")
        methods: list[tuple[str, Callable[[], Iterator]]] = []
        dimse = self.dimse
        if dimse is not None and (
            server.study_root_get_support or (server.patient_root_get_support and patient_ok)
        ):
            methods.append(("C-GET", lambda: self._fetch_with_c_get(query, encoded)))
        as_wanted: Callable[[Iterator[Dataset]], Iterator] = (
            (lambda instances: map(encoded_instance_of, instances)) if encoded else iter
        )
        fetcher = self.move_fetcher or _default_move_fetcher
        if (
            dimse is not None
            and fetcher is not None
            and (
                server.study_root_move_support or (server.patient_root_move_support and patient_ok)
            )
        ):
            methods.append(("C-MOVE", lambda: as_wanted(self._fetch_with_c_move(query, fetcher))))
        dicomweb = self.dicomweb
        if dicomweb is not None and server.dicomweb_wado_support:
            methods.append(("WADO-RS", lambda: as_wanted(dicomweb.send_wado_rs(query))))
        return methods

    def _fetch(self, query: QueryDataset) -> Iterator[Dataset]:
        methods = self._retrieve_methods(query)
        if not methods:
            raise DicomError(
                f"Fetch from {self.server}: no retrieve method available (C-GET, C-MOVE with "
                "a receiver, or WADO-RS)"
            )
        return self._fetch_with(methods)

    def _fetch_with(self, methods: list[tuple[str, Callable[[], Iterator]]]) -> Iterator[Any]:
        for index, (name, start) in enumerate(methods):
            delivered = 0
            try:
                for ds in start():
                    delivered += 1
                    yield ds
                return
            except RetriableDicomError:
                raise
            except DicomError as error:
                if delivered or index == len(methods) - 1 or self._aborted.is_set():
                    raise
                self.warnings.append(f"{name} failed ({error}); trying {methods[index + 1][0]}")

    def _fetch_with_c_get(self, query: QueryDataset, encoded: bool = False) -> Iterator[Any]:
        """C-GET proposing the SOP classes the source holds; every instance the source reports
        arrives, or the fetch fails naming what did not (and its SOP classes). `encoded`: the
        instances as they arrived (`EncodedInstance`), else decoded.

        The source reports what the query matches twice: in an IMAGE-level listing (C-FIND)
        and in the C-GET's own sub-operation counts. The listing costs a PACS about as much as
        the C-GET itself (Orthanc opens every instance to answer it), so it is asked for only
        where it is needed or free:

        * The PACS does not name the study's SOP classes at STUDY level (SOP Classes in
          Study): the listing comes first, because the C-GET must know which classes to
          propose.
        * It names them, and the server's association limit leaves a second slot: the listing
          runs on that association beside the C-GET and is compared at the end.
        * It names them and no slot is free: the counts decide. No sub-operation failed and
          exactly as many distinct instances arrived as the PACS counted as completed (with or
          without warning): the fetch is whole. Otherwise the source is listed after all, to
          compare and to name what is missing.
        """
        assert self.dimse is not None
        sop_classes = self._sop_classes_in_study(query)
        background: _InBackground[dict[str, str]] | None = None
        listing: dict[str, str] | None = None
        side_slot = contextlib.ExitStack()
        if sop_classes is None:
            listing = self._listing_if_possible(query)
            sop_classes = set(listing.values())
        elif self._side_association(side_slot):

            def list_then_free_the_slot() -> dict[str, str]:
                with side_slot:
                    return self._listing_if_possible(query)

            background = _InBackground("source-listing", list_then_free_the_slot)
        counts = RetrieveResult()
        received: set[str] = set()
        failure: DicomError | None = None
        try:
            if encoded:
                for instance in self.dimse.send_c_get_encoded(query, sop_classes, counts):
                    received.add(instance.sop_instance_uid)
                    yield instance
            else:
                for ds in self.dimse.send_c_get(query, sop_classes=sop_classes, result=counts):
                    received.add(uid_of(ds, SOP_INSTANCE_UID))
                    yield ds
        except DicomError as error:
            failure = error
        if background is not None:
            if failure is not None and not received:
                raise failure  # another method may take over; the listing ends on its own
            listing = background.result()
        if not listing:  # none asked for, or the source cannot list: its counts decide
            # The counts must add up to what arrived: a PACS that leaves them out of its final
            # response (they are optional there) or miscounts gets listed instead.
            if (
                failure is None
                and not counts.failed
                and counts.completed + counts.warning == len(received)
            ):
                return
            if failure is not None and not received:
                raise failure
            if listing is None:
                listing = self._listing_if_possible(query)  # to compare and to name
            if not listing and failure is None and not counts.failed:
                return  # nothing failed and nothing to compare with (the warning says so)
            if not listing:
                raise RetriableDicomError(
                    f"C-GET from {self.server}: {counts.failed} sub-operation(s) failed "
                    f"({counts.completed} completed, {len(received)} instances arrived)"
                ) from failure
        if failure is not None and (not received or not set(listing) - received):
            raise failure
        missing = set(listing) - received
        if missing:
            because = f": {failure}" if failure is not None else ""
            raise RetriableDicomError(
                f"C-GET from {self.server}: {len(missing)} of {len(listing)} instances the "
                f"source lists did not arrive ({missing_by_sop_class(missing, listing)})"
                f"{because}"
            ) from failure

    def _side_association(self, stack: contextlib.ExitStack) -> bool:
        """Whether a second association to the server may be opened now (held on `stack`)."""
        if self.side_association is None:
            return False
        try:
            return bool(stack.enter_context(self.side_association()))
        except Exception:  # no slot bookkeeping at hand: do without the second association
            logger.debug("No side association for %s", self.server, exc_info=True)
            return False

    def _sop_classes_in_study(self, query: QueryDataset) -> set[str] | None:
        """The SOP classes the PACS says the study holds (STUDY-level C-FIND), None if unsaid."""
        assert self.dimse is not None
        if query.level == "IMAGE":
            return None  # its listing is the query itself
        study_query = QueryDataset.from_dict(
            {
                "QueryRetrieveLevel": "STUDY",
                "PatientID": query.get_str("PatientID") or None,
                "StudyInstanceUID": query.get_str("StudyInstanceUID"),
                "SOPClassesInStudy": None,
            }
        )
        if not self._can_c_find(study_query):
            return None
        try:
            results = list(self.dimse.send_c_find(study_query, limit_results=2))
        except DicomError:
            return None  # the listing, done first, will tell
        if len(results) != 1:
            return None
        value = results[0].dataset.get("SOPClassesInStudy")
        if value is None:
            return None
        values = value.split("\\") if isinstance(value, str) else list(value)
        return {str(uid).strip() for uid in values if str(uid).strip()} or None

    def _listing_if_possible(self, query: QueryDataset) -> dict[str, str]:
        """SOP Instance UID → SOP Class UID of what the source lists; empty when it cannot say
        (no C-FIND at IMAGE level), and then completeness is only what the C-GET reports."""
        if not self._can_c_find(QueryDataset.create(QueryRetrieveLevel="IMAGE")):
            self.warnings.append(
                f"C-GET from {self.server}: the source answers no IMAGE-level C-FIND, so "
                "completeness rests on the C-GET's own counts"
            )
            return {}
        try:
            return self._source_listing(query)
        except RetriableDicomError:
            raise
        except DicomError as error:
            self.warnings.append(
                f"C-GET from {self.server}: could not list the instances ({error}); "
                "completeness rests on the C-GET's own counts"
            )
            return {}

    def _fetch_with_c_move(self, query: QueryDataset, fetcher: MoveFetcher) -> Iterator[Dataset]:
        assert self.dimse is not None
        dimse = self.dimse
        listing = self._source_listing(query)
        expected = frozenset(listing)
        if not expected:
            self.warnings.append(f"C-MOVE from {self.server}: the source lists no instances")
            return iter(())
        move_query = query.copy()
        request = MoveRequest(
            server=self.server,
            local=self.local,
            query=move_query,
            expected_sop_instance_uids=expected,
            sop_classes=listing,
            send_c_move=lambda: dimse.send_c_move(move_query, self.local.receiver_ae_title),
            cancel_c_move=dimse.cancel_moves,
            warnings=self.warnings,
        )
        return fetcher(request)

    def _source_listing(self, query: QueryDataset) -> dict[str, str]:
        """SOP Instance UID → SOP Class UID ('' if not said) of every instance the query
        matches, as the source lists them (IMAGE-level C-FIND per series)."""
        if query.level == "IMAGE":
            return {query.get_str("SOPInstanceUID"): query.get_str("SOPClassUID")}
        patient_id = query.get_str("PatientID") or None
        study_uid = query.get_str("StudyInstanceUID")
        if query.level == "SERIES":
            series_uids = [query.get_str("SeriesInstanceUID")]
        else:
            series_query = QueryDataset.create(
                QueryRetrieveLevel="SERIES",
                PatientID=patient_id,
                StudyInstanceUID=study_uid,
                SeriesInstanceUID=None,
            )
            series_uids = [s.SeriesInstanceUID for s in self.find_series(series_query)]
        listing: dict[str, str] = {}
        for series_uid in series_uids:
            image_query = QueryDataset.create(
                QueryRetrieveLevel="IMAGE",
                PatientID=patient_id,
                StudyInstanceUID=study_uid,
                SeriesInstanceUID=series_uid,
                SOPInstanceUID=None,
            )
            for found in self.find_images(image_query):
                if found.SOPInstanceUID:
                    listing[found.SOPInstanceUID] = found.SOPClassUID or ""
        return listing

    def move_study(
        self, patient_id: str, study_uid: str, destination_ae_title: str
    ) -> RetrieveResult:
        """Plain C-MOVE of a study to another AE (PACS to PACS)."""
        if self.dimse is None:
            raise DicomError(f"C-MOVE on {self.server}: no DIMSE configured")
        query = QueryDataset.create(
            QueryRetrieveLevel="STUDY",
            PatientID=_patient_key(patient_id),
            StudyInstanceUID=study_uid,
        )
        return self.dimse.send_c_move(query, destination_ae_title)

    # --- upload -----------------------------------------------------------------------------

    def upload(
        self, instances: Iterable[Dataset], unchanged: bool = False, associations: int = 1
    ) -> int:
        """Stores instances (C-STORE, else STOW-RS); returns how many.

        `unchanged`: the instances are exactly as fetched, so C-STORE and STOW-RS may send the
        bytes they arrived as instead of encoding them again. `associations`: how many C-STORE
        associations may store side by side (the caller holds that many of the server's slots).
        """
        if self.dimse is not None and self.server.store_scp_support:
            return self.dimse.send_c_store(
                instances, reuse_received_encoding=unchanged, associations=associations
            ).stored
        if self.dicomweb is not None and self.server.dicomweb_stow_support:
            return self.dicomweb.send_stow_rs(instances, unchanged=unchanged).stored
        raise DicomError(f"Upload to {self.server}: neither C-STORE nor STOW-RS is supported")


T = TypeVar("T")


class _InBackground(Generic[T]):
    """Runs `work` on a daemon thread; `result()` waits for it and returns or re-raises."""

    def __init__(self, name: str, work: Callable[[], T]) -> None:
        self._work = work
        self._result: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._work()
        except BaseException as error:  # handed to the caller of result()
            self._error = error

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return cast(T, self._result)


def _retrieve_query(
    patient_id: str,
    study_uid: str,
    series_uid: str | None = None,
    image_uid: str | None = None,
) -> QueryDataset:
    """The identifier of a retrieve: the level below the last UID given."""
    values: dict[str, str | None] = {
        "QueryRetrieveLevel": "STUDY",
        "PatientID": _patient_key(patient_id),
        "StudyInstanceUID": study_uid,
    }
    if series_uid is not None:
        values.update(QueryRetrieveLevel="SERIES", SeriesInstanceUID=series_uid)
        if image_uid is not None:
            values.update(QueryRetrieveLevel="IMAGE", SOPInstanceUID=image_uid)
    return QueryDataset.create(**values)


def _patient_key(patient_id: str) -> str | None:
    """The PatientID to send along with the UIDs of a fetch, or None to leave it out.

    The UIDs identify what is fetched; the PatientID only narrows it. A PatientID a PACS holds
    may contain ``*`` or ``?``, and DICOM has no way to escape them: sent as it is it would be a
    pattern, so it is left out (the study UID alone is unique).
    """
    if not patient_id or has_wildcards(patient_id):
        return None
    return patient_id


# --- client-side filtering ------------------------------------------------------------------

Check = Callable[[ResultDataset], bool]


def _as_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple):
        return [str(v) for v in value if str(v)]
    return [v for v in str(value).replace(",", "\\").split("\\") if v]


def _wildcard_check(keyword: str, pattern: str, case_sensitive: bool) -> Check:
    def check(result: ResultDataset) -> bool:
        value = result.get_str(keyword)
        # An empty value means the server did not return the attribute: nothing to check.
        return not value or matches_wildcard(pattern, value, case_sensitive)

    return check


def _date_check(keyword: str, value: str) -> Check | None:
    if not value:
        return None
    start_text, _, end_text = value.partition("-") if "-" in value else (value, "", value)
    try:
        start = parse_date(start_text) if start_text else None
        end = parse_date(end_text) if end_text else None
    except ValueError:
        return None

    def check(result: ResultDataset) -> bool:
        found = result.get_date(keyword)
        if found is None:
            return True
        return (start is None or found >= start) and (end is None or found <= end)

    return check


def _patient_checks(query: QueryDataset) -> list[Check]:
    checks: list[Check] = []
    if name := query.get_str("PatientName"):
        checks.append(_wildcard_check("PatientName", name, case_sensitive=False))
    if patient_id := query.get_str("PatientID"):
        checks.append(_wildcard_check("PatientID", patient_id, case_sensitive=True))
    if birth_date := _date_check("PatientBirthDate", query.get_str("PatientBirthDate")):
        checks.append(birth_date)
    if sex := query.get_str("PatientSex"):
        checks.append(_wildcard_check("PatientSex", sex, case_sensitive=False))
    return checks


def _study_checks(query: QueryDataset) -> list[Check]:
    checks: list[Check] = []
    if description := query.get_str("StudyDescription"):
        checks.append(_wildcard_check("StudyDescription", description, case_sensitive=False))
    if accession := query.get_str("AccessionNumber"):
        checks.append(_wildcard_check("AccessionNumber", accession, case_sensitive=True))
    if study_date := _date_check("StudyDate", query.get_str("StudyDate")):
        checks.append(study_date)
    return checks


def _series_checks(query: QueryDataset) -> list[Check]:
    checks: list[Check] = []
    if description := query.get_str("SeriesDescription"):
        checks.append(_wildcard_check("SeriesDescription", description, case_sensitive=False))
    if modality := query.get_str("Modality"):
        checks.append(_wildcard_check("Modality", modality, case_sensitive=False))
    number = query.get("SeriesNumber")
    if number not in (None, ""):
        wanted = int(number)

        def series_number_check(result: ResultDataset) -> bool:
            found = result.SeriesNumber
            return found is None or found == wanted

        checks.append(series_number_check)
    return checks


def _filtered(results: Iterable[ResultDataset], checks: list[Check]) -> Iterator[ResultDataset]:
    for result in results:
        if all(check(result) for check in checks):
            yield result


def _dedupe(results: Iterable[ResultDataset], key: str) -> Iterator[ResultDataset]:
    seen: set[str] = set()
    for result in results:
        value = result.get_str(key)
        if value and value in seen:
            continue
        seen.add(value)
        yield result


def _limited(results: Iterable[ResultDataset], limit: int | None) -> Iterator[ResultDataset]:
    if limit is not None and limit <= 0:
        return
    count = 0
    iterator = iter(results)
    try:
        for result in iterator:
            yield result
            count += 1
            if limit is not None and count >= limit:
                return
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()  # ends an open C-FIND association at once


def missing_by_sop_class(missing: Iterable[str], sop_classes: dict[str, str]) -> str:
    """'2 of SOP class 1.2.3 (Its Name), 1 of an unlisted class' for a task log."""
    from collections import Counter

    from pydicom.uid import UID

    counts = Counter(sop_classes.get(uid, "") for uid in missing)
    parts = []
    for sop_class, count in counts.most_common():
        if not sop_class:
            parts.append(f"{count} of a SOP class the source did not name")
            continue
        name = UID(sop_class).name
        label = f"{sop_class} ({name})" if name and name != sop_class else sop_class
        parts.append(f"{count} of SOP class {label}")
    return ", ".join(parts)
