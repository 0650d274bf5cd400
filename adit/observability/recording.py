"""What the workers and the receiver add to the counters of /metrics (`Counter` rows).

Each function is called at the end of the thing it counts (a transfer's instances once the
destination holds them, an error once it ends a DICOM operation) and never raises: a database
hiccup must not turn a finished transfer into a failed one, so a failure to count is logged and
the count is lost.
"""

from __future__ import annotations

import logging
import threading

from pydicom.dataelem import RawDataElement

from .metrics import PACS_ERRORS, RECEIVER_ASSOCIATIONS, TRANSFERRED_BYTES, TRANSFERRED_INSTANCES
from .models import Counter

logger = logging.getLogger(__name__)


def instance_size(ds) -> int:
    """Bytes of an instance as received: its received encoding when it has one, else the
    lengths of its elements, read without decoding them (reading a value would make an
    unchanged instance encode again)."""
    from adit.core.dicom.dimse import _RECEIVED_ENCODING

    received = getattr(ds, _RECEIVED_ENCODING, None)
    if received is not None:
        return len(received.encoded)
    size = 0
    for element in ds._dict.values():
        if isinstance(element, RawDataElement):
            if element.value is not None:
                size += len(element.value)
        elif isinstance(element.value, bytes | bytearray):
            size += len(element.value)
    return size


def count_transfer(app: str, source: str, destination: str, instances: int, size: int) -> None:
    """Instances (and their bytes) a task delivered to its destination."""
    labels = {"app": app, "source": source, "destination": destination}
    try:
        Counter.add_many(
            [(TRANSFERRED_INSTANCES, labels, instances), (TRANSFERRED_BYTES, labels, size)]
        )
    except Exception:  # noqa: BLE001 - counting must not fail the transfer
        logger.exception("Counting %d transferred instance(s) for /metrics failed", instances)


def count_pacs_error(server: str, role: str, error: BaseException) -> None:
    """A DICOM operation with `server` (role "source" or "destination") failed with `error`."""
    from adit.core.dicom.errors import DicomError, RetriableDicomError

    if not isinstance(error, DicomError):
        return
    try:
        retriable = "true" if isinstance(error, RetriableDicomError) else "false"
        Counter.add(PACS_ERRORS, {"server": server, "role": role, "retriable": retriable})
    except Exception:  # noqa: BLE001 - counting must not hide the error itself
        logger.exception("Counting a PACS error of %s for /metrics failed", server)


class AssociationCounts:
    """The receiver's association outcomes, counted in memory and added to the database every
    `interval` seconds by a background thread (and at `stop()`).

    The receiver must answer a PACS at once whether or not the database is reachable, so it
    only bumps a number here; counts that cannot be written stay and go with the next flush.
    """

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._pending: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, calling_ae: str, outcome: str) -> None:
        with self._lock:
            key = (calling_ae, outcome)
            self._pending[key] = self._pending.get(key, 0) + 1

    def flush(self) -> None:
        from django.db import close_old_connections

        with self._lock:
            pending, self._pending = self._pending, {}
        failed: dict[tuple[str, str], int] = {}
        close_old_connections()
        for (calling_ae, outcome), amount in pending.items():
            try:
                Counter.add(
                    RECEIVER_ASSOCIATIONS, {"calling_ae": calling_ae, "outcome": outcome}, amount
                )
            except Exception as error:  # noqa: BLE001 - the database may be away for a while
                failed[(calling_ae, outcome)] = amount
                logger.warning("Receiver counts for /metrics not written yet: %s", error)
        if failed:
            with self._lock:
                for key, amount in failed.items():
                    self._pending[key] = self._pending.get(key, 0) + amount

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="receiver-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)
        self.flush()

    def _run(self) -> None:
        from django.db import connection

        try:
            while not self._stop.wait(self.interval):
                self.flush()
        finally:
            connection.close()
