"""DIMSE statuses in the standard's categories (PS3.7 annex C), read from pynetdicom's tables.

Which codes mean success, warning, failure, cancel or pending is the standard's business, not
ADIT's: a hand-written list ("0000, B000, B006, B007 count as stored") turned every other
warning, such as 0001 or 0107 (attribute list error) or 0116 (attribute value out of range),
into a failure that was retried until the task gave up. So services ask for the category of a
status here, and name its meaning in messages, both from pynetdicom's status tables.
"""

from __future__ import annotations

from pynetdicom.status import (
    GENERAL_STATUS,
    QR_FIND_SERVICE_CLASS_STATUS,
    QR_GET_SERVICE_CLASS_STATUS,
    QR_MOVE_SERVICE_CLASS_STATUS,
    STATUS_CANCEL,
    STATUS_FAILURE,
    STATUS_PENDING,
    STATUS_SUCCESS,
    STATUS_WARNING,
    STORAGE_SERVICE_CLASS_STATUS,
    code_to_category,
)

SUCCESS, WARNING, FAILURE, CANCEL, PENDING = (
    STATUS_SUCCESS,
    STATUS_WARNING,
    STATUS_FAILURE,
    STATUS_CANCEL,
    STATUS_PENDING,
)

_TABLES = {
    "C-STORE": STORAGE_SERVICE_CLASS_STATUS,
    "C-FIND": QR_FIND_SERVICE_CLASS_STATUS,
    "C-GET": QR_GET_SERVICE_CLASS_STATUS,
    "C-MOVE": QR_MOVE_SERVICE_CLASS_STATUS,
}


def category(status: int) -> str:
    """Success, Warning, Failure, Cancel, Pending (or Unknown) as PS3.7 annex C says."""
    return code_to_category(status)


def describe(service: str, status: int) -> str:
    """The status as a reader of a task log needs it: code, category and meaning."""
    entry = _TABLES.get(service, {}).get(status) or GENERAL_STATUS.get(status)
    if entry is None:
        return f"0x{status:04X} ({category(status)})"
    kind, meaning = entry
    return f"0x{status:04X} ({kind}: {meaning})" if meaning else f"0x{status:04X} ({kind})"
