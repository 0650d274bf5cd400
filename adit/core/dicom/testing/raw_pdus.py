"""Raw PDUs for tests that speak bytes at ADIT: valid ones built with pynetdicom's codecs,
a PACS's whole answer to an association, and seeded mutations of them for fuzz runs.

Valid PDUs come from pynetdicom's PDU classes and DIMSE message encoder, so the baseline is
what a conformant peer sends (not ADIT's own encoder, which is what is under test).

A fuzz run must be reproducible: every mutation draws from one `random.Random`, so a failing
case is found again by its seed and number. The mutations follow the ways a broken or hostile
peer gets PS3.8 framing wrong: flipped bits, cut-off PDUs, length fields of 0, of the largest
value or one off, wrong PDU types, item types swapped, items repeated, and random bytes behind
a valid header. Structured mutations know where the length fields and items of A-ASSOCIATE
PDUs, P-DATA-TF PDVs and command sets are (`items_of`).

Nothing here imports ADIT's upper layer: the tests that use it speak to ADIT only through its
sockets and public façades.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO

from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import dimse_messages, dimse_primitives
from pynetdicom.dsutils import encode
from pynetdicom.pdu import (
    A_ABORT_RQ,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RQ,
    A_RELEASE_RP,
    A_RELEASE_RQ,
)
from pynetdicom.pdu_primitives import (
    A_ABORT,
    A_ASSOCIATE,
    A_RELEASE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, build_context

APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"
# The fuzz peers' own implementation class UID (a 2.25 UUID-derived UID, PS3.5 B.2).
PEER_IMPLEMENTATION_CLASS_UID = "2.25.140230871931845120945011530617493476512"

PDU_TYPES = (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07)
# Item types of A-ASSOCIATE PDUs (PS3.8 9.3.2, D.3.3): a shuffle or substitution takes these.
ITEM_TYPES = (0x10, 0x20, 0x21, 0x30, 0x40, 0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58)
# Offset of the first variable item of an A-ASSOCIATE-RQ/AC: PDU header (6), protocol version
# and reserved (4), called and calling AE title (32), reserved (32).
ASSOCIATE_ITEMS_OFFSET = 74


# --- valid PDUs ---------------------------------------------------------------------------


def encoded(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    """`ds` as a DIMSE data set in one of the two uncompressed little endian syntaxes."""
    data = encode(ds, transfer_syntax == ImplicitVRLittleEndian, True)
    assert data is not None
    return data


def associate_rq(
    calling_ae_title: str, called_ae_title: str, contexts: Sequence[PresentationContext]
) -> bytes:
    """An A-ASSOCIATE-RQ proposing `contexts` (their IDs set 1, 3, 5, ...)."""
    for index, context in enumerate(contexts):
        context.context_id = 2 * index + 1
    primitive = A_ASSOCIATE()
    primitive.application_context_name = APPLICATION_CONTEXT_NAME
    primitive.calling_ae_title = calling_ae_title
    primitive.called_ae_title = called_ae_title
    primitive.presentation_context_definition_list = list(contexts)
    primitive.user_information = _user_information()
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()


def associate_ac(
    request: bytes,
    choose: Callable[[str, list[str]], str | None] = lambda abstract, syntaxes: syntaxes[0],
    scp_role: bool = True,
) -> tuple[bytes, dict[int, tuple[str, str]]]:
    """The A-ASSOCIATE-AC answering an encoded A-ASSOCIATE-RQ, and the accepted contexts.

    `choose(abstract syntax, proposed syntaxes)` picks the transfer syntax of each context
    (None refuses it). Role selection items are answered with the SCP role granted (what a PACS
    sending C-STORE sub-operations of a C-GET says). Accepted: context ID → (abstract syntax,
    transfer syntax).
    """
    rq = A_ASSOCIATE_RQ()
    rq.decode(request)
    asked = rq.to_primitive()
    accepted: dict[int, tuple[str, str]] = {}
    results = []
    for proposed in asked.presentation_context_definition_list:
        abstract = str(proposed.abstract_syntax)
        syntaxes = [str(syntax) for syntax in proposed.transfer_syntax]
        chosen = choose(abstract, syntaxes)
        result = PresentationContext()
        result.context_id = proposed.context_id
        result.abstract_syntax = proposed.abstract_syntax
        result.result = 0x00 if chosen else 0x03
        result.transfer_syntax = [chosen or syntaxes[0]]
        if chosen:
            accepted[int(proposed.context_id or 0)] = (abstract, chosen)
        results.append(result)
    answer = A_ASSOCIATE()
    answer.application_context_name = APPLICATION_CONTEXT_NAME
    answer.calling_ae_title = asked.calling_ae_title
    answer.called_ae_title = asked.called_ae_title
    answer.result = 0x00
    answer.presentation_context_definition_results_list = results
    user_information = _user_information()
    for item in asked.user_information:
        if isinstance(item, SCP_SCU_RoleSelectionNegotiation) and scp_role:
            role = SCP_SCU_RoleSelectionNegotiation()
            role.sop_class_uid = item.sop_class_uid
            role.scu_role = False
            role.scp_role = True
            user_information.append(role)
    answer.user_information = user_information
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(answer)
    return pdu.encode(), accepted


def release_rq() -> bytes:
    return A_RELEASE_RQ().encode()


def release_rp() -> bytes:
    pdu = A_RELEASE_RP()
    primitive = A_RELEASE()
    primitive.result = "affirmative"
    pdu.from_primitive(primitive)
    return pdu.encode()


def abort(source: int = 0x00, reason: int = 0x00) -> bytes:
    primitive = A_ABORT()
    primitive.abort_source = source
    pdu = A_ABORT_RQ()
    pdu.from_primitive(primitive)
    body = bytearray(pdu.encode())
    body[8], body[9] = source, reason  # pynetdicom writes source only; the reason is ours
    return bytes(body)


def dimse_pdus(
    message_class: str, context_id: int, max_pdu: int = 16384, **parameters: object
) -> list[bytes]:
    """One DIMSE message as the P-DATA-TF PDUs pynetdicom's encoder makes of it.

    `message_class` names a message of `pynetdicom.dimse_messages` (e.g. "C_FIND_RSP");
    `parameters` set the primitive's attributes (`Identifier`/`DataSet`: the encoded bytes).
    """
    primitive_class = getattr(dimse_primitives, message_class.rsplit("_", 1)[0])
    primitive = primitive_class()
    for name, value in parameters.items():
        if name in ("Identifier", "DataSet") and isinstance(value, bytes):
            value = BytesIO(value)
        setattr(primitive, name, value)
    message = getattr(dimse_messages, message_class)()
    message.primitive_to_message(primitive)
    return [
        _p_data_tf(p_data.presentation_data_value_list)
        for p_data in message.encode_msg(context_id, max_pdu)
    ]


def merged(pdus: Iterable[bytes]) -> bytes:
    """The PDV items of several P-DATA-TF PDUs in one PDU (several PDVs per PDU, PS3.8 9.3.5)."""
    body = b"".join(pdu[6:] for pdu in pdus)
    return struct.pack(">BBI", 0x04, 0, len(body)) + body


def fragmented_command(pdus: list[bytes], pieces: int = 3) -> list[bytes]:
    """The message of `pdus` with its command set cut into `pieces` PDVs in PDUs of their own.

    The first PDV of the first PDU must hold the whole command set (as `dimse_pdus` makes it);
    other PDVs of that PDU (data, when it was `merged`) follow in a PDU of their own.
    """
    first = pdus[0]
    length, context_id, control = struct.unpack_from(">IBB", first, 6)
    assert control & 0x03 == 0x03, "the first PDV must carry the whole command set"
    command = first[12 : 10 + length]
    step = -(-len(command) // pieces)
    fragments = [command[start : start + step] for start in range(0, len(command), step)]
    out = []
    for index, fragment in enumerate(fragments):
        last = index == len(fragments) - 1
        out.append(_p_data_tf([(context_id, bytes((0x03 if last else 0x01,)) + fragment)]))
    rest_of_first = first[10 + length :]
    if rest_of_first:
        out.append(struct.pack(">BBI", 0x04, 0, len(rest_of_first)) + rest_of_first)
    return out + pdus[1:]


def reframed(pdus: list[bytes], pieces: int = 3) -> list[bytes]:
    """A message with its command set in `pieces` PDUs and all of its data set's fragments as
    several PDVs of one PDU (both allowed by PS3.8 9.3.5 and Annex E)."""
    fragmented = fragmented_command(pdus, pieces)
    command = [pdu for pdu in fragmented if pdu[11] & 0x01]  # control header of the first PDV
    data = [pdu for pdu in fragmented if not pdu[11] & 0x01]
    return command + ([merged(data)] if data else [])


def command_value(pdus: Iterable[bytes], element: int) -> bytes | None:
    """The value of command element (0000,`element`) of a message's P-DATA-TF PDUs."""
    command = b""
    for pdu in pdus:
        offset = 6
        while offset + 6 <= len(pdu):
            length, _, control = struct.unpack_from(">IBB", pdu, offset)
            if control & 0x01:
                command += pdu[offset + 6 : offset + 4 + length]
            offset += 4 + length
    offset = 0
    while offset + 8 <= len(command):
        group, number, length = struct.unpack_from("<HHI", command, offset)
        if (group, number) == (0x0000, element):
            return command[offset + 8 : offset + 8 + length]
        offset += 8 + length
    return None


def status_of(pdus: Iterable[bytes]) -> int | None:
    """The Status (0000,0900) of a response message, None when it has none."""
    value = command_value(pdus, 0x0900)
    return None if value is None else int.from_bytes(value[:2], "little")


def _p_data_tf(pdvs: Iterable[tuple[int, bytes]]) -> bytes:
    body = b"".join(
        struct.pack(">IB", len(value) + 1, context_id) + value for context_id, value in pdvs
    )
    return struct.pack(">BBI", 0x04, 0, len(body)) + body


def _user_information() -> list:
    maximum_length = MaximumLengthNotification()
    maximum_length.maximum_length_received = 16384
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = PEER_IMPLEMENTATION_CLASS_UID
    return [maximum_length, implementation]


def storage_context(sop_class: str, *syntaxes: str) -> PresentationContext:
    return build_context(sop_class, list(syntaxes) or [ExplicitVRLittleEndian])


# --- a PACS's answers ---------------------------------------------------------------------

FIND_MODEL = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Q/R Information Model - FIND
GET_MODEL = "1.2.840.10008.5.1.4.1.2.2.3"  # Study Root Q/R Information Model - GET


def pacs_answers(
    request: bytes, operation: str, instances: Sequence[Dataset]
) -> tuple[bytes, list[list[bytes]]]:
    """A PACS's A-ASSOCIATE-AC to ADIT's `request` and its DIMSE messages for `operation`.

    Each message is a list of P-DATA-TF PDUs, in the order a PACS sends them:

    * "C-FIND": a pending response per instance (a STUDY-level match), then the final success;
    * "C-GET": per instance a C-STORE sub-operation (the first in PDUs of its own, the others
      with command and data in one PDU) and a pending C-GET response, then the final success;
    * "C-STORE": a success response per instance stored (message IDs 1, 2, ...; the second and
      later ones with their command sets in three PDVs of PDUs of their own).

    The instances are sent in Explicit VR Little Endian on the context of their SOP class.
    """
    accept, accepted = associate_ac(request)
    by_syntax = {syntaxes: context_id for context_id, syntaxes in accepted.items()}
    messages: list[list[bytes]] = []
    if operation == "C-FIND":
        context = by_syntax[(FIND_MODEL, ImplicitVRLittleEndian)]
        for ds in instances:
            identifier = Dataset()
            identifier.QueryRetrieveLevel = "STUDY"
            identifier.PatientID = ds.PatientID
            identifier.StudyInstanceUID = ds.StudyInstanceUID
            messages.append(
                dimse_pdus(
                    "C_FIND_RSP",
                    context,
                    MessageIDBeingRespondedTo=1,
                    AffectedSOPClassUID=FIND_MODEL,
                    Status=0xFF00,
                    Identifier=encoded(identifier, ImplicitVRLittleEndian),
                )
            )
        messages.append(
            dimse_pdus(
                "C_FIND_RSP",
                context,
                MessageIDBeingRespondedTo=1,
                AffectedSOPClassUID=FIND_MODEL,
                Status=0x0000,
            )
        )
    elif operation == "C-GET":
        context = by_syntax[(GET_MODEL, ImplicitVRLittleEndian)]
        for index, ds in enumerate(instances):
            storage = by_syntax[(str(ds.SOPClassUID), ExplicitVRLittleEndian)]
            store = dimse_pdus(
                "C_STORE_RQ",
                storage,
                max_pdu=1024,
                MessageID=index + 1,
                AffectedSOPClassUID=str(ds.SOPClassUID),
                AffectedSOPInstanceUID=str(ds.SOPInstanceUID),
                Priority=0,
                DataSet=encoded(ds),
            )
            messages.append(store if index == 0 else [merged(store)])
            messages.append(_get_rsp(context, 0xFF00, len(instances) - index - 1, index + 1))
        messages.append(_get_rsp(context, 0x0000, 0, len(instances)))
    elif operation == "C-STORE":
        for index, ds in enumerate(instances):
            context = by_syntax[(str(ds.SOPClassUID), ExplicitVRLittleEndian)]
            store_rsp = dimse_pdus(
                "C_STORE_RSP",
                context,
                MessageIDBeingRespondedTo=index + 1,
                AffectedSOPClassUID=str(ds.SOPClassUID),
                AffectedSOPInstanceUID=str(ds.SOPInstanceUID),
                Status=0x0000,
            )
            messages.append(store_rsp if index == 0 else fragmented_command(store_rsp))
    else:
        raise ValueError(f"no answers scripted for {operation}")
    return accept, messages


def _get_rsp(context_id: int, status: int, remaining: int, completed: int) -> list[bytes]:
    return dimse_pdus(
        "C_GET_RSP",
        context_id,
        MessageIDBeingRespondedTo=1,
        AffectedSOPClassUID=GET_MODEL,
        Status=status,
        NumberOfRemainingSuboperations=remaining,
        NumberOfCompletedSuboperations=completed,
        NumberOfFailedSuboperations=0,
        NumberOfWarningSuboperations=0,
    )


def whole_exchange(request: bytes, operation: str, instances: Sequence[Dataset]) -> list[bytes]:
    """All a PACS sends for `operation`, A-ASSOCIATE-AC to A-RELEASE-RP, as one PDU list (ADIT
    reads them in order, so they may all be sent at once)."""
    accept, messages = pacs_answers(request, operation, instances)
    return [accept, *(pdu for message in messages for pdu in message), release_rp()]


# --- reading and structure ----------------------------------------------------------------


def read_pdu(sock: socket.socket, limit: int = 1024 * 1024) -> bytes | None:
    """The next whole PDU from `sock` (None at the end of the stream)."""
    header = _recv_exactly(sock, 6)
    if header is None:
        return None
    length = struct.unpack(">I", header[2:])[0]
    if length > limit:
        raise ValueError(f"a PDU announced {length} bytes")
    body = _recv_exactly(sock, length)
    if body is None:
        return None
    return header + body


def read_until(sock: socket.socket, pdu_type: int) -> list[bytes]:
    """The PDUs from `sock` up to and including the first of `pdu_type` (fewer at the end of
    the stream)."""
    pdus = []
    while (pdu := read_pdu(sock)) is not None:
        pdus.append(pdu)
        if pdu[0] == pdu_type:
            break
    return pdus


def read_message(sock: socket.socket) -> list[bytes]:
    """The P-DATA-TF PDUs of the next whole DIMSE message: up to the last command fragment
    when its Command Data Set Type says no data set follows, else up to the last data fragment
    (a request ADIT sends: C-FIND-RQ, C-GET-RQ, C-STORE-RQ, C-STORE-RSP, C-CANCEL-RQ)."""
    pdus = []
    command = b""
    while (pdu := read_pdu(sock)) is not None:
        pdus.append(pdu)
        if pdu[0] != 0x04:
            break
        offset = 6
        while offset + 6 <= len(pdu):
            length, _, control = struct.unpack_from(">IBB", pdu, offset)
            value = pdu[offset + 6 : offset + 4 + length]
            offset += 4 + length
            if control & 0x01:
                command += value
                if control & 0x02 and _no_data_set(command):
                    return pdus
            elif control & 0x02:
                return pdus
    return pdus


def _no_data_set(command: bytes) -> bool:
    offset = 0
    while offset + 8 <= len(command):
        group, element, length = struct.unpack_from("<HHI", command, offset)
        if (group, element) == (0x0000, 0x0800):
            return command[offset + 8 : offset + 10] == b"\x01\x01"
        offset += 8 + length
    return False


@dataclass
class RawPeer:
    """A peer listening on a loopback port that runs `handler` on one connection.

    `result()` waits for the handler and returns what it returned (or raises what it raised).
    """

    port: int
    _done: threading.Event = field(default_factory=threading.Event)
    _outcome: list = field(default_factory=list)

    def result(self, timeout: float = 10.0):
        if not self._done.wait(timeout):
            raise TimeoutError("the raw peer's handler did not finish")
        value, error = self._outcome
        if error is not None:
            raise error
        return value


@contextmanager
def raw_peer(handler: Callable[[socket.socket], object], timeout: float = 5.0) -> Iterator[RawPeer]:
    """Serves one connection on a free loopback port with `handler(socket)` (on a thread; the
    socket has `timeout` set and is closed after the handler)."""
    listener = socket.create_server(("127.0.0.1", 0))
    peer = RawPeer(listener.getsockname()[1])

    def serve() -> None:
        value, error = None, None
        try:
            sock, _ = listener.accept()
            with sock:
                sock.settimeout(timeout)
                value = handler(sock)
        except BaseException as raised:  # handed to result()
            error = raised
        peer._outcome[:] = [value, error]
        peer._done.set()

    thread = threading.Thread(target=serve, name="raw-peer", daemon=True)
    thread.start()
    try:
        yield peer
    finally:
        try:
            listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        listener.close()
        thread.join(timeout + 1)


def closed_within(sock: socket.socket, seconds: float) -> bool | None:
    """True when the peer closed `sock` within `seconds` (what it still sent is dropped), None
    when it sent a PDU instead, False when it stayed silent and open."""
    sock.settimeout(seconds)
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True if not data else None


def _recv_exactly(sock: socket.socket, length: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < length:
        chunk = sock.recv(length - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


@dataclass(frozen=True)
class Field:
    """A length field: where it is and how many bytes (big or little endian) it has."""

    offset: int
    size: int
    little_endian: bool = False


@dataclass(frozen=True)
class Item:
    """An item (or PDV, or sub-item) of a PDU: its span, its type byte and its length field."""

    start: int
    end: int
    length: Field
    # The level it is on: 0 = in the PDU, 1 = inside an item (user information, PDV value).
    level: int
    parent: Item | None = None


def items_of(pdu: bytes) -> list[Item]:
    """The items of `pdu` that a structured mutation can touch (as far as they parse)."""
    found: list[Item] = []
    if len(pdu) < 6:
        return found
    if pdu[0] in (0x01, 0x02):
        offset = ASSOCIATE_ITEMS_OFFSET
        while offset + 4 <= len(pdu):
            length = struct.unpack_from(">H", pdu, offset + 2)[0]
            item = Item(offset, min(offset + 4 + length, len(pdu)), Field(offset + 2, 2), 0)
            found.append(item)
            inner = {0x20: 8, 0x21: 8, 0x50: 4}.get(pdu[offset])
            if inner is not None:
                found += _sub_items(pdu, offset + inner, item.end, item)
            offset += 4 + length
    elif pdu[0] == 0x04:
        offset = 6
        while offset + 6 <= len(pdu):
            length = struct.unpack_from(">I", pdu, offset)[0]
            item = Item(offset, min(offset + 4 + length, len(pdu)), Field(offset, 4), 0)
            found.append(item)
            if pdu[offset + 5] & 0x01:  # a command fragment: its elements
                found += _command_elements(pdu, offset + 6, item.end, item)
            offset += 4 + length
    return found


def _sub_items(pdu: bytes, offset: int, end: int, parent: Item) -> list[Item]:
    found = []
    while offset + 4 <= end:
        length = struct.unpack_from(">H", pdu, offset + 2)[0]
        found.append(Item(offset, min(offset + 4 + length, end), Field(offset + 2, 2), 1, parent))
        offset += 4 + length
    return found


def _command_elements(pdu: bytes, offset: int, end: int, parent: Item) -> list[Item]:
    found = []
    while offset + 8 <= end:
        length = struct.unpack_from("<I", pdu, offset + 4)[0]
        found.append(
            Item(offset, min(offset + 8 + length, end), Field(offset + 4, 4, True), 1, parent)
        )
        offset += 8 + length
    return found


def length_fields(pdu: bytes) -> list[Field]:
    return [Field(2, 4)] + [item.length for item in items_of(pdu)]


# --- mutations ----------------------------------------------------------------------------


def _set_field(pdu: bytearray, field: Field, value: int) -> None:
    value &= (1 << (8 * field.size)) - 1
    pdu[field.offset : field.offset + field.size] = value.to_bytes(
        field.size, "little" if field.little_endian else "big"
    )


def _get_field(pdu: bytes | bytearray, field: Field) -> int:
    return int.from_bytes(
        pdu[field.offset : field.offset + field.size], "little" if field.little_endian else "big"
    )


def _grow_enclosing(pdu: bytearray, item: Item, by: int) -> None:
    """Adds `by` to the lengths of the items around `item` and of the PDU."""
    parent = item.parent
    while parent is not None:
        _set_field(pdu, parent.length, _get_field(pdu, parent.length) + by)
        parent = parent.parent
    _set_field(pdu, Field(2, 4), _get_field(pdu, Field(2, 4)) + by)


def bit_flips(rng: random.Random, pdu: bytes) -> bytes:
    mutated = bytearray(pdu)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 8))):
        position = rng.randrange(len(mutated))
        mutated[position] ^= 1 << rng.randrange(8)
    return bytes(mutated)


def truncation(rng: random.Random, pdu: bytes) -> bytes:
    return pdu[: rng.randrange(len(pdu))]


def length_zero(rng: random.Random, pdu: bytes) -> bytes:
    mutated = bytearray(pdu)
    _set_field(mutated, rng.choice(length_fields(pdu)), 0)
    return bytes(mutated)


def length_huge(rng: random.Random, pdu: bytes) -> bytes:
    mutated = bytearray(pdu)
    field = rng.choice(length_fields(pdu))
    top = (1 << (8 * field.size)) - 1
    _set_field(mutated, field, rng.choice((top, top - 1, 1 << (8 * field.size - 1), 1024**3)))
    return bytes(mutated)


def length_off_by_one(rng: random.Random, pdu: bytes) -> bytes:
    mutated = bytearray(pdu)
    field = rng.choice(length_fields(pdu))
    _set_field(mutated, field, _get_field(pdu, field) + rng.choice((-1, 1)))
    return bytes(mutated)


def wrong_pdu_type(rng: random.Random, pdu: bytes) -> bytes:
    others = [t for t in (*PDU_TYPES, 0x00, 0x08, 0x7F, 0xFF) if t != pdu[0]]
    return bytes((rng.choice(others),)) + pdu[1:]


def shuffled_item_types(rng: random.Random, pdu: bytes) -> bytes:
    """Item types swapped among the items of one level (for PDVs: their control headers and
    context IDs), or one item given another item's type."""
    items = items_of(pdu)
    if not items:
        return wrong_pdu_type(rng, pdu)
    mutated = bytearray(pdu)
    level = rng.choice(sorted({item.level for item in items}))
    same_level = [item for item in items if item.level == level]
    if pdu[0] == 0x04 and level == 0:
        positions = [item.start + rng.choice((4, 5)) for item in same_level]
    elif pdu[0] == 0x04:  # command elements: their element numbers
        positions = [item.start + 2 for item in same_level]
    else:
        positions = [item.start for item in same_level]
    values = [mutated[position] for position in positions]
    if len(set(values)) > 1:
        rng.shuffle(values)
        for position, value in zip(positions, values, strict=True):
            mutated[position] = value
    else:
        mutated[rng.choice(positions)] = rng.choice((*ITEM_TYPES, 0x00, 0x01, 0x02, 0x03, 0xFF))
    return bytes(mutated)


def duplicated_item(rng: random.Random, pdu: bytes) -> bytes:
    """An item repeated right after itself; mostly with the enclosing lengths corrected, so
    the PDU still frames and the duplicate reaches the item decoder."""
    items = items_of(pdu)
    if not items:
        return pdu + pdu
    item = rng.choice(items)
    copy = pdu[item.start : item.end]
    mutated = bytearray(pdu[: item.end] + copy + pdu[item.end :])
    if rng.random() < 0.8:
        _grow_enclosing(mutated, item, len(copy))
    return bytes(mutated)


def random_after_header(rng: random.Random, pdu: bytes) -> bytes:
    """A valid header (of the PDU, or up to the first item) followed by random bytes."""
    items = items_of(pdu)
    keep = rng.choice((6, items[0].start + 6 if items else 6))
    keep = min(keep, len(pdu))
    size = rng.choice((0, 1, 3, 7, rng.randrange(1, 64), len(pdu) - keep, rng.randrange(1, 4096)))
    size = max(size, 0)
    mutated = bytearray(pdu[:keep] + rng.randbytes(size))
    if rng.random() < 0.7 and len(mutated) >= 6:
        _set_field(mutated, Field(2, 4), len(mutated) - 6)
    return bytes(mutated)


Mutation = Callable[[random.Random, bytes], bytes]
MUTATIONS: dict[str, Mutation] = {
    "bit flips": bit_flips,
    "truncation": truncation,
    "length 0": length_zero,
    "length huge": length_huge,
    "length off by one": length_off_by_one,
    "wrong PDU type": wrong_pdu_type,
    "item types shuffled": shuffled_item_types,
    "item duplicated": duplicated_item,
    "random bytes after header": random_after_header,
}


@dataclass(frozen=True)
class MutatedScript:
    """A script of PDUs with one of them mutated; `describe()` names the case for a report."""

    pdus: list[bytes]
    index: int
    mutation: str
    kept_rest: bool

    def describe(self) -> str:
        rest = "rest sent" if self.kept_rest else "rest dropped"
        return f"PDU {self.index} ({self.mutation}, {rest})"


def mutate_script(
    rng: random.Random, script: Sequence[bytes], first: int = 0, last: int | None = None
) -> MutatedScript:
    """`script` with one PDU mutated (its index from `first` to `last`, both included, by
    default any); the PDUs after it are sent or not."""
    index = rng.randint(first, len(script) - 1 if last is None else last)
    name = rng.choice(sorted(MUTATIONS))
    mutated = MUTATIONS[name](rng, script[index])
    kept_rest = rng.random() < 0.5
    pdus = [*script[:index], mutated, *(script[index + 1 :] if kept_rest else ())]
    return MutatedScript(pdus, index, name, kept_rest)


def drain(sock: socket.socket, timeout: float) -> bool:
    """Reads until the peer closes the connection; False when it still had not after `timeout`
    seconds of silence."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True
