"""Fetching through C-MOVE and ADIT's receiver (the worker side).

Order of events (the reverse order loses files, see issue #415 of the old ADIT):

1. The caller lists the SOP Instance UIDs the source holds (IMAGE-level C-FIND).
2. Subscribe at the receiver's file transmit server to ``(source AE title, StudyInstanceUID)``.
3. Send the C-MOVE (in a thread: it blocks until the PACS has pushed everything).
4. Yield every expected instance as it arrives, once.
5. Done only when every expected instance has arrived. Otherwise a `RetriableDicomError` says
   how many are missing: after ``inactivity_timeout`` seconds without a new instance, after
   ``total_timeout`` seconds in all, or shortly after the C-MOVE failed. Never a silent success.

`ReceiverMoveFetcher` implements the operator's ``MoveFetcher`` protocol, so it plugs into
:class:`adit.core.dicom.operator.DicomOperator` (``move_fetcher=ReceiverMoveFetcher()`` or
``set_default_move_fetcher(ReceiverMoveFetcher())``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag

from .dimse import _decode_from, remember_received_encoding
from .errors import DicomError, RetriableDicomError
from .file_transmit import ArrivalTracker, FileTransmitClient, ReceivedFile, Topic

if TYPE_CHECKING:
    from .operator import MoveRequest

logger = logging.getLogger(__name__)

# Poll interval while waiting for files, so a finished C-MOVE is noticed promptly.
_POLL = 0.5


class _MoveInBackground:
    """Runs the blocking C-MOVE call in a thread and keeps its outcome."""

    def __init__(self, send_c_move: Callable[[], Any]) -> None:
        self._send_c_move = send_c_move
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="c-move", daemon=True)

    def _run(self) -> None:
        try:
            self.result = self._send_c_move()
        except BaseException as error:  # reported to the fetching thread
            self.error = error
        finally:
            self.finished_at = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    @property
    def done(self) -> bool:
        return self.finished_at is not None

    def join(self, timeout: float) -> bool:
        self._thread.join(max(0.0, timeout))
        return self.done


def fetch_with_move(
    client: FileTransmitClient,
    topic: Topic,
    send_c_move: Callable[[], Any],
    expected_sop_instance_uids: Collection[str],
    *,
    inactivity_timeout: float = 60.0,
    total_timeout: float = 3600.0,
    settle_timeout: float = 5.0,
    warnings: list[str] | None = None,
    sop_classes: Mapping[str, str] | None = None,
    cancel_move: Callable[[], None] | None = None,
) -> Iterator[Dataset]:
    """Subscribes to ``topic``, then runs ``send_c_move`` and yields the expected instances.

    When the fetch ends while the C-MOVE still runs (the consumer stopped, instances are
    missing, or the PACS goes on after everything arrived), ``cancel_move`` asks the PACS to
    stop (C-CANCEL): it would otherwise push the rest of the study to a receiver that no
    longer wants it.

    Args:
        client: connection details of the receiver's file transmit server.
        topic: source AE title (the AE the PACS pushes with) and StudyInstanceUID.
        send_c_move: blocking call that sends the C-MOVE to the receiver's AE title; it runs
            in a background thread after the subscription is confirmed.
        expected_sop_instance_uids: every instance the source listed; others are ignored.
        inactivity_timeout: give up when no expected instance arrived for this long.
        total_timeout: give up after this long in all (including the caller's time per item).
        settle_timeout: after the C-MOVE failed, wait this long for stragglers, then give up.
        warnings: messages for the task log are appended here.
        sop_classes: SOP Class UID per expected instance, to name what is missing.
        cancel_move: stops the running C-MOVE (called from this thread while the C-MOVE
            waits in its own).

    Raises:
        RetriableDicomError: instances are missing (the message says how many of how many), or
            the receiver cannot be reached.
        DicomError: the C-MOVE failed permanently before any instance arrived (e.g. the PACS
            does not know the receiver's AE title), so another retrieve method may be tried.
    """
    tracker = ArrivalTracker(expected_sop_instance_uids)
    warnings = warnings if warnings is not None else []
    started = time.monotonic()
    total_deadline = started + total_timeout
    with client.subscribe(topic, tracker.expected) as subscription:
        move = _MoveInBackground(send_c_move)
        move.start()
        try:
            last_arrival = time.monotonic()
            while not tracker.complete:
                now = time.monotonic()
                deadline = min(total_deadline, last_arrival + inactivity_timeout)
                if move.error is not None and move.finished_at is not None:
                    deadline = min(deadline, max(move.finished_at, last_arrival) + settle_timeout)
                if now >= deadline:
                    raise _incomplete(
                        tracker,
                        move,
                        None if subscription.connected else subscription.last_error,
                        now,
                        total_deadline,
                        sop_classes,
                    )
                received = subscription.receive(min(_POLL, deadline - now))
                if received is None or not tracker.wanted(received.sop_instance_uid):
                    continue
                try:
                    ds = received_instance(received)
                except Exception as error:
                    # Counted as missing; a repeated delivery of the instance may still succeed.
                    logger.warning("Unreadable instance from the receiver: %s", error)
                    continue
                tracker.arrived(received.sop_instance_uid)
                yield ds
                last_arrival = time.monotonic()

            if not move.join(min(30.0, total_deadline - time.monotonic())):
                warnings.append(
                    f"C-MOVE from {topic.calling_ae_title}: still running after all "
                    f"{len(tracker.expected)} instances arrived"
                )
            elif move.error is not None:
                warnings.append(
                    f"C-MOVE from {topic.calling_ae_title} reported an error although all "
                    f"{len(tracker.expected)} instances arrived: {move.error}"
                )
        finally:
            if not move.done and cancel_move is not None:
                cancel_move()
    logger.debug(
        "C-MOVE fetch of %d instances done in %.1f s",
        len(tracker.expected),
        time.monotonic() - started,
    )


def received_instance(received: ReceivedFile) -> Dataset:
    """The instance of a delivered file, carrying the bytes it arrived as.

    The data set is decoded from the bytes after the file meta (as a C-GET decodes what it
    receives) and its file meta is made from what the receiver sent in the frame header, so the
    Part-10 header is never parsed. An unchanged instance is then relayed as those bytes.
    """
    encoded = received.encoded_dataset()
    transfer_syntax = received.transfer_syntax_uid
    if encoded is None or not transfer_syntax:
        return received.dataset()
    ds = _decode_from(encoded, transfer_syntax)
    ds.file_meta = _file_meta(received.sop_class_uid, received.sop_instance_uid, transfer_syntax)
    remember_received_encoding(ds, transfer_syntax, encoded)
    return ds


def _file_meta(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str
) -> FileMetaDataset:
    """File meta information of a received instance, as pydicom reads it from a file: raw
    elements, converted only when read. Setting the values one by one costs pydicom several
    times as much (each is validated at once), per relayed instance."""
    meta = FileMetaDataset()
    elements: dict = meta._dict  # type: ignore[attr-defined]
    for tag, vr, value in (
        (0x00020001, "OB", b"\x00\x01"),
        (0x00020002, "UI", _ui(sop_class_uid)),
        (0x00020003, "UI", _ui(sop_instance_uid)),
        (0x00020010, "UI", _ui(transfer_syntax_uid)),
    ):
        elements[Tag(tag)] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)
    return meta


def _ui(uid: str) -> bytes:
    value = uid.encode("ascii", "replace")
    return value + b"\0" if len(value) % 2 else value


def _incomplete(
    tracker: ArrivalTracker,
    move: _MoveInBackground,
    connection_error: str | None,
    now: float,
    total_deadline: float,
    sop_classes: Mapping[str, str] | None = None,
) -> DicomError:
    error = move.error
    if (
        isinstance(error, DicomError)
        and not isinstance(error, RetriableDicomError)
        and not tracker.received
        and connection_error is None
    ):
        # The receiver is up and nothing came: the PACS refused the move itself (e.g. it does
        # not know the receiver's AE title); another retrieve method may work.
        return error
    if error is not None:
        reason = f"C-MOVE failed: {error}"
    elif now >= total_deadline:
        reason = "total timeout"
    else:
        reason = "inactivity timeout"
    details = []
    if not move.done:
        details.append("C-MOVE still running")
    if connection_error:
        details.append(f"receiver connection: {connection_error}")
    if sop_classes:
        from .operator import missing_by_sop_class

        missing = tracker.expected - tracker.received
        details.append(f"missing: {missing_by_sop_class(missing, dict(sop_classes))}")
    result = tracker.incomplete_error(reason, "; ".join(details) or None)
    if isinstance(error, Exception):
        result.__cause__ = error
    return result


class ReceiverMoveFetcher:
    """The operator's ``MoveFetcher``: C-MOVE to ADIT's receiver, files over file transmit.

    The file transmit address comes from the request's ``LocalConfig`` unless given here.
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        inactivity_timeout: float = 60.0,
        total_timeout: float = 3600.0,
        settle_timeout: float = 5.0,
        secret: bytes | None = None,
    ) -> None:
        self.secret = secret
        self.host = host
        self.port = port
        self.inactivity_timeout = inactivity_timeout
        self.total_timeout = total_timeout
        self.settle_timeout = settle_timeout

    def __call__(self, request: MoveRequest) -> Iterator[Dataset]:
        study_uid = request.query.get_str("StudyInstanceUID")
        if not study_uid:
            raise DicomError(f"C-MOVE from {request.server}: the query names no StudyInstanceUID")
        client = FileTransmitClient(
            self.host or request.local.file_transmit_host,
            self.port or request.local.file_transmit_port,
            secret=self.secret,
        )
        return fetch_with_move(
            client,
            Topic(request.server.ae_title, study_uid),
            request.send_c_move,
            request.expected_sop_instance_uids,
            inactivity_timeout=self.inactivity_timeout,
            total_timeout=self.total_timeout,
            settle_timeout=self.settle_timeout,
            warnings=request.warnings,
            sop_classes=request.sop_classes,
            cancel_move=request.cancel_c_move,
        )
