"""DIMSE command sets (PS3.7 9.3, Annex E): built and read with `struct`.

Command sets are always Implicit VR Little Endian (PS3.7 6.3.1), so each element is a fixed
header and raw bytes: a request is packed in microseconds and a response is read into a dict
by element number, with no pydicom data set in between. `Message` is a command set and its
data set (still bytes) as they arrived.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import InvalidResponse, UpperLayerError

if TYPE_CHECKING:
    from .association import Association

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_FIND_RQ = 0x0020
C_FIND_RSP = 0x8020
C_GET_RQ = 0x0010
C_GET_RSP = 0x8010
C_MOVE_RQ = 0x0021
C_MOVE_RSP = 0x8021
C_ECHO_RQ = 0x0030
C_ECHO_RSP = 0x8030
C_CANCEL_RQ = 0x0FFF

# Command Data Set Type: "no data set follows"; any other value announces one.
NO_DATA_SET = 0x0101
DATA_SET_PRESENT = 0x0001
PRIORITY_MEDIUM = 0x0000

# Elements of the command group (0000,eeee) by element number.
AFFECTED_SOP_CLASS_UID = 0x0002
COMMAND_FIELD = 0x0100
MESSAGE_ID = 0x0110
MESSAGE_ID_BEING_RESPONDED_TO = 0x0120
MOVE_DESTINATION = 0x0600
PRIORITY = 0x0700
COMMAND_DATA_SET_TYPE = 0x0800
STATUS = 0x0900
AFFECTED_SOP_INSTANCE_UID = 0x1000
REMAINING_SUBOPERATIONS = 0x1020
COMPLETED_SUBOPERATIONS = 0x1021
FAILED_SUBOPERATIONS = 0x1022
WARNING_SUBOPERATIONS = 0x1023

ELEMENT_HEADER = struct.Struct("<HHI")


@dataclass
class Message:
    """A DIMSE message: its command set by element number and its data set, if any."""

    context_id: int
    command: dict[int, bytes]
    # A received data set may be a view of the PDU it arrived in (`Association.receive_message`).
    data: bytes | memoryview | None = None

    def us(self, element: int) -> int:
        value = self.command.get(element)
        return int.from_bytes(value[:2], "little") if value and len(value) >= 2 else 0

    def ui(self, element: int) -> str:
        value = self.command.get(element)
        return value.rstrip(b"\0 ").decode("ascii", "replace") if value else ""

    @property
    def command_field(self) -> int:
        return self.us(COMMAND_FIELD)

    @property
    def status(self) -> int:
        return self.us(STATUS)


# --- command sets (always Implicit VR Little Endian, PS3.7 6.3.1) ----------------------------


def uid_element(element: int, uid: str) -> bytes:
    # A UID echoed from a peer's request may hold anything; it is answered mangled, not crashed on.
    value = uid.encode("ascii", "replace")
    if len(value) % 2:
        value += b"\0"
    return ELEMENT_HEADER.pack(0, element, len(value)) + value


def ae_element(element: int, ae_title: str) -> bytes:
    value = ae_title.encode("ascii")
    if len(value) % 2:
        value += b" "  # AE values are padded with a space (PS3.5 6.2)
    return ELEMENT_HEADER.pack(0, element, len(value)) + value


def us_element(element: int, value: int) -> bytes:
    return ELEMENT_HEADER.pack(0, element, 2) + value.to_bytes(2, "little")


def command_set(*elements: bytes) -> bytes:
    """A command set of `elements` (given in ascending tag order) led by its group length."""
    body = b"".join(elements)
    return ELEMENT_HEADER.pack(0, 0x0000, 4) + len(body).to_bytes(4, "little") + body


def c_store_rq(message_id: int, sop_class_uid: str, sop_instance_uid: str) -> bytes:
    return command_set(
        uid_element(AFFECTED_SOP_CLASS_UID, sop_class_uid),
        us_element(COMMAND_FIELD, C_STORE_RQ),
        us_element(MESSAGE_ID, message_id),
        us_element(PRIORITY, PRIORITY_MEDIUM),
        us_element(COMMAND_DATA_SET_TYPE, DATA_SET_PRESENT),
        uid_element(AFFECTED_SOP_INSTANCE_UID, sop_instance_uid),
    )


def c_store_rsp(
    message_id_being_responded_to: int, sop_class_uid: str, sop_instance_uid: str, status: int
) -> bytes:
    return command_set(
        uid_element(AFFECTED_SOP_CLASS_UID, sop_class_uid),
        us_element(COMMAND_FIELD, C_STORE_RSP),
        us_element(MESSAGE_ID_BEING_RESPONDED_TO, message_id_being_responded_to),
        us_element(COMMAND_DATA_SET_TYPE, NO_DATA_SET),
        us_element(STATUS, status),
        uid_element(AFFECTED_SOP_INSTANCE_UID, sop_instance_uid),
    )


def c_find_rq(message_id: int, sop_class_uid: str) -> bytes:
    return _retrieve_or_find_rq(C_FIND_RQ, message_id, sop_class_uid)


def c_get_rq(message_id: int, sop_class_uid: str) -> bytes:
    return _retrieve_or_find_rq(C_GET_RQ, message_id, sop_class_uid)


def _retrieve_or_find_rq(command_field: int, message_id: int, sop_class_uid: str) -> bytes:
    return command_set(
        uid_element(AFFECTED_SOP_CLASS_UID, sop_class_uid),
        us_element(COMMAND_FIELD, command_field),
        us_element(MESSAGE_ID, message_id),
        us_element(PRIORITY, PRIORITY_MEDIUM),
        us_element(COMMAND_DATA_SET_TYPE, DATA_SET_PRESENT),
    )


def c_move_rq(message_id: int, sop_class_uid: str, move_destination: str) -> bytes:
    return command_set(
        uid_element(AFFECTED_SOP_CLASS_UID, sop_class_uid),
        us_element(COMMAND_FIELD, C_MOVE_RQ),
        us_element(MESSAGE_ID, message_id),
        ae_element(MOVE_DESTINATION, move_destination),
        us_element(PRIORITY, PRIORITY_MEDIUM),
        us_element(COMMAND_DATA_SET_TYPE, DATA_SET_PRESENT),
    )


def c_echo_rq(message_id: int, sop_class_uid: str) -> bytes:
    return command_set(
        uid_element(AFFECTED_SOP_CLASS_UID, sop_class_uid),
        us_element(COMMAND_FIELD, C_ECHO_RQ),
        us_element(MESSAGE_ID, message_id),
        us_element(COMMAND_DATA_SET_TYPE, NO_DATA_SET),
    )


def c_echo_rsp(message_id_being_responded_to: int, sop_class_uid: str) -> bytes:
    return command_set(
        uid_element(AFFECTED_SOP_CLASS_UID, sop_class_uid),
        us_element(COMMAND_FIELD, C_ECHO_RSP),
        us_element(MESSAGE_ID_BEING_RESPONDED_TO, message_id_being_responded_to),
        us_element(COMMAND_DATA_SET_TYPE, NO_DATA_SET),
        us_element(STATUS, 0x0000),
    )


def c_cancel_rq(message_id_being_responded_to: int) -> bytes:
    return command_set(
        us_element(COMMAND_FIELD, C_CANCEL_RQ),
        us_element(MESSAGE_ID_BEING_RESPONDED_TO, message_id_being_responded_to),
        us_element(COMMAND_DATA_SET_TYPE, NO_DATA_SET),
    )


def decode_command(encoded: bytes) -> dict[int, bytes]:
    """The elements of an encoded command set by element number (values as raw bytes).

    Elements of other groups are kept under their whole tag (``group << 16 | element``, which
    no command element number reaches): Orthanc puts the Failed SOP Instance UID List (0008,0058)
    of a final C-GET response into the command set instead of an identifier, and ADIT would
    rather read it there than refuse the answer.
    """
    elements: dict[int, bytes] = {}
    offset, end = 0, len(encoded)
    while offset < end:
        if offset + 8 > end:
            raise UpperLayerError("truncated command set")
        group, element, length = ELEMENT_HEADER.unpack_from(encoded, offset)
        offset += 8
        if offset + length > end:
            raise UpperLayerError(
                f"command set element ({group:04X},{element:04X}) runs past the command set"
            )
        key = element if group == 0x0000 else (group << 16) | element
        elements[key] = encoded[offset : offset + length]
        offset += length
    return elements


# --- responses ------------------------------------------------------------------------------

PENDING_STATUSES = frozenset({0xFF00, 0xFF01})


def receive_response(assoc: Association, command_field: int, message_id: int) -> Message:
    """The next message, which must be the response asked for (`check_response`)."""
    return check_response(assoc, assoc.receive_message(), command_field, message_id)


def check_response(
    assoc: Association, message: Message, command_field: int, message_id: int
) -> Message:
    """`message` must answer request `message_id` with `command_field` and carry a Status
    (PS3.7 9.3): anything else aborts the association and raises `InvalidResponse`. A missing
    Status is not success (it used to read as 0x0000)."""
    problem = None
    if message.command_field != command_field:
        problem = f"unexpected message 0x{message.command_field:04X}"
    elif message.us(MESSAGE_ID_BEING_RESPONDED_TO) != message_id:
        problem = (
            f"an answer to message {message.us(MESSAGE_ID_BEING_RESPONDED_TO)}, "
            f"not to the request {message_id}"
        )
    elif STATUS not in message.command:
        problem = "an answer without a Status"
    if problem is not None:
        assoc.abort()
        raise InvalidResponse(problem)
    return message
