"""The file transmit wire protocol: frames, message types, topics and their signatures.

See the package docstring (`adit.core.dicom.file_transmit`) for the conversation. Every read
is bounded: a frame's prefix announces its header and payload sizes, which are checked against
`MAX_HEADER_SIZE` (`MAX_SUBSCRIBE_HEADER_SIZE` for a SUBSCRIBE) and `MAX_PAYLOAD_SIZE` before
anything is allocated.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import io
import json
import socket
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

from ..errors import RetriableDicomError

PROTOCOL_VERSION = 2
MAGIC = b"ADFT"
PREFIX = struct.Struct(">4sBIQ")
MAX_HEADER_SIZE = 64 * 1024
# A SUBSCRIBE names every expected SOP Instance UID: room for about 100,000 of them.
MAX_SUBSCRIBE_HEADER_SIZE = 8 * 1024 * 1024
# How long the expectations of a subscription whose connection dropped (without BYE) stay, so
# the instances of its move are still accepted while it reconnects.
RECONNECT_GRACE = 30.0
MAX_PAYLOAD_SIZE = 16 * 1024**3
DEFAULT_WINDOW = 16
DEFAULT_HEARTBEAT_INTERVAL = 5.0
DEFAULT_RETENTION = 15 * 60.0
# How long a started frame may take to arrive completely once its first byte is there.
FRAME_TIMEOUT = 60.0


class MessageType(enum.IntEnum):
    SUBSCRIBE = 1
    SUBSCRIBED = 2
    FILE = 3
    ACK = 4
    PING = 5
    BYE = 6
    ERROR = 7
    STORE_FAILED = 8


class ProtocolError(Exception):
    """The peer sent something that is not a valid file transmit frame or message."""


class ConnectionClosed(ConnectionError):
    """The peer closed the connection (cleanly, between frames)."""


class ReceiverStoreError(RetriableDicomError):
    """ADIT's receiver could not store an instance of the move (its spool, not the PACS)."""


@dataclass(frozen=True)
class Frame:
    type: MessageType
    header: dict[str, Any]
    payload: bytes = b""


def encode_frame(message_type: MessageType, header: dict[str, Any], payload: bytes = b"") -> bytes:
    """Encodes one frame (prefix, JSON header, payload) as bytes."""
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    limit = max_header_size(message_type)
    if len(header_bytes) > limit:
        raise ProtocolError(f"frame header of {len(header_bytes)} bytes exceeds {limit}")
    prefix = PREFIX.pack(MAGIC, int(message_type), len(header_bytes), len(payload))
    return prefix + header_bytes + payload


def send_frame(
    sock: socket.socket,
    message_type: MessageType,
    header: dict[str, Any],
    payload_file: BinaryIO | None = None,
    payload_size: int = 0,
) -> None:
    """Sends a frame; a file payload is streamed with ``sendfile`` instead of being loaded."""
    if payload_file is None:
        sock.sendall(encode_frame(message_type, header))
        return
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    if len(header_bytes) > MAX_HEADER_SIZE:
        raise ProtocolError(f"frame header of {len(header_bytes)} bytes exceeds {MAX_HEADER_SIZE}")
    sock.sendall(PREFIX.pack(MAGIC, int(message_type), len(header_bytes), payload_size))
    sock.sendall(header_bytes)
    sent = sock.sendfile(payload_file, 0, payload_size)
    if sent != payload_size:
        raise ConnectionError(f"sent {sent} of {payload_size} payload bytes")


def recv_exactly(sock: socket.socket, size: int, *, at_frame_start: bool = False) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        count = sock.recv_into(view[received:], min(size - received, 1024 * 1024))
        if count == 0:
            if at_frame_start and received == 0:
                raise ConnectionClosed("connection closed by peer")
            raise ConnectionError(f"connection closed in the middle of a frame ({received}/{size})")
        received += count
    return bytes(buffer)


def recv_bytes(sock: socket.socket, size: int) -> bytes:
    """`size` bytes read from the socket straight into one `bytes` object.

    `recv_exactly` fills a buffer and copies it into `bytes`; for a received image that second
    copy of half a megabyte (and the fresh pages it touches) was a sixth of what a worker spent
    per relayed instance. A `BufferedReader` of buffer size 1 reads a large request directly
    into the `bytes` it returns and keeps nothing buffered, so the socket stays in step.
    """
    data = io.BufferedReader(socket.SocketIO(sock, "rb"), buffer_size=1).read(size)
    if data is None or len(data) < size:
        received = len(data or b"")
        raise ConnectionError(f"connection closed in the middle of a frame ({received}/{size})")
    return data


PART10_PREFIX = 144  # preamble, "DICM" and the file meta group length element (PS3.10 7.1)


def recv_part10(sock: socket.socket, size: int) -> tuple[bytes, bytes]:
    """A FILE payload of `size` bytes as (preamble and file meta, data set), read separately so
    that the data set needs no copy to be relayed as it came. A payload that does not start
    like a Part-10 file comes back as (its first bytes, the rest)."""
    head = recv_exactly(sock, min(size, PART10_PREFIX))
    if len(head) == PART10_PREFIX and head[128:138] == b"DICM\x02\x00\x00\x00UL":
        meta_length = min(int.from_bytes(head[140:144], "little"), size - PART10_PREFIX)
        head += recv_exactly(sock, meta_length)
    return head, recv_bytes(sock, size - len(head))


def max_header_size(message_type: MessageType) -> int:
    return MAX_SUBSCRIBE_HEADER_SIZE if message_type == MessageType.SUBSCRIBE else MAX_HEADER_SIZE


def decode_prefix(prefix: bytes) -> tuple[MessageType, int, int]:
    """Validates a frame prefix and returns (type, header size, payload size)."""
    magic, type_code, header_size, payload_size = PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise ProtocolError(f"bad frame magic {magic!r} (expected {MAGIC!r})")
    try:
        message_type = MessageType(type_code)
    except ValueError:
        raise ProtocolError(f"unknown message type {type_code}") from None
    limit = max_header_size(message_type)
    if header_size > limit:
        raise ProtocolError(f"frame header size {header_size} exceeds {limit}")
    if payload_size > MAX_PAYLOAD_SIZE:
        raise ProtocolError(f"frame payload size {payload_size} exceeds {MAX_PAYLOAD_SIZE}")
    if payload_size and message_type != MessageType.FILE:
        raise ProtocolError(f"{message_type.name} frame must not carry a payload")
    return message_type, header_size, payload_size


def decode_header(raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProtocolError(f"frame header is not UTF-8 JSON: {err}") from None
    if not isinstance(header, dict):
        raise ProtocolError("frame header must be a JSON object")
    return header


def read_frame_start(sock: socket.socket) -> tuple[MessageType, dict[str, Any], int]:
    """Reads a frame's prefix and header: (type, header, payload size still to be read)."""
    prefix = recv_exactly(sock, PREFIX.size, at_frame_start=True)
    message_type, header_size, payload_size = decode_prefix(prefix)
    return message_type, decode_header(recv_exactly(sock, header_size)), payload_size


def read_frame(sock: socket.socket) -> Frame:
    """Reads one whole frame (blocking, subject to the socket's timeout)."""
    message_type, header, payload_size = read_frame_start(sock)
    payload = recv_bytes(sock, payload_size) if payload_size else b""
    return Frame(message_type, header, payload)


def set_nodelay(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass(frozen=True)
class Topic:
    """What a subscriber wants: the files a given PACS pushes for a given study."""

    calling_ae_title: str
    study_instance_uid: str

    def __post_init__(self) -> None:
        ae_title = self.calling_ae_title.strip()
        object.__setattr__(self, "calling_ae_title", ae_title)
        object.__setattr__(self, "study_instance_uid", self.study_instance_uid.strip())
        if not ae_title or len(ae_title) > 16:
            raise ValueError(f"topic: calling AE title {self.calling_ae_title!r} is not 1-16 chars")
        uid = self.study_instance_uid
        # Deliberately lenient (some PACS emit non-conformant UIDs); both sides use the same one.
        if not uid or len(uid) > 64 or not uid.isprintable() or "\\" in uid:
            raise ValueError(f"topic: {uid!r} is not a valid StudyInstanceUID")

    def to_json(self) -> dict[str, str]:
        return {"calling_ae_title": self.calling_ae_title, "study_instance_uid": self.uid}

    @property
    def uid(self) -> str:
        return self.study_instance_uid

    @classmethod
    def from_json(cls, value: Any) -> Topic:
        if not isinstance(value, dict):
            raise ValueError("topic must be an object with calling_ae_title and study_instance_uid")
        ae_title = value.get("calling_ae_title")
        study_uid = value.get("study_instance_uid")
        if not isinstance(ae_title, str) or not isinstance(study_uid, str):
            raise ValueError("topic needs string fields calling_ae_title and study_instance_uid")
        return cls(ae_title, study_uid)

    def __str__(self) -> str:
        return f"{self.calling_ae_title}/{self.study_instance_uid}"


def topic_signature(secret: bytes, topic: Topic) -> str:
    """Proof that a subscriber knows the shared secret (HMAC-SHA256 of the canonical topic)."""
    canonical = json.dumps(topic.to_json(), sort_keys=True, separators=(",", ":"))
    return hmac.new(secret, canonical.encode(), hashlib.sha256).hexdigest()
