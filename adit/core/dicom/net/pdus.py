"""PDU framing (PS3.8 9.3): PDU types, bounded reads, and the fixed small PDUs.

Every PDU read goes through `read_pdu`, which checks the announced length against the limit of
its type *before* reading or allocating anything: a peer announcing 1 GiB gets an A-ABORT, not
1 GiB of buffer. ADIT's Maximum Length Received (`MAX_PDU_RECEIVE`) bounds a P-DATA-TF; the
association PDUs and A-RELEASE/A-ABORT have small fixed caps.

Time is bounded like size. A socket timeout bounds one `recv()` only, so a peer that trickles a
byte every few seconds would hold a read (and the worker or receiver thread behind it) forever.
Readers made by `pdu_reader` carry a timeout that `read_pdu` turns into a deadline for the
whole PDU: from the moment ADIT starts waiting for it until its last byte. For the DIMSE
timeout that is the time the peer may take for the next PDU (as before, for a prompt peer) and
no more for a slow one; the ACSE timeout bounds the association answer and the release the
same way.
"""

from __future__ import annotations

import io
import select
import socket
import struct
import time

from .errors import PduTooLarge, UpperLayerError

# PDU types (PS3.8 9.3.1).
A_ASSOCIATE_RQ_PDU = 0x01
A_ASSOCIATE_AC_PDU = 0x02
A_ASSOCIATE_RJ_PDU = 0x03
P_DATA_TF_PDU = 0x04
A_RELEASE_RQ_PDU = 0x05
A_RELEASE_RP_PDU = 0x06
A_ABORT_PDU = 0x07

# Command Field values (PS3.7 E.1).

# Announced as ADIT's Maximum Length Received; 0 would allow PDUs of any size, which some
# PACS answer with one PDU per instance of hundreds of megabytes.
MAX_PDU_RECEIVE = 1024 * 1024
# Fragments ADIT sends when the peer announces no limit (0).
UNLIMITED_PEER_FRAGMENT = 1024 * 1024
# Buffers handed to one `sendmsg()` (Linux's IOV_MAX is 1024).
SEND_MAX_PARTS = 512
# Size of the read buffer in front of the socket: many small PDUs per `recv()`.
READ_BUFFER_BYTES = 256 * 1024
# The largest A-ASSOCIATE-RQ/AC/RJ ADIT reads. 128 presentation contexts with a dozen transfer
# syntaxes each take about 50 KB; anything near this cap is not a real peer.
MAX_ASSOCIATION_PDU = 256 * 1024
# A-RELEASE and A-ABORT PDUs carry 4 bytes; a little room for peers that pad.
MAX_SMALL_PDU = 1024

PDU_HEADER = struct.Struct(">BBI")
PDV_HEADER = struct.Struct(">IBB")
P_DATA_HEADER = struct.Struct(">BBIIBB")  # PDU header + one PDV item header
RELEASE_RQ = PDU_HEADER.pack(A_RELEASE_RQ_PDU, 0, 4) + bytes(4)
RELEASE_RP = PDU_HEADER.pack(A_RELEASE_RP_PDU, 0, 4) + bytes(4)
# Source 0 = DICOM UL service-user (ADIT), reason 0 = not specified.
ABORT = PDU_HEADER.pack(A_ABORT_PDU, 0, 4) + bytes(4)


def abort_pdu(source: int, reason: int) -> bytes:
    return PDU_HEADER.pack(A_ABORT_PDU, 0, 4) + bytes((0, 0, source, reason))


class DeadlineSocketIO(io.RawIOBase):
    """The bytes of a socket, each `recv()` allowed only what is left of the current deadline.

    `timeout` (seconds, None for none) is what `start_deadline()` allows from now on; the
    owner may change it (e.g. the ACSE timeout for a release). The wait is a `poll()` before
    the `recv()` rather than a changed socket timeout, which would also cut short a `sendall()`
    of another thread on the same socket. Closing it leaves the socket open (the association
    closes that).
    """

    def __init__(self, sock: socket.socket, timeout: float | None) -> None:
        super().__init__()
        self._socket = sock
        self._poller = select.poll()
        self._poller.register(sock, select.POLLIN)
        self.timeout = timeout
        self._deadline: float | None = None

    def readable(self) -> bool:
        return True

    def start_deadline(self) -> None:
        self._deadline = None if self.timeout is None else time.monotonic() + self.timeout

    def readinto(self, buffer) -> int:
        if self._deadline is not None:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0 or not self._poller.poll(remaining * 1000):
                raise TimeoutError("timed out (the peer did not send the whole PDU in time)")
        return self._socket.recv_into(buffer)


def pdu_reader(sock: socket.socket, timeout: float | None) -> io.BufferedReader:
    """A buffered reader of `sock` whose PDU reads (`read_pdu`) end after `timeout` seconds."""
    return io.BufferedReader(DeadlineSocketIO(sock, timeout), READ_BUFFER_BYTES)


def set_read_timeout(reader, timeout: float | None) -> None:
    """Changes what `read_pdu` allows each later PDU on a reader from `pdu_reader`."""
    raw = getattr(reader, "raw", None)
    if isinstance(raw, DeadlineSocketIO):
        raw.timeout = timeout


def read_exactly(reader, length: int) -> bytes:
    data = reader.read(length)
    if data is None or len(data) < length:
        raise UpperLayerError("the connection was closed by the peer")
    return data


def max_pdu_body(pdu_type: int) -> int:
    if pdu_type == P_DATA_TF_PDU:
        # ADIT's Maximum Length Received bounds the variable field of a P-DATA-TF (PS3.8 D.1).
        return MAX_PDU_RECEIVE
    if pdu_type in (A_ASSOCIATE_RQ_PDU, A_ASSOCIATE_AC_PDU, A_ASSOCIATE_RJ_PDU):
        return MAX_ASSOCIATION_PDU
    return MAX_SMALL_PDU


def read_pdu(reader) -> tuple[int, bytes, bytes]:
    """(PDU type, header, body) of the next PDU.

    The announced length is checked against the limit of the PDU's type before anything is
    read or allocated, so a peer cannot make ADIT hold more than that per connection. On a
    reader from `pdu_reader` the whole PDU must arrive within its timeout.
    """
    raw = getattr(reader, "raw", None)
    if isinstance(raw, DeadlineSocketIO):
        raw.start_deadline()
    header = read_exactly(reader, 6)
    pdu_type, _, length = PDU_HEADER.unpack(header)
    limit = max_pdu_body(pdu_type)
    if length > limit:
        raise PduTooLarge(
            f"a PDU of type 0x{pdu_type:02X} announced {length} bytes, more than the {limit} "
            "ADIT accepts"
        )
    return pdu_type, header, read_exactly(reader, length)


def abort_text(body: bytes) -> str:
    source, reason = (body[2], body[3]) if len(body) >= 4 else (0, 0)
    who = {0: "the peer", 2: "the peer's upper layer"}.get(source, "the peer")
    return f"association aborted by {who} (source {source}, reason {reason})"
