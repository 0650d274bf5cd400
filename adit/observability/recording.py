"""What the workers and the receiver add to the counters of /metrics (`Counter` rows).

Each function is called at the end of the thing it counts (a transfer's instances once the
destination holds them, an error once it ends a DICOM operation) and never raises: a database
hiccup must not turn a finished transfer into a failed one, so a failure to count is logged and
the count is lost.
"""

from __future__ import annotations

import logging

from pydicom.dataelem import RawDataElement

from .metrics import PACS_ERRORS, TRANSFERRED_BYTES, TRANSFERRED_INSTANCES
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
        Counter.add(TRANSFERRED_INSTANCES, labels, instances)
        Counter.add(TRANSFERRED_BYTES, labels, size)
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
