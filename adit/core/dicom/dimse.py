"""DIMSE connector: C-ECHO, C-FIND, C-GET, C-MOVE and C-STORE.

Every operation runs on ADIT's own requestor upper layer (`net/`); pynetdicom lends
only its PDU codecs, presentation contexts and data set encoding. A C-MOVE is the C-FIND loop
with sub-operation counts; a C-ECHO one request and one answer. One association per operation
(never one per instance; C-STORE may use several side by side). Every socket has TCP_NODELAY
set, because Nagle's algorithm together with delayed ACKs stalls each small DIMSE exchange by
~40 ms.

Errors: transient failures (connection refused, association rejected-transient or aborted,
"out of resources" statuses A7xx, timeouts) raise `RetriableDicomError`; permanent ones (AE
title not recognised, unsupported model, failure statuses) raise `DicomError`. Messages name
the server and the operation but never patient data.
"""

from __future__ import annotations

import functools
import io
import itertools
import logging
import queue
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, cast

from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import build_context
from pynetdicom.dsutils import decode, encode
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from .completeness import check_complete, text_value
from .config import LocalConfig, ServerConfig, prepare_dicom_libraries
from .encoding import encode_dataset, file_meta
from .errors import DicomError, RetriableDicomError
from .net import association, commands, errors, statuses
from .net.c_echo import c_echo
from .net.c_find import c_cancel, c_find
from .net.c_get import answer_sub_operation, c_get, c_get_cancel
from .net.c_move import c_move, c_move_cancel
from .net.c_store import c_store
from .net.pool import AssociationPool
from .part10 import EncodedInstance
from .query import QueryDataset, ResultDataset, has_wildcards

logger = logging.getLogger(__name__)

MAX_PRESENTATION_CONTEXTS = 128

UNCOMPRESSED_TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
COMPRESSED_TRANSFER_SYNTAXES = [
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]

# The image SOP classes most studies consist of. Each gets one presentation context per transfer
# syntax family, so that the peer can send every instance in the syntax it is stored in (an
# acceptor picks only ONE syntax per context; a single context listing all syntaxes would make
# most PACS transcode to the first syntax they like, usually uncompressed).
MAIN_IMAGE_SOP_CLASSES = [
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image
    "1.2.840.10008.5.1.4.1.1.1",  # CR Image
    "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography X-Ray Image - For Presentation
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image
    "1.2.840.10008.5.1.4.1.1.12.1",  # X-Ray Angiographic Image
    "1.2.840.10008.5.1.4.1.1.128",  # Positron Emission Tomography Image
]
MAIN_TRANSFER_SYNTAX_GROUPS: list[list[UID]] = [
    UNCOMPRESSED_TRANSFER_SYNTAXES,
    *([ts] for ts in COMPRESSED_TRANSFER_SYNTAXES),
]

# Further image SOP classes: one context each, uncompressed and compressed syntaxes offered.
OTHER_IMAGE_SOP_CLASSES = [
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.4.3",  # Enhanced MR Color Image
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image - For Processing
    "1.2.840.10008.5.1.4.1.1.1.2.1",  # Digital Mammography X-Ray Image - For Processing
    "1.2.840.10008.5.1.4.1.1.13.1.3",  # Breast Tomosynthesis Image
    "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image
    "1.2.840.10008.5.1.4.1.1.20",  # Nuclear Medicine Image
    "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET Image
    "1.2.840.10008.5.1.4.1.1.12.1.1",  # Enhanced XA Image
    "1.2.840.10008.5.1.4.1.1.12.2",  # X-Ray Radiofluoroscopic Image
    "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color Secondary Capture
    "1.2.840.10008.5.1.4.1.1.481.1",  # RT Image
    "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL Photographic Image
    "1.2.840.10008.5.1.4.1.1.77.1.5.1",  # Ophthalmic Photography 8 Bit Image
]

# Non-image SOP classes: one context each, uncompressed only.
NON_IMAGE_SOP_CLASSES = [
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.88.50",  # Mammography CAD SR
    "1.2.840.10008.5.1.4.1.1.88.59",  # Key Object Selection Document
    "1.2.840.10008.5.1.4.1.1.88.67",  # X-Ray Radiation Dose SR
    "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.11.2",  # Color Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.66",  # Raw Data
    "1.2.840.10008.5.1.4.1.1.66.1",  # Spatial Registration
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT Plan
]


def storage_contexts(reserved: int = 0) -> list[PresentationContext]:
    """Storage presentation contexts for SOP classes likely in a study (≤ 128 - reserved).

    Built once per `reserved` (building validates every UID; the association only reads them).
    """
    return list(_storage_contexts(reserved))


@functools.cache
def _storage_contexts(reserved: int) -> tuple[PresentationContext, ...]:
    contexts = [
        build_context(sop_class, list(group))
        for sop_class in MAIN_IMAGE_SOP_CLASSES
        for group in MAIN_TRANSFER_SYNTAX_GROUPS
    ]
    all_syntaxes = UNCOMPRESSED_TRANSFER_SYNTAXES + COMPRESSED_TRANSFER_SYNTAXES
    contexts += [
        build_context(sop_class, list(all_syntaxes)) for sop_class in OTHER_IMAGE_SOP_CLASSES
    ]
    contexts += [
        build_context(sop_class, list(UNCOMPRESSED_TRANSFER_SYNTAXES))
        for sop_class in NON_IMAGE_SOP_CLASSES
    ]
    limit = MAX_PRESENTATION_CONTEXTS - reserved
    if len(contexts) > limit:
        raise AssertionError(f"{len(contexts)} storage contexts exceed the limit of {limit}")
    return tuple(contexts)


def storage_contexts_with_find() -> list[PresentationContext]:
    """The Query/Retrieve FIND models, then `storage_contexts()`: a C-STORE association that
    can also carry the C-FIND checking what the server holds (pooled associations)."""
    return list(_storage_contexts_with_find())


@functools.cache
def _storage_contexts_with_find() -> tuple[PresentationContext, ...]:
    finds = _find_contexts()
    return (*finds, *_storage_contexts(len(finds)))


@functools.cache
def _find_contexts_cached() -> tuple[PresentationContext, ...]:
    return tuple(build_context(str(model)) for model in _FIND_MODELS_IN_ORDER)


def _find_contexts() -> list[PresentationContext]:
    """The Study and Patient Root Query/Retrieve FIND contexts (built once)."""
    return list(_find_contexts_cached())


def storage_contexts_for(
    sop_classes: Iterable[str], reserved: int = 0
) -> list[PresentationContext]:
    """Storage contexts for exactly the SOP classes a study holds, or, when they are not
    known (empty), the broad default set.

    A C-GET can only deliver instances of SOP classes it proposed; a fixed list silently lost
    every instance of any other class. Each listed class gets the contexts of the main image
    classes (uncompressed, and each compressed syntax on its own, so the PACS never has to
    convert). The classes come from the source itself (SOP Classes in Study, or its listing of
    the instances), and an instance of any other class would still be caught: the PACS counts
    the sub-operation it cannot perform as failed, and the fetch fails naming it. So the
    default set is not proposed besides: negotiating its 125 contexts took Orthanc 4 ms on
    every C-GET, a CT study's contexts a fraction of one.

    The main image classes are proposed besides, uncompressed only: an acceptor that
    negotiates roles then answers at least one role item even when it refuses ADIT the SCP
    role for the study's own classes, and its refusal is seen before anything is asked for
    (silence would read as "does not negotiate roles", see `_storage_classes_unreceivable`).
    """
    wanted = tuple(dict.fromkeys(str(sop_class) for sop_class in sop_classes if sop_class))
    return list(_storage_contexts_for(wanted, reserved))


@functools.lru_cache(maxsize=256)
def _storage_contexts_for(
    wanted: tuple[str, ...], reserved: int
) -> tuple[PresentationContext, ...]:
    """`storage_contexts_for`, built once per set of SOP classes (a cohort's studies share it)."""
    if not wanted:
        return _storage_contexts(reserved)
    limit = MAX_PRESENTATION_CONTEXTS - reserved
    contexts = [
        build_context(sop_class, list(group))
        for sop_class in wanted
        for group in MAIN_TRANSFER_SYNTAX_GROUPS
    ]
    if len(contexts) > limit:  # very many classes: one context each, every syntax offered
        all_syntaxes = UNCOMPRESSED_TRANSFER_SYNTAXES + COMPRESSED_TRANSFER_SYNTAXES
        contexts = [build_context(sop_class, list(all_syntaxes)) for sop_class in wanted]
        if len(contexts) > limit:
            raise DicomError(
                f"the study holds {len(wanted)} SOP classes; one association can propose "
                f"at most {limit}"
            )
    listed = set(wanted)
    for sop_class in MAIN_IMAGE_SOP_CLASSES:
        if len(contexts) >= limit:
            break
        if sop_class not in listed:
            contexts.append(build_context(sop_class, list(UNCOMPRESSED_TRANSFER_SYNTAXES)))
    return tuple(contexts)


def exact_storage_contexts(datasets: Sequence[Dataset]) -> list[PresentationContext] | None:
    """One context per (SOP class, transfer syntax) found in `datasets`, or None if > 128."""
    pairs: dict[tuple[str, str], None] = {}
    for ds in datasets:
        pairs[(str(ds.SOPClassUID), _transfer_syntax_of(ds))] = None
    if len(pairs) > MAX_PRESENTATION_CONTEXTS:
        return None
    contexts = []
    for sop_class, syntax in pairs:
        syntaxes = [syntax]
        if not UID(syntax).is_compressed and syntax != ExplicitVRLittleEndian:
            syntaxes.append(ExplicitVRLittleEndian)  # pynetdicom converts between these
        contexts.append(build_context(sop_class, syntaxes))
    return contexts


def _transfer_syntax_of(ds: Dataset) -> str:
    try:
        return str(ds.file_meta.TransferSyntaxUID)
    except AttributeError:
        return ImplicitVRLittleEndian


@dataclass
class RetrieveResult:
    """Sub-operation counts of a C-GET or C-MOVE."""

    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_sop_instance_uids: list[str] = field(default_factory=list)


@dataclass
class StoreResult:
    """Outcome of storing many instances."""

    stored: int = 0
    warnings: list[str] = field(default_factory=list)
    failed_sop_instance_uids: list[str] = field(default_factory=list)


_FIND_MODELS = {
    "P": PatientRootQueryRetrieveInformationModelFind,
    "S": StudyRootQueryRetrieveInformationModelFind,
}
_GET_MODELS = {
    "P": PatientRootQueryRetrieveInformationModelGet,
    "S": StudyRootQueryRetrieveInformationModelGet,
}
_MOVE_MODELS = {
    "P": PatientRootQueryRetrieveInformationModelMove,
    "S": StudyRootQueryRetrieveInformationModelMove,
}

_FIND_MODELS_IN_ORDER = (
    StudyRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelFind,
)

_PENDING = (0xFF00, 0xFF01)
# C-STORE statuses ADIT answers a sub-operation it refuses with (PS3.4 Table B.2-1; 0124 is
# "Refused: Not Authorized" of PS3.7 Annex C, as the receiver answers what no C-MOVE asked for).
STATUS_CANNOT_UNDERSTAND = 0xC210
STATUS_NOT_AUTHORIZED = 0x0124
_T = TypeVar("_T")
# (tag, keyword, UIDs) of the unique keys a C-GET names (`_asked_uids`).
_AskedUids = tuple[tuple[int, str, frozenset[str]], ...]


def _is_out_of_resources(status: int) -> bool:
    return 0xA700 <= status <= 0xA7FF


class DimseConnector:
    """DIMSE operations against one server; one association per operation.

    `abort()` may be called from another thread to end an ongoing operation at once (e.g. the
    user left the page of an interactive query); the operation then ends without error.
    """

    def __init__(self, server: ServerConfig, local: LocalConfig) -> None:
        if not server.supports_dimse:
            raise DicomError(f"Server {server}: no AE title, host and port for DIMSE configured")
        self.server = server
        self.local = local
        self.warnings: list[str] = []
        self._lock = threading.Lock()
        # Open associations, so that abort() from another thread can end them all.
        self._active: list[association.Association] = []
        self._aborted = threading.Event()
        # Running C-MOVEs and their contexts, for `cancel_moves()` from another thread.
        self._moves: dict[association.Association, association.AcceptedContext] = {}
        self._cancelled_moves: set[association.Association] = set()
        # Where associations that ended cleanly wait for the next operation (a worker's pool,
        # `net/pool.py`), and the group they count against (the server's slots).
        self.pool: AssociationPool | None = None
        self.pool_group: Hashable = server.name

    # --- association handling ---------------------------------------------------------------

    def _finish(
        self, assoc: association.Association, release: bool = True, reusable: bool = True
    ) -> None:
        """Ends the use of an association: back to the pool when its operation ended cleanly
        (`release` and `reusable`, the connector not aborted), else released or aborted."""
        with self._lock:
            if assoc in self._active:
                self._active.remove(assoc)
        pool = self.pool
        if pool is None or assoc.pool_key is None:
            assoc.release() if release else assoc.abort()
            return
        if release and reusable and not self._aborted.is_set() and assoc.is_open:
            pool.give_back(self.pool_group, assoc.pool_key, assoc)
            return
        try:
            assoc.release() if release else assoc.abort()
        finally:
            pool.ended(self.pool_group)

    def abort(self) -> None:
        """Aborts the ongoing operation (thread-safe); later operations are refused."""
        self._aborted.set()
        with self._lock:
            active = list(self._active)
        for assoc in active:
            assoc.abort()

    @property
    def aborted(self) -> bool:
        return self._aborted.is_set()

    # --- C-ECHO -----------------------------------------------------------------------------

    def send_c_echo(self) -> None:
        """Verifies that the server answers (raises otherwise)."""
        assoc = self._open_bulk_association("C-ECHO", [build_context(Verification)])
        release = False
        try:
            status = c_echo(assoc, assoc.contexts_for(Verification)[0])
            release = True
            if status != 0x0000:
                raise DicomError(f"C-ECHO on {self.server}: {statuses.describe('C-ECHO', status)}")
        except errors.UpperLayerError as error:
            raise RetriableDicomError(f"C-ECHO on {self.server}: {error}") from error
        finally:
            self._finish(assoc, release=release)

    # --- model selection --------------------------------------------------------------------

    def _find_model(self, query: QueryDataset) -> str:
        level = query.level
        if level != "PATIENT" and self.server.study_root_find_support:
            return "S"
        if self.server.patient_root_find_support and (
            level == "PATIENT" or query.is_concrete("PatientID")
        ):
            return "P"
        raise DicomError(
            f"C-FIND on {self.server}: no supported query model for level {level or '?'} "
            "(study root needs level STUDY or below; patient root needs level PATIENT or a "
            "concrete PatientID)"
        )

    def _retrieve_model(
        self, operation: str, query: QueryDataset, study_root: bool, patient_root: bool
    ) -> str:
        if study_root and query.is_concrete("StudyInstanceUID"):
            return "S"
        if (
            patient_root
            and query.is_concrete("PatientID")
            and query.is_concrete("StudyInstanceUID")
        ):
            return "P"
        raise DicomError(
            f"{operation} on {self.server}: the server supports no retrieve model usable here "
            "(study root needs a StudyInstanceUID; patient root also a PatientID)"
        )

    # --- C-FIND -----------------------------------------------------------------------------

    def send_c_find(
        self, query: QueryDataset, limit_results: int | None = None
    ) -> Iterator[ResultDataset]:
        """Yields the matches of `query`; stops cleanly after `limit_results` matches."""
        if query.level not in ("PATIENT", "STUDY", "SERIES", "IMAGE"):
            raise DicomError(f"C-FIND on {self.server}: query has no valid QueryRetrieveLevel")
        model = str(_FIND_MODELS[self._find_model(query)])
        contexts = [build_context(model)]
        # An idle C-STORE association of this server that accepted the model serves as well
        # (the check after storing: `storage_contexts_with_find`).
        assoc: association.Association | None = self._open_bulk_association(
            "C-FIND", contexts, usable=lambda other: bool(other.contexts_for(model))
        )
        release = False
        reusable = True
        count = 0
        try:
            context = assoc.contexts_for(model)[0]
            identifier = _encode_for(query.dataset, context.transfer_syntax)
            try:
                messages = c_find(assoc, context, identifier)
                first = next(messages, None)
            except errors.UpperLayerError:
                if not assoc.reused or self.aborted:
                    raise
                # The peer ended the pooled association just as it was taken: a new one.
                stale, assoc = assoc, None
                self._finish(stale, release=False)
                assoc = self._open_bulk_association("C-FIND", contexts, reuse=False)
                context = assoc.contexts_for(model)[0]
                messages = c_find(assoc, context, identifier)
                first = next(messages, None)
            for message in itertools.chain((first,) if first is not None else (), messages):
                status = message.status
                if status in _PENDING:
                    if message.data is None:
                        continue
                    yield ResultDataset(_decode_from(message.data, context.transfer_syntax))
                    count += 1
                    if limit_results is not None and count >= limit_results:
                        reusable = False  # late answers to the cancelled request may follow
                        release = self._cancel_find(assoc, context)
                        return
                    continue
                if statuses.category(status) in (statuses.SUCCESS, statuses.CANCEL):
                    release = True
                    return
                if statuses.category(status) == statuses.WARNING:
                    self.warnings.append(
                        f"C-FIND on {self.server}: ended with {statuses.describe('C-FIND', status)}"
                    )
                    release = True
                    return
                text = f"C-FIND on {self.server}: failed with {statuses.describe('C-FIND', status)}"
                if _is_out_of_resources(status):
                    raise RetriableDicomError(text)
                raise DicomError(text)
        except GeneratorExit:
            reusable = False  # the consumer stopped in the middle of the answers
            raise
        except errors.UpperLayerError as error:
            if self.aborted:
                return
            raise RetriableDicomError(f"C-FIND on {self.server}: {error}") from error
        finally:
            if assoc is not None:
                self._finish(assoc, release=release, reusable=reusable)

    def _cancel_find(
        self, assoc: association.Association, context: association.AcceptedContext
    ) -> bool:
        """Sends C-CANCEL and reads the last answers; False if the association must abort."""
        try:
            return c_cancel(assoc, context)
        except errors.UpperLayerError:
            logger.debug("C-CANCEL on %s failed; aborting", self.server, exc_info=True)
            return False

    # --- associations of ADIT's own upper layer (bulk C-GET and C-STORE) -------------------

    def _open_bulk_association(
        self,
        operation: str,
        contexts: list[PresentationContext],
        scp_role_sop_classes: Iterable[str] = (),
        reuse: bool = True,
        usable: Callable[[association.Association], bool] | None = None,
    ) -> association.Association:
        """An association proposing `contexts`: an idle one of the pool if there is one
        (`reuse`; one that proposed something else but is `usable` for this operation will
        do too), else a new one."""
        where = f"{operation} on {self.server}"
        if self._aborted.is_set():
            raise DicomError(f"{where}: connector was aborted")
        prepare_dicom_libraries()
        pool = self.pool
        key = None
        if pool is not None:
            address = (
                self.server.host,
                self.server.port,
                self.local.calling_ae_title,
                self.server.ae_title,
            )
            key = (
                address,
                association.proposal_of(contexts),
                tuple(str(uid) for uid in scp_role_sop_classes),
            )
            if reuse:
                pooled = pool.take(
                    self.pool_group,
                    key,
                    None
                    if usable is None
                    else lambda other_key, other: (
                        isinstance(other_key, tuple) and other_key[0] == address and usable(other)
                    ),
                )
                if pooled is not None:
                    pooled.reused = True
                    with self._lock:
                        self._active.append(pooled)
                    if self._aborted.is_set():
                        self._finish(pooled, release=False)
                        raise DicomError(f"{where}: connector was aborted")
                    return pooled
            pool.before_open(self.pool_group)
        try:
            assoc = association.Association.request(
                self.server.host,
                self.server.port,
                calling_ae_title=self.local.calling_ae_title,
                called_ae_title=self.server.ae_title,
                contexts=contexts,
                timeouts=self.local.timeouts,
                scp_role_sop_classes=scp_role_sop_classes,
            )
        except errors.AssociationRejected as rejection:
            message = f"{where}: association rejected ({rejection})"
            if rejection.is_permanent:
                raise DicomError(message) from None
            raise RetriableDicomError(message) from None
        except errors.UpperLayerError as error:
            raise RetriableDicomError(f"{where}: {error} while connecting") from error
        except OSError as error:
            raise RetriableDicomError(
                f"{where}: could not connect to {self.server.host}:{self.server.port} ({error})"
            ) from error
        if not assoc.accepted:
            assoc.abort()
            raise DicomError(f"{where}: the server accepted none of the proposed contexts")
        if pool is not None:
            assoc.pool_key = key
            pool.opened(self.pool_group)
        with self._lock:
            self._active.append(assoc)
        if self._aborted.is_set():  # abort() came while we were connecting
            self._finish(assoc, release=False)
            raise DicomError(f"{where}: connector was aborted")
        return assoc

    # --- C-GET ------------------------------------------------------------------------------

    def send_c_get(
        self,
        query: QueryDataset,
        sop_classes: Iterable[str] = (),
        result: RetrieveResult | None = None,
    ) -> Iterator[Dataset]:
        """Retrieves instances with C-GET and yields each as it arrives (file meta attached).

        `sop_classes`: the SOP classes the matching instances have (from an IMAGE-level
        C-FIND), proposed first (`storage_contexts_for`).

        Runs on the consumer's thread: each C-STORE sub-operation is acknowledged as soon as
        its instance is checked and decoded, then the instance is yielded; while the consumer
        works on it, the next ones wait in the socket buffers and a slow consumer slows the
        sender down instead of filling memory. Sub-operation counts of the final response are
        checked after the last instance: all failed → `RetriableDicomError`; some failed → an
        entry in `warnings`. Instances keep the bytes they arrived as
        (`remember_received_encoding`). `result`, when given, receives the final counts.
        """
        return self._c_get(query, sop_classes, result, self._received_instance)

    def send_c_get_encoded(
        self,
        query: QueryDataset,
        sop_classes: Iterable[str] = (),
        result: RetrieveResult | None = None,
    ) -> Iterator[EncodedInstance]:
        """`send_c_get`, yielding each instance as it arrived, not decoded (`part10`).

        The same checks come before each answer: the data set is whole and is the instance
        its command names, of the study (and series) asked for. What is left out is only the
        decoding, for a consumer that relays instances unchanged.
        """
        return self._c_get(query, sop_classes, result, self._received_encoded)

    def _c_get(
        self,
        query: QueryDataset,
        sop_classes: Iterable[str],
        result: RetrieveResult | None,
        receive: Callable[
            [association.Association, commands.Message, _AskedUids], tuple[_T | None, int]
        ],
    ) -> Iterator[_T]:
        model = self._retrieve_model(
            "C-GET",
            query,
            self.server.study_root_get_support,
            self.server.patient_root_get_support,
        )
        query_model = str(_GET_MODELS[model])
        # A pooled association also proposes the C-FIND models, so that the next task's
        # queries can run on it where the server's limit allows only one association.
        finds = _find_contexts() if self.pool is not None else []
        storage = storage_contexts_for(sop_classes, reserved=1 + len(finds))
        contexts = [build_context(query_model), *finds, *storage]
        assoc = self._open_bulk_association("C-GET", contexts, _unique_abstract(storage))
        result = result if result is not None else RetrieveResult()
        finished = False
        get_context = None
        reusable = True
        try:
            get_contexts = assoc.contexts_for(query_model)
            if not get_contexts:
                raise DicomError(f"C-GET on {self.server}: the server refused the C-GET model")
            get_context = get_contexts[0]
            unreceivable = _storage_classes_unreceivable(assoc, sop_classes)
            if unreceivable:
                raise DicomError(
                    f"C-GET on {self.server}: the server will not send instances of "
                    f"{', '.join(unreceivable)} on this association (presentation context or "
                    "SCP role refused), so the study cannot be retrieved completely with C-GET"
                )
            identifier = _encode_for(query.dataset, get_context.transfer_syntax)
            asked = _asked_uids(query)
            for message in c_get(assoc, get_context, identifier):
                if message.command_field == commands.C_STORE_RQ:
                    instance, status = receive(assoc, message, asked)
                    answer_sub_operation(assoc, message, status)
                    if instance is not None:
                        yield instance
                    continue
                failed_uids: list[str] = []
                if message.data is not None and message.status not in _PENDING:
                    failed_uids = _failed_sop_instance_uids(assoc, message)
                if self._take_retrieve_response(
                    "C-GET",
                    result,
                    message.status,
                    message.us(commands.COMPLETED_SUBOPERATIONS),
                    message.us(commands.FAILED_SUBOPERATIONS),
                    message.us(commands.WARNING_SUBOPERATIONS),
                    failed_uids,
                ):
                    break
            finished = True
        except GeneratorExit:
            # The consumer stopped early: ask the PACS to stop rather than drop the line.
            reusable = False
            if get_context is not None and not self.aborted:
                finished = self._cancel_get(assoc, get_context)
            raise
        except errors.UpperLayerError as error:
            if self.aborted:
                return
            raise RetriableDicomError(f"C-GET on {self.server}: {error}") from error
        finally:
            self._finish(assoc, release=finished, reusable=reusable)
        self._evaluate_retrieve("C-GET", result)

    def _cancel_get(
        self, assoc: association.Association, context: association.AcceptedContext
    ) -> bool:
        """C-CANCEL of the running C-GET; True when the PACS ended it and it may be released."""
        try:
            return c_get_cancel(assoc, context)
        except errors.UpperLayerError:
            logger.debug("C-CANCEL of the C-GET on %s failed; aborting", self.server, exc_info=True)
            return False

    def _received_encoded(
        self, assoc: association.Association, message: commands.Message, asked: _AskedUids
    ) -> tuple[EncodedInstance | None, int]:
        """The instance of a C-STORE sub-operation, checked, and the status to answer it with.

        One walk over the data set's structure (the receiver's): a data set cut short (e.g.
        inside Pixel Data) is refused, not passed on with short pixel data, and so is one that
        is not the instance its command names or not of the study (series, instance) the
        C-GET asked for: ADIT keeps only what it asked for.
        """
        context = assoc.accepted.get(message.context_id)
        if context is None or message.data is None:
            logger.warning("C-GET on %s: instance on an unknown context received", self.server)
            return None, STATUS_CANNOT_UNDERSTAND
        transfer_syntax = context.transfer_syntax
        sop_instance_uid = message.ui(commands.AFFECTED_SOP_INSTANCE_UID)
        try:
            found = check_complete(message.data, transfer_syntax, capture=_IDENTITY_TAGS)
        except Exception as error:
            return self._refused(sop_instance_uid, f"cannot be decoded: {error}")
        unasked = _not_asked_for(found, sop_instance_uid, asked)
        if unasked:
            return self._refused(sop_instance_uid, unasked, STATUS_NOT_AUTHORIZED)
        instance = EncodedInstance(
            message.ui(commands.AFFECTED_SOP_CLASS_UID),
            sop_instance_uid,
            transfer_syntax,
            message.data,
        )
        return instance, 0x0000

    def _received_instance(
        self, assoc: association.Association, message: commands.Message, asked: _AskedUids
    ) -> tuple[Dataset | None, int]:
        """`_received_encoded`, decoded (file meta attached, the received bytes remembered)."""
        instance, status = self._received_encoded(assoc, message, asked)
        if instance is None:
            return None, status
        # Bytes of its own: a decoded instance may be copied or pickled, a view of a PDU not.
        encoded = bytes(instance.data_set)
        try:
            ds = _decode_from(encoded, instance.transfer_syntax_uid)
            ds.file_meta = file_meta(
                instance.sop_class_uid, instance.sop_instance_uid, instance.transfer_syntax_uid
            )
        except Exception as error:
            return self._refused(instance.sop_instance_uid, f"cannot be decoded: {error}")
        remember_received_encoding(ds, instance.transfer_syntax_uid, encoded)
        return ds, 0x0000

    def _refused(
        self, sop_instance_uid: str, reason: str, status: int = STATUS_CANNOT_UNDERSTAND
    ) -> tuple[None, int]:
        logger.warning("C-GET on %s: received instance refused", self.server)
        # The PACS's final counts do not know ADIT refused it; the task log must.
        self.warnings.append(
            f"C-GET on {self.server}: instance {sop_instance_uid} refused ({reason})"
        )
        return None, status

    def _take_retrieve_response(
        self,
        operation: str,
        result: RetrieveResult,
        status: int,
        completed: int,
        failed: int,
        warning: int,
        failed_uids: list[str],
    ) -> bool:
        """Records one C-GET/C-MOVE response in `result`; True when it was the final one."""
        result.completed, result.failed, result.warning = completed, failed, warning
        if status in _PENDING:
            return False
        result.failed_sop_instance_uids = failed_uids
        if statuses.category(status) in (statuses.SUCCESS, statuses.WARNING, statuses.CANCEL):
            return True  # a warning (B000) means some sub-operations failed: counted above
        message = (
            f"{operation} on {self.server}: failed with {statuses.describe(operation, status)} "
            f"({result.completed} completed, {result.failed} failed sub-operations)"
        )
        if _is_out_of_resources(status):
            raise RetriableDicomError(message)
        if status == 0xA801:
            raise DicomError(f"{operation} on {self.server}: move destination unknown")
        raise DicomError(message)

    def _evaluate_retrieve(self, operation: str, result: RetrieveResult) -> None:
        if result.failed and not result.completed:
            raise RetriableDicomError(
                f"{operation} on {self.server}: all {result.failed} sub-operations failed"
            )
        if result.failed or result.warning:
            self.warnings.append(
                f"{operation} on {self.server}: {result.failed} failed and {result.warning} "
                f"warning sub-operations ({result.completed} completed)"
            )
        elif not result.completed:
            self.warnings.append(
                f"{operation} on {self.server}: no instances matched (0 sub-operations)"
            )

    # --- C-MOVE -----------------------------------------------------------------------------

    def send_c_move(self, query: QueryDataset, destination_ae_title: str) -> RetrieveResult:
        """Asks the server to send the matching instances to `destination_ae_title`.

        The C-FIND loop again, with sub-operation counts: pending responses report progress,
        the final one the outcome and the Failed SOP Instance UID List. An abort from another
        thread ends the wait at once and returns what was counted so far.
        """
        model = self._retrieve_model(
            "C-MOVE",
            query,
            self.server.study_root_move_support,
            self.server.patient_root_move_support,
        )
        query_model = str(_MOVE_MODELS[model])
        assoc = self._open_bulk_association("C-MOVE", [build_context(query_model)])
        result = RetrieveResult()
        release = False
        try:
            context = assoc.contexts_for(query_model)[0]
            with self._lock:
                self._moves[assoc] = context
            identifier = _encode_for(query.dataset, context.transfer_syntax)
            for message in c_move(assoc, context, identifier, destination_ae_title):
                failed_uids: list[str] = []
                if message.status not in _PENDING:
                    failed_uids = _failed_sop_instance_uids(assoc, message)
                if self._take_retrieve_response(
                    "C-MOVE",
                    result,
                    message.status,
                    message.us(commands.COMPLETED_SUBOPERATIONS),
                    message.us(commands.FAILED_SUBOPERATIONS),
                    message.us(commands.WARNING_SUBOPERATIONS),
                    failed_uids,
                ):
                    break
            release = True
        except errors.UpperLayerError as error:
            if self.aborted:
                return result
            raise RetriableDicomError(f"C-MOVE on {self.server}: {error}") from error
        finally:
            with self._lock:
                self._moves.pop(assoc, None)
                cancelled = assoc in self._cancelled_moves
                self._cancelled_moves.discard(assoc)
            self._finish(assoc, release=release, reusable=not cancelled)
        if cancelled:
            return result  # ADIT stopped it: what arrived is the fetcher's to judge
        self._evaluate_retrieve("C-MOVE", result)
        return result

    def cancel_moves(self, grace: float | None = None) -> None:
        """Asks the PACS to stop every C-MOVE of this connector (C-CANCEL-RQ), from any thread.

        The thread running `send_c_move` then reads the PACS's final response and releases
        the association; one the PACS has not ended after `grace` seconds (default: the
        DIMSE timeout) is aborted.
        """
        with self._lock:
            moves = list(self._moves.items())
            self._cancelled_moves.update(self._moves)
        for assoc, context in moves:
            try:
                c_move_cancel(assoc, context)
            except errors.UpperLayerError:
                assoc.abort()
                continue
            timer = threading.Timer(
                grace if grace is not None else self.local.timeouts.dimse, assoc.abort
            )
            timer.daemon = True
            timer.start()

    # --- C-STORE ----------------------------------------------------------------------------

    def send_c_store(
        self,
        datasets: Iterable[Dataset],
        on_stored: Callable[[Dataset], None] | None = None,
        reuse_received_encoding: bool = False,
        associations: int = 1,
    ) -> StoreResult:
        """Stores all `datasets`, each in its own transfer syntax if possible.

        For a sequence the proposed contexts are exactly its (SOP class, transfer syntax) pairs;
        for an iterator (instances arriving from a fetch) the broad `storage_contexts()` set.
        An instance whose compressed syntax was refused is sent decompressed when the server
        accepted an uncompressed syntax for its class; Implicit and Explicit VR Little Endian
        stand in for each other. Any failed instance → RetriableDicomError after all others
        were tried (a warning status only adds to `warnings`).

        One association stores everything, or with `associations` > 1 up to that many store
        side by side, each instance on one of them: a PACS that stores in parallel takes a
        study faster that way. Further associations the server refuses are done without.
        `on_stored` is then called from their threads.

        With `reuse_received_encoding`, instances that arrived over DIMSE unchanged (the caller
        vouches for that) are sent as the bytes that were received, without encoding them
        again, whenever the server accepted their transfer syntax.
        """
        if not self.server.store_scp_support:
            raise DicomError(f"C-STORE on {self.server}: server does not accept C-STORE")
        iterator: Iterator[Dataset]
        if isinstance(datasets, Sequence):
            if not datasets:
                return StoreResult()
            contexts = exact_storage_contexts(datasets) or storage_contexts()
            iterator = iter(datasets)
        else:
            iterator = iter(datasets)
            # With a pool, the C-FIND that checks what the server holds afterwards runs on one
            # of these associations instead of a new one.
            contexts = storage_contexts_with_find() if self.pool is not None else storage_contexts()
        lanes = [self._open_bulk_association("C-STORE", contexts)]
        for _ in range(associations - 1):
            try:
                lanes.append(self._open_bulk_association("C-STORE", contexts))
            except (DicomError, RetriableDicomError) as error:
                logger.debug("C-STORE on %s: no further association (%s)", self.server, error)
                break
        if len(lanes) == 1:
            result = self._store_on(lanes[0], iterator, on_stored, reuse_received_encoding)
        else:
            result = self._store_side_by_side(lanes, iterator, on_stored, reuse_received_encoding)
        if self.aborted:
            return result
        self.warnings.extend(result.warnings)
        if result.failed_sop_instance_uids:
            raise RetriableDicomError(
                f"C-STORE on {self.server}: {len(result.failed_sop_instance_uids)} of "
                f"{len(result.failed_sop_instance_uids) + result.stored} instances failed"
            )
        return result

    def _store_on(
        self,
        assoc: association.Association,
        datasets: Iterator[Dataset],
        on_stored: Callable[[Dataset], None] | None,
        reuse_received_encoding: bool,
        result: StoreResult | None = None,
    ) -> StoreResult:
        """Stores `datasets` one after the other on `assoc`, then ends the association."""
        result = result if result is not None else StoreResult()
        release = False
        try:
            for index, ds in enumerate(datasets):
                if self.aborted:
                    return result
                status = self._store_one(
                    assoc, ds, (index % 65535) + 1, result, reuse_received_encoding
                )
                if status is not None and on_stored is not None:
                    on_stored(ds)
            release = True
        except errors.UpperLayerError as error:
            if self.aborted:
                return result
            raise RetriableDicomError(
                f"C-STORE on {self.server}: {error} (after {result.stored} instances)"
            ) from error
        finally:
            self._finish(assoc, release=release)
        return result

    def _store_side_by_side(
        self,
        lanes: list[association.Association],
        datasets: Iterator[Dataset],
        on_stored: Callable[[Dataset], None] | None,
        reuse_received_encoding: bool,
    ) -> StoreResult:
        """Feeds `datasets` from this thread to one storing thread per association."""
        handover: queue.Queue = queue.Queue(maxsize=2 * len(lanes))
        stop = threading.Event()
        failures: list[BaseException] = []
        results = [StoreResult() for _ in lanes]

        def handed_over() -> Iterator[Dataset]:
            while True:
                item = _take(handover, stop)
                if item is _NO_MORE:
                    return
                yield cast(Dataset, item)

        def run(assoc: association.Association, result: StoreResult) -> None:
            try:
                self._store_on(
                    assoc, handed_over(), on_stored, reuse_received_encoding, result=result
                )
            except BaseException as error:  # raised in the feeding thread
                failures.append(error)
            finally:
                # A lane that ends (failure, abort, or the end marker after the last instance)
                # must not leave the feeding thread waiting for room in the queue.
                stop.set()

        threads = [
            threading.Thread(target=run, args=(assoc, result), name=f"c-store-{index}", daemon=True)
            for index, (assoc, result) in enumerate(zip(lanes, results, strict=True))
        ]
        for thread in threads:
            thread.start()
        try:
            for ds in datasets:
                if self.aborted or not _hand(handover, ds, stop):
                    break
        except BaseException:
            stop.set()
            raise
        finally:
            for _ in threads:
                _hand(handover, _NO_MORE, stop)
            for thread in threads:
                thread.join()
        merged = StoreResult()
        for result in results:
            merged.stored += result.stored
            merged.warnings += result.warnings
            merged.failed_sop_instance_uids += result.failed_sop_instance_uids
        if failures and not self.aborted:
            raise failures[0]
        return merged

    def _store_one(
        self,
        assoc: association.Association,
        ds: Dataset,
        msg_id: int,
        result: StoreResult,
        reuse_received_encoding: bool = False,
    ) -> int | None:
        uid = uid_of(ds, SOP_INSTANCE_UID) or "?"
        try:
            context, encoded = self._encoded_for_store(assoc, ds, reuse_received_encoding, result)
        except (ValueError, AttributeError) as error:
            result.failed_sop_instance_uids.append(uid)
            result.warnings.append(f"C-STORE on {self.server}: instance {uid} not sent: {error}")
            return None
        status = c_store(assoc, context, uid, encoded, msg_id)
        kind = statuses.category(status)
        if kind == statuses.SUCCESS:
            result.stored += 1
            return status
        if kind == statuses.WARNING:  # stored, with a warning the task log names
            result.stored += 1
            result.warnings.append(
                f"C-STORE on {self.server}: stored {uid} with "
                f"{statuses.describe('C-STORE', status)}"
            )
            return status
        result.failed_sop_instance_uids.append(uid)
        result.warnings.append(
            f"C-STORE on {self.server}: {uid} refused with {statuses.describe('C-STORE', status)}"
        )
        return None

    def _encoded_for_store(
        self,
        assoc: association.Association,
        ds: Dataset,
        reuse_received_encoding: bool,
        result: StoreResult,
    ) -> tuple[association.AcceptedContext, bytes]:
        """The accepted context for `ds` and its data set encoded in that context's syntax."""
        sop_class = uid_of(ds, SOP_CLASS_UID)
        if reuse_received_encoding:
            received = received_encoding(ds)
            if received is not None:
                context = assoc.context_for(sop_class, received[0])
                if context is not None:
                    return context, received[1]
        syntax = _transfer_syntax_of(ds)
        context = assoc.context_for(sop_class, syntax)
        if context is None and syntax in UNCOMPRESSED_TRANSFER_SYNTAXES:
            other = [ts for ts in UNCOMPRESSED_TRANSFER_SYNTAXES if ts != syntax][0]
            context = assoc.context_for(sop_class, other)
        if context is None and UID(syntax).is_compressed:
            uncompressed = [
                c
                for c in assoc.contexts_for(sop_class)
                if c.transfer_syntax in UNCOMPRESSED_TRANSFER_SYNTAXES
            ]
            if uncompressed:
                ds = _decompressed(ds)
                context = uncompressed[0]
                result.warnings.append(
                    f"C-STORE on {self.server}: instance {ds.SOPInstanceUID} sent decompressed "
                    "(server refused its transfer syntax)"
                )
        if context is None:
            raise ValueError(
                f"the server accepted no presentation context for SOP class {sop_class} "
                f"in transfer syntax {syntax}"
            )
        return context, _encode_instance(ds, context.transfer_syntax)


# Relaying an instance as the bytes it arrived as (no encoding again) must fail closed: a
# transform that changes the instance but forgets to drop those bytes would otherwise send the
# original, identifying data. So the bytes are kept together with the exact element objects the
# instance was decoded into, and they count only while the instance still holds those very
# objects. pydicom replaces an element's object whenever it is converted (read as a value),
# set, deleted or added, so any change (and even a read that converts) makes the instance
# encode again: slower, never wrong.
_RECEIVED_ENCODING = "_adit_received_encoding"


@dataclass(frozen=True)
class _ReceivedEncoding:
    transfer_syntax_uid: str
    encoded: bytes
    elements: tuple


def remember_received_encoding(ds: Dataset, transfer_syntax_uid: str, encoded: bytes) -> None:
    """Keeps the bytes an instance arrived as, so an unchanged instance is not encoded again."""
    elements = tuple(ds._dict.values())  # type: ignore[attr-defined]
    setattr(ds, _RECEIVED_ENCODING, _ReceivedEncoding(transfer_syntax_uid, encoded, elements))


def forget_received_encoding(ds: Dataset) -> None:
    """Drops the remembered bytes of an instance (it was changed, or is about to be)."""
    if hasattr(ds, _RECEIVED_ENCODING):
        delattr(ds, _RECEIVED_ENCODING)


SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
_IDENTITY_TAGS = (SOP_INSTANCE_UID, STUDY_INSTANCE_UID, SERIES_INSTANCE_UID)


def uid_of(ds: Dataset, tag: int) -> str:
    """The UID of a single-valued UI element ('' when missing), without converting the element.

    Reading `ds.SOPInstanceUID` converts the element to a Python value first, a noticeable
    cost when it is done for every relayed instance.
    """
    element = ds._dict.get(tag)  # type: ignore[call-overload]
    if element is None:
        return ""
    if type(element) is RawDataElement:
        value = element.value
        return value.rstrip(b"\0 ").decode("ascii", "replace") if value else ""
    return str(element.value or "")


def received_encoding(ds: Dataset) -> tuple[str, bytes] | None:
    """(transfer syntax, bytes) an instance arrived as, if it provably has not changed since."""
    received: _ReceivedEncoding | None = getattr(ds, _RECEIVED_ENCODING, None)
    if received is None:
        return None
    current = ds._dict.values()  # type: ignore[attr-defined]
    if len(current) != len(received.elements) or any(
        now is not then for now, then in zip(current, received.elements, strict=True)
    ):
        forget_received_encoding(ds)
        return None
    return received.transfer_syntax_uid, received.encoded


def received_instance(ds: Dataset) -> EncodedInstance | None:
    """A decoded instance as the bytes it arrived as, or None when it has none (it was
    changed since, or never received) or lacks its SOP Class or SOP Instance UID."""
    received = received_encoding(ds)
    sop_class, sop_instance = uid_of(ds, SOP_CLASS_UID), uid_of(ds, SOP_INSTANCE_UID)
    if received is None or not sop_class or not sop_instance:
        return None
    transfer_syntax, encoded = received
    return EncodedInstance(sop_class, sop_instance, transfer_syntax, encoded)


def encoded_instance_of(ds: Dataset) -> EncodedInstance:
    """A decoded instance as an `EncodedInstance`: the bytes it arrived as while it has not
    changed (`received_instance`), else encoded again in the transfer syntax of its file
    meta."""
    instance = received_instance(ds)
    if instance is not None:
        return instance
    transfer_syntax = str(ds.file_meta.TransferSyntaxUID)
    return EncodedInstance(
        uid_of(ds, SOP_CLASS_UID),
        uid_of(ds, SOP_INSTANCE_UID),
        transfer_syntax,
        _encode_for(ds, transfer_syntax),
    )


def _encode_for(ds: Dataset, transfer_syntax: str) -> bytes:
    """`ds` (without file meta) encoded as a DIMSE data set in `transfer_syntax`."""
    if transfer_syntax not in (ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian):
        # Raw elements as bytes, in one pass (what pydicom writes, see `encoding`).
        fast = encode_dataset(ds, transfer_syntax == ImplicitVRLittleEndian, True)
        if fast is not None:
            return fast
    encoded = encode(
        ds,
        is_implicit_vr=transfer_syntax == ImplicitVRLittleEndian,
        is_little_endian=transfer_syntax != ExplicitVRBigEndian,
        deflated=transfer_syntax == DeflatedExplicitVRLittleEndian,
    )
    if encoded is None:
        raise ValueError(f"the data set could not be encoded in {transfer_syntax}")
    return encoded


def _encode_instance(ds: Dataset, transfer_syntax: str) -> bytes:
    """An instance encoded again for C-STORE (what relaying unchanged instances avoids)."""
    return _encode_for(ds, transfer_syntax)


def _asked_uids(query: QueryDataset) -> _AskedUids:
    """(tag, keyword, UIDs) of each unique key the C-GET names: what its instances must carry.
    Read once per C-GET: a query's value costs a pydicom conversion at each access."""
    asked = []
    for keyword, tag in (
        ("StudyInstanceUID", STUDY_INSTANCE_UID),
        ("SeriesInstanceUID", SERIES_INSTANCE_UID),
        ("SOPInstanceUID", SOP_INSTANCE_UID),
    ):
        value = query.get_str(keyword)
        if value and not has_wildcards(value):
            asked.append((tag, keyword, frozenset(value.split("\\"))))
    return tuple(asked)


def _not_asked_for(found: dict[int, bytes], sop_instance_uid: str, asked: _AskedUids) -> str:
    """Why a C-GET sub-operation's data set is not what the C-GET asked for ('' when it is):
    the UIDs `check_complete` captured against its command and the query's unique keys."""
    in_data_set = text_value(found.get(SOP_INSTANCE_UID))
    if in_data_set != sop_instance_uid:
        return (
            f"its data set is instance {in_data_set or '(none)'}, not the {sop_instance_uid} "
            "its C-STORE request names"
        )
    for tag, keyword, uids in asked:
        value = text_value(found.get(tag))
        if value not in uids:
            return f"its {keyword} {value or '(none)'} is not one the C-GET asked for"
    return ""


def _decode_from(encoded: bytes | memoryview, transfer_syntax: str) -> Dataset:
    return decode(
        io.BytesIO(encoded),
        is_implicit_vr=transfer_syntax == ImplicitVRLittleEndian,
        is_little_endian=transfer_syntax != ExplicitVRBigEndian,
        deflated=transfer_syntax == DeflatedExplicitVRLittleEndian,
    )


def _failed_sop_instance_uids(
    assoc: association.Association, message: commands.Message
) -> list[str]:
    """Failed SOP Instance UID List of a final C-GET response's identifier (or, as Orthanc
    sends it, of its command set), if readable."""
    in_command = message.command.get(0x00080058)
    if in_command:
        text = in_command.rstrip(b"\0 ").decode("ascii", "replace")
        return [uid for uid in text.split("\\") if uid]
    context = assoc.accepted.get(message.context_id)
    if context is None or message.data is None:
        return []
    try:
        identifier = _decode_from(message.data, context.transfer_syntax)
        failed = identifier.get("FailedSOPInstanceUIDList")
    except Exception:
        return []
    if failed is None:
        return []
    return [str(failed)] if isinstance(failed, str) else [str(uid) for uid in failed]


def _storage_classes_unreceivable(
    assoc: association.Association, sop_classes: Iterable[str]
) -> list[str]:
    """The SOP classes of the study that a C-GET association cannot bring (named for a log).

    A class needs an accepted storage context and, where the acceptor answered the role
    selection at all, the SCP role for ADIT (PS3.7 D.3.3.4). An acceptor that answers no role
    item does not support the negotiation; many such PACS still send, so ADIT tries, and the
    completeness check against the source's listing catches what does not come.
    """
    accepted = {context.abstract_syntax for context in assoc.accepted.values()}
    granted = assoc.scp_role_answer
    unreceivable = []
    for uid in sorted({str(uid) for uid in sop_classes if uid}):
        if uid not in accepted or (granted is not None and uid not in granted):
            name = UID(uid).name
            unreceivable.append(f"SOP class {uid}" + (f" ({name})" if name != uid else ""))
    return unreceivable


def _decompressed(ds: Dataset) -> Dataset:
    copy = Dataset(ds)
    copy.file_meta = ds.file_meta.copy() if hasattr(ds, "file_meta") else None  # type: ignore[assignment]
    copy.decompress()
    return copy


_NO_MORE = object()
# How long a thread blocked on a hand-over queue waits before it looks whether to give up.
_HANDOVER_RETRY_SECONDS = 0.1


def _hand(handover: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Puts `item` into the queue unless `stop` is set first; True when it was put."""
    while not stop.is_set():
        try:
            handover.put(item, timeout=_HANDOVER_RETRY_SECONDS)
            return True
        except queue.Full:
            continue
    return False


def _take(handover: queue.Queue, stop: threading.Event) -> object:
    """The next item of the queue, or `_NO_MORE` once `stop` is set."""
    while not stop.is_set():
        try:
            return handover.get(timeout=_HANDOVER_RETRY_SECONDS)
        except queue.Empty:
            continue
    return _NO_MORE


def _unique_abstract(contexts: Iterable[PresentationContext]) -> list[str]:
    return list(dict.fromkeys(str(cx.abstract_syntax) for cx in contexts))
