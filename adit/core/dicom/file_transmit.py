"""File transmit: how the receiver hands C-MOVEd files to the worker that asked for them.

With C-MOVE the source PACS pushes every instance to one fixed AE, ADIT's receiver (a C-STORE
SCP, see :mod:`adit.core.dicom.receiver`). Many workers may wait for files at the same time, so
the receiver spools each file to disk and streams it over TCP to every worker that subscribed to
the file's *topic*.

Topic
    ``(calling AE title of the pushing PACS, StudyInstanceUID)``. It is sent as a JSON object,
    never parsed out of a file name, so AE titles with ``_`` or ``\\`` cannot break it.

Expectations (the receiver takes only what was asked for)
    A subscription names the SOP Instance UIDs it expects (the worker knows them from an
    IMAGE-level C-FIND done before the C-MOVE). While it lasts, and for `RECONNECT_GRACE`
    seconds after its connection dropped without BYE, the receiver accepts exactly those
    instances from that PACS; anything else is refused at the C-STORE. A subscription is sent
    only the files it expects.

Spool and replay (files are never lost because a subscriber was late)
    The receiver answers a C-STORE with success only after the file is written and renamed into
    the spool. It does not ``fsync``: the spool is a hand-over buffer, and a file that a machine
    crash loses is caught downstream (the C-MOVE's completed count and the check at the
    destination make the task retry). Three ``fsync``s per instance cost 1.5 ms on an SSD and
    tens of ms on disks, which C-MOVE, the retrieve clinical PACS support best, would pay for
    every instance. A torn file left by a crash is recognised by its size on reload.

    Every spooled file gets a sequence number (``seq``, increasing within one receiver run, the
    *epoch*) and stays in the spool for ``retention`` seconds (default 15 minutes). A new
    subscription gets only files spooled after it began, never files of earlier moves (which
    might be stale or forged). A resumed one gets what it missed: files after its last ``seq``
    within the same epoch, or, when the receiver restarted meanwhile, the files of its topic
    received since it first subscribed (the receiver's clock, sent in ``SUBSCRIBED``).

Fan-out
    Every subscription of a topic gets every file of the topic. Two workers fetching the same
    study concurrently each get complete data (the PACS pushes the study twice; a subscription
    may see an instance more than once and the client drops duplicates by SOP Instance UID).

Wire format
    Both directions use the same frame::

        +-------+------+-------------+--------------+-------------+---------+
        | magic | type | header size | payload size | header      | payload |
        | ADFT  | 1 B  | uint32 BE   | uint64 BE    | UTF-8 JSON  | bytes   |
        +-------+------+-------------+--------------+-------------+---------+

    The header is a JSON object (at most 64 KiB). Only ``FILE`` frames carry a payload: the
    complete DICOM Part-10 file exactly as received (transfer syntax untouched).

Conversation
    1. client → ``SUBSCRIBE`` ``{"version": 2, "topic": {"calling_ae_title": …,
       "study_instance_uid": …}, "expected": [SOP Instance UIDs], "resume": {"epoch": …,
       "after_seq": n, "since": t} | null, "window": n}`` (this frame's header may hold up to
       `MAX_SUBSCRIBE_HEADER_SIZE` bytes). ``resume`` is given on a reconnect (see above).
    2. server → ``SUBSCRIBED`` ``{"version": 2, "epoch": …, "heartbeat_interval": s,
       "since": t}`` or ``ERROR`` ``{"message": …}`` and close (bad topic, unknown version, …).
    3. server → ``FILE`` ``{"seq", "sop_instance_uid", "sop_class_uid",
       "series_instance_uid", "transfer_syntax_uid", "calling_ae_title", "received_at"}`` +
       payload, in ``seq`` order.
    4. client → ``ACK`` ``{"seq": n}`` once a file was read completely. The server keeps at
       most ``window`` files unacknowledged per subscription (back pressure), and logs
       deliveries, so the sending side knows which subscriber got which file.
    5. server → ``PING`` ``{}`` when nothing was sent for ``heartbeat_interval`` seconds, so a
       client notices a dead receiver (no frame for 3 intervals → reconnect).
    6. server → ``STORE_FAILED`` ``{"sop_instance_uid", "message"}`` when the receiver could
       not spool an expected instance (its disk, not the PACS): the client raises a retriable
       `ReceiverStoreError` naming ADIT's receiver.
    7. client → ``BYE`` ``{}`` to end the subscription (its expectations end at once).

Client side::

    with FileTransmitClient(host, port).subscribe(topic, expected_sop_uids) as subscription:
        send_c_move(...)  # only after subscribing
        for ds in subscription.iter_instances(inactivity_timeout=60):
            ...

Authentication
    When the server is given a shared ``secret``, a ``SUBSCRIBE`` must carry ``"auth"``:
    the hex HMAC-SHA256 of the topic's canonical JSON under that secret; otherwise it gets
    ``ERROR`` and the connection is closed. ADIT derives the secret from
    ``FILE_TRANSMIT_SECRET`` (else ``SECRET_KEY``), so only processes configured like ADIT can
    read received images. The channel itself is plain TCP (not encrypted): keep it on a private
    network.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import logging
import os
import select
import socket
import socketserver
import struct
import threading
import time
import uuid
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from .errors import RetriableDicomError

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 2
MAGIC = b"ADFT"
_PREFIX = struct.Struct(">4sBIQ")
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
_FRAME_TIMEOUT = 60.0


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
    limit = _max_header_size(message_type)
    if len(header_bytes) > limit:
        raise ProtocolError(f"frame header of {len(header_bytes)} bytes exceeds {limit}")
    prefix = _PREFIX.pack(MAGIC, int(message_type), len(header_bytes), len(payload))
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
    sock.sendall(_PREFIX.pack(MAGIC, int(message_type), len(header_bytes), payload_size))
    sock.sendall(header_bytes)
    sent = sock.sendfile(payload_file, 0, payload_size)
    if sent != payload_size:
        raise ConnectionError(f"sent {sent} of {payload_size} payload bytes")


def _recv_exactly(sock: socket.socket, size: int, *, at_frame_start: bool = False) -> bytes:
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


def _max_header_size(message_type: MessageType) -> int:
    return MAX_SUBSCRIBE_HEADER_SIZE if message_type == MessageType.SUBSCRIBE else MAX_HEADER_SIZE


def decode_prefix(prefix: bytes) -> tuple[MessageType, int, int]:
    """Validates a frame prefix and returns (type, header size, payload size)."""
    magic, type_code, header_size, payload_size = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise ProtocolError(f"bad frame magic {magic!r} (expected {MAGIC!r})")
    try:
        message_type = MessageType(type_code)
    except ValueError:
        raise ProtocolError(f"unknown message type {type_code}") from None
    limit = _max_header_size(message_type)
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


def read_frame(sock: socket.socket) -> Frame:
    """Reads one whole frame (blocking, subject to the socket's timeout)."""
    prefix = _recv_exactly(sock, _PREFIX.size, at_frame_start=True)
    message_type, header_size, payload_size = decode_prefix(prefix)
    header = decode_header(_recv_exactly(sock, header_size))
    payload = _recv_exactly(sock, payload_size) if payload_size else b""
    return Frame(message_type, header, payload)


def _set_nodelay(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# --------------------------------------------------------------------------------------------
# Topic and spool
# --------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class SpoolEntry:
    seq: int
    topic: Topic
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    received_at: float
    path: Path = field(compare=False)

    def file_header(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "sop_instance_uid": self.sop_instance_uid,
            "sop_class_uid": self.sop_class_uid,
            "series_instance_uid": self.series_instance_uid,
            "transfer_syntax_uid": self.transfer_syntax_uid,
            "calling_ae_title": self.topic.calling_ae_title,
            "received_at": self.received_at,
        }


class Spool:
    """Received files on disk, indexed by topic, kept for ``retention`` seconds.

    Layout: ``<root>/incoming/`` for files being written, ``<root>/files/<id>.dcm`` plus
    ``<id>.json`` (topic and metadata) for complete ones. A ``.json`` is renamed into place
    last, so it marks a complete entry; a restarted receiver reloads complete entries (with new
    sequence numbers in a new epoch) and removes leftovers.
    """

    def __init__(self, root: Path, retention: float = DEFAULT_RETENTION) -> None:
        self.root = Path(root)
        self.retention = retention
        self.incoming_dir = self.root / "incoming"
        self.files_dir = self.root / "files"
        self.epoch = uuid.uuid4().hex
        self.condition = threading.Condition()
        self._entries: dict[Topic, list[SpoolEntry]] = {}
        self._next_seq = 1
        for folder in (self.root, self.incoming_dir, self.files_dir):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o700)  # received images are nobody else's business
        self._reload()

    def _reload(self) -> None:
        for leftover in self.incoming_dir.iterdir():
            leftover.unlink(missing_ok=True)
        loaded: list[tuple[float, dict[str, Any], Path]] = []
        for meta_path in self.files_dir.glob("*.json"):
            data_path = meta_path.with_suffix(".dcm")
            try:
                meta = json.loads(meta_path.read_text("utf-8"))
                received_at = float(meta["received_at"])
                Topic.from_json(meta["topic"])
            except (OSError, ValueError, KeyError, TypeError) as err:
                logger.warning("Removing unreadable spool entry %s: %s", meta_path.name, err)
                meta_path.unlink(missing_ok=True)
                data_path.unlink(missing_ok=True)
                continue
            try:
                size = data_path.stat().st_size
            except OSError:
                size = None
            if size is None or ("size" in meta and size != meta["size"]):
                if size is not None:
                    logger.warning("Removing torn spool entry %s", meta_path.name)
                meta_path.unlink(missing_ok=True)
                data_path.unlink(missing_ok=True)
                continue
            loaded.append((received_at, meta, data_path))
        known = {path for _, _, path in loaded}
        for data_path in self.files_dir.glob("*.dcm"):
            if data_path not in known:
                data_path.unlink(missing_ok=True)
        for _, meta, data_path in sorted(loaded, key=lambda item: item[0]):
            self._index(meta, data_path)
        if loaded:
            logger.info("Spool reloaded %d files from %s", len(loaded), self.files_dir)
        self.expire()

    def _index(self, meta: dict[str, Any], data_path: Path) -> SpoolEntry:
        with self.condition:
            entry = SpoolEntry(
                seq=self._next_seq,
                topic=Topic.from_json(meta["topic"]),
                sop_instance_uid=meta["sop_instance_uid"],
                sop_class_uid=meta.get("sop_class_uid", ""),
                series_instance_uid=meta.get("series_instance_uid", ""),
                transfer_syntax_uid=meta.get("transfer_syntax_uid", ""),
                received_at=float(meta["received_at"]),
                path=data_path,
            )
            self._next_seq += 1
            self._entries.setdefault(entry.topic, []).append(entry)
            self.condition.notify_all()
            return entry

    def add(
        self,
        topic: Topic,
        write_file: Callable[[BinaryIO], object],
        *,
        sop_instance_uid: str,
        sop_class_uid: str = "",
        series_instance_uid: str = "",
        transfer_syntax_uid: str = "",
    ) -> SpoolEntry:
        """Writes a file (write, rename; see "Spool and replay") and publishes it to the topic.

        Raises:
            OSError: when the file could not be stored; nothing is published then.
        """
        name = uuid.uuid4().hex
        data_tmp = self.incoming_dir / f"{name}.dcm"
        meta_tmp = self.incoming_dir / f"{name}.json"
        data_path = self.files_dir / f"{name}.dcm"
        meta_path = self.files_dir / f"{name}.json"
        meta = {
            "topic": topic.to_json(),
            "sop_instance_uid": sop_instance_uid,
            "sop_class_uid": sop_class_uid,
            "series_instance_uid": series_instance_uid,
            "transfer_syntax_uid": transfer_syntax_uid,
            "received_at": time.time(),
        }
        try:
            with open(data_tmp, "xb", opener=_private_file) as data_file:
                write_file(data_file)
                meta["size"] = data_file.tell()
            with open(meta_tmp, "x", encoding="utf-8", opener=_private_file) as meta_file:
                json.dump(meta, meta_file)
            os.replace(data_tmp, data_path)
            os.replace(meta_tmp, meta_path)
        except BaseException:
            for path in (data_tmp, meta_tmp, data_path, meta_path):
                path.unlink(missing_ok=True)
            raise
        return self._index(meta, data_path)

    def next_entry(
        self, topic: Topic, after_seq: int, wanted: Collection[str] | None = None
    ) -> tuple[SpoolEntry | None, int]:
        """The oldest entry of ``topic`` above ``after_seq`` whose SOP Instance UID is
        ``wanted`` (any when None), and the sequence number to continue after next time
        (entries skipped as unwanted are not looked at again)."""
        with self.condition:
            entries = self._entries.get(topic)
            if not entries:
                return None, after_seq
            index = bisect_right(entries, after_seq, key=lambda entry: entry.seq)
            for entry in entries[index:]:
                if wanted is None or entry.sop_instance_uid in wanted:
                    return entry, entry.seq
                after_seq = entry.seq
            return None, after_seq

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest entry (a new subscription starts after it)."""
        with self.condition:
            return self._next_seq - 1

    def seq_before(self, topic: Topic, received_since: float) -> int:
        """The sequence number after which the entries of ``topic`` received at or after
        ``received_since`` (receiver clock) begin."""
        with self.condition:
            for entry in self._entries.get(topic, ()):
                if entry.received_at >= received_since:
                    return entry.seq - 1
            return self._next_seq - 1

    def entries(self, topic: Topic) -> list[SpoolEntry]:
        with self.condition:
            return list(self._entries.get(topic, ()))

    def __len__(self) -> int:
        with self.condition:
            return sum(len(entries) for entries in self._entries.values())

    def expire(self, now: float | None = None) -> int:
        """Removes entries older than the retention time; returns how many."""
        cutoff = (time.time() if now is None else now) - self.retention
        expired: list[SpoolEntry] = []
        with self.condition:
            for topic in list(self._entries):
                entries = self._entries[topic]
                keep = [entry for entry in entries if entry.received_at >= cutoff]
                expired.extend(entry for entry in entries if entry.received_at < cutoff)
                if keep:
                    self._entries[topic] = keep
                else:
                    del self._entries[topic]
        for entry in expired:
            entry.path.with_suffix(".json").unlink(missing_ok=True)
            entry.path.unlink(missing_ok=True)
        if expired:
            logger.debug("Spool expired %d files", len(expired))
        return len(expired)


def _private_file(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Expectation:
    """The instances one subscription waits for (a C-MOVE in flight), while it lasts."""

    topic: Topic
    sop_instance_uids: frozenset[str]
    ends_at: float | None = None  # set when the subscription ended without saying BYE
    store_failures: list[tuple[str, str]] = field(default_factory=list)


class Expectations:
    """What the receiver may accept: only instances that a live subscription expects.

    A subscription registers the SOP Instance UIDs of its move before the worker sends the
    C-MOVE, so a push of anything else (before a move, of another study, of an instance the
    source did not list) is refused. A subscription whose connection drops keeps its
    expectation for `RECONNECT_GRACE` seconds, so its move goes on while it reconnects.
    """

    def __init__(self, condition: threading.Condition) -> None:
        self._condition = condition
        self._by_topic: dict[Topic, list[Expectation]] = {}

    def add(self, topic: Topic, sop_instance_uids: frozenset[str]) -> Expectation:
        expectation = Expectation(topic, sop_instance_uids)
        with self._condition:
            self._by_topic.setdefault(topic, []).append(expectation)
        return expectation

    def end(self, expectation: Expectation, grace: float = 0.0) -> None:
        with self._condition:
            if grace > 0:
                expectation.ends_at = time.monotonic() + grace
                return
            expectations = self._by_topic.get(expectation.topic, [])
            if expectation in expectations:
                expectations.remove(expectation)
            if not expectations:
                self._by_topic.pop(expectation.topic, None)

    def _live(self, topic: Topic) -> list[Expectation]:
        now = time.monotonic()
        expectations = self._by_topic.get(topic, [])
        live = [e for e in expectations if e.ends_at is None or e.ends_at > now]
        if len(live) != len(expectations):
            if live:
                self._by_topic[topic] = live
            else:
                self._by_topic.pop(topic, None)
        return live

    def expects(self, topic: Topic, sop_instance_uid: str) -> bool:
        with self._condition:
            return any(sop_instance_uid in e.sop_instance_uids for e in self._live(topic))

    def report_store_failure(self, topic: Topic, sop_instance_uid: str, message: str) -> None:
        """Tells every subscription expecting the instance that it could not be stored."""
        with self._condition:
            for expectation in self._live(topic):
                if sop_instance_uid in expectation.sop_instance_uids:
                    expectation.store_failures.append((sop_instance_uid, message))
            self._condition.notify_all()


def _expected_uids(value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not value:
        raise ValueError("expected must be a non-empty list of SOP Instance UIDs")
    uids = frozenset(value)
    if not all(isinstance(uid, str) and 0 < len(uid) <= 64 for uid in uids):
        raise ValueError("expected must hold SOP Instance UIDs (strings of 1-64 characters)")
    return uids


class _SubscriptionHandler(socketserver.BaseRequestHandler):
    server: _TransmitTCPServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        _set_nodelay(sock)
        transmit = self.server.transmit
        transmit._register_connection(sock)
        try:
            self._serve(sock, transmit)
        except (ConnectionError, OSError, ProtocolError) as err:
            logger.debug("File transmit connection from %s ended: %s", self.client_address, err)
        finally:
            transmit._unregister_connection(sock)

    def _serve(self, sock: socket.socket, transmit: FileTransmitServer) -> None:
        sock.settimeout(_FRAME_TIMEOUT)
        frame = read_frame(sock)
        try:
            if frame.type != MessageType.SUBSCRIBE:
                raise ValueError(f"expected SUBSCRIBE, got {frame.type.name}")
            version = frame.header.get("version")
            if version != PROTOCOL_VERSION:
                raise ValueError(f"unsupported protocol version {version!r}")
            topic = Topic.from_json(frame.header.get("topic"))
            if transmit.secret is not None and not hmac.compare_digest(
                str(frame.header.get("auth") or ""), topic_signature(transmit.secret, topic)
            ):
                raise ValueError("not authorized (wrong or missing shared secret)")
            window = int(frame.header.get("window") or DEFAULT_WINDOW)
            if not 1 <= window <= 1024:
                raise ValueError(f"window {window} is not within 1-1024")
            expected = _expected_uids(frame.header.get("expected"))
            # A new subscription gets only what arrives from now on (never files of earlier
            # moves); a resumed one what it missed: by sequence number within one receiver run,
            # by the time it first subscribed after the receiver restarted.
            spool = transmit.spool
            subscribed_at = time.time()
            after_seq = spool.last_seq
            resume = frame.header.get("resume")
            if resume:
                subscribed_at = float(resume.get("since", subscribed_at))
                if resume.get("epoch") == spool.epoch:
                    after_seq = int(resume.get("after_seq", 0))
                else:
                    after_seq = spool.seq_before(topic, subscribed_at)
        except (ValueError, TypeError, AttributeError) as err:
            send_frame(sock, MessageType.ERROR, {"message": f"invalid subscription: {err}"})
            return

        expectation = transmit.expectations.add(topic, expected)
        said_bye = {"value": False}
        try:
            self._deliver(
                sock, transmit, topic, expectation, window, after_seq, subscribed_at, said_bye
            )
        finally:
            grace = 0.0 if said_bye["value"] or transmit.stopping else RECONNECT_GRACE
            transmit.expectations.end(expectation, grace)

    def _deliver(
        self,
        sock: socket.socket,
        transmit: FileTransmitServer,
        topic: Topic,
        expectation: Expectation,
        window: int,
        after_seq: int,
        subscribed_at: float,
        said_bye: dict[str, bool],
    ) -> None:
        spool = transmit.spool
        send_frame(
            sock,
            MessageType.SUBSCRIBED,
            {
                "version": PROTOCOL_VERSION,
                "epoch": spool.epoch,
                "heartbeat_interval": transmit.heartbeat_interval,
                "since": subscribed_at,
            },
        )
        logger.info(
            "Subscription to %s from %s (%d instances expected)",
            topic.calling_ae_title,
            self.client_address,
            len(expectation.sop_instance_uids),
        )
        unacked: set[int] = set()
        state = {"closed": False}

        def read_acks() -> None:
            try:
                sock.settimeout(None)
                while True:
                    ack = read_frame(sock)
                    if ack.type == MessageType.ACK:
                        seq = int(ack.header.get("seq", -1))
                        with spool.condition:
                            if seq in unacked:
                                unacked.discard(seq)
                                transmit.acknowledged += 1
                            spool.condition.notify_all()
                    elif ack.type == MessageType.BYE:
                        said_bye["value"] = True
                        break
                    else:
                        raise ProtocolError(f"unexpected {ack.type.name} from subscriber")
            except (ConnectionError, OSError, ProtocolError, ValueError) as err:
                logger.debug("Subscriber %s: %s", self.client_address, err)
            finally:
                with spool.condition:
                    state["closed"] = True
                    spool.condition.notify_all()

        reader = threading.Thread(target=read_acks, name="file-transmit-acks", daemon=True)
        reader.start()
        delivered = 0
        try:
            while True:
                with spool.condition:
                    entry = None
                    failures: list[tuple[str, str]] = []
                    deadline = time.monotonic() + transmit.heartbeat_interval
                    while not state["closed"] and not transmit.stopping:
                        if expectation.store_failures:
                            failures = expectation.store_failures[:]
                            expectation.store_failures.clear()
                            break
                        if len(unacked) < window:
                            entry, after_seq = spool.next_entry(
                                topic, after_seq, expectation.sop_instance_uids
                            )
                            if entry is not None:
                                break
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        spool.condition.wait(remaining)
                    if state["closed"] or transmit.stopping:
                        return
                    if entry is not None:
                        unacked.add(entry.seq)
                for sop_instance_uid, message in failures:
                    send_frame(
                        sock,
                        MessageType.STORE_FAILED,
                        {"sop_instance_uid": sop_instance_uid, "message": message},
                    )
                if failures:
                    continue
                if entry is None:
                    send_frame(sock, MessageType.PING, {})
                    continue
                try:
                    payload = open(entry.path, "rb")  # noqa: SIM115
                except FileNotFoundError:
                    # Expired between lookup and open: nothing to deliver any more.
                    with spool.condition:
                        unacked.discard(entry.seq)
                    continue
                with payload:
                    size = os.fstat(payload.fileno()).st_size
                    send_frame(sock, MessageType.FILE, entry.file_header(), payload, size)
                delivered += 1
        finally:
            with spool.condition:
                state["closed"] = True
            logger.info(
                "Subscription from %s ended after %d files (%d unacknowledged)",
                self.client_address,
                delivered,
                len(unacked),
            )


class _TransmitTCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    transmit: FileTransmitServer


def topic_signature(secret: bytes, topic: Topic) -> str:
    """Proof that a subscriber knows the shared secret (HMAC-SHA256 of the canonical topic)."""
    canonical = json.dumps(topic.to_json(), sort_keys=True, separators=(",", ":"))
    return hmac.new(secret, canonical.encode(), hashlib.sha256).hexdigest()


class FileTransmitServer:
    """Streams spooled files to subscribers (thread per connection)."""

    def __init__(
        self,
        spool: Spool,
        host: str = "0.0.0.0",
        port: int = 0,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        secret: bytes | None = None,
    ) -> None:
        self.spool = spool
        self.heartbeat_interval = heartbeat_interval
        self.secret = secret
        self.stopping = False
        self.expectations = Expectations(spool.condition)
        self.acknowledged = 0
        """Files subscribers confirmed to have received (all subscriptions, this run)."""
        self._tcp = _TransmitTCPServer((host, port), _SubscriptionHandler, bind_and_activate=True)
        self._tcp.transmit = self
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._tcp.server_address[1]

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._tcp.serve_forever, name="file-transmit-server", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.stopping = True
        with self.spool.condition:
            self.spool.condition.notify_all()
        if self._thread is not None:
            self._tcp.shutdown()
            self._thread.join()
        self._tcp.server_close()
        with self._lock:
            connections = list(self._connections)
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _register_connection(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.add(sock)

    def _unregister_connection(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.discard(sock)


# --------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedFile:
    """One file delivered to a subscription."""

    seq: int
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    calling_ae_title: str
    data: bytes

    def dataset(self) -> Dataset:
        """The file parsed (pixel data stays encoded in its original transfer syntax)."""
        return dcmread(BytesIO(self.data))

    def encoded_dataset(self) -> bytes | None:
        """The data set's bytes after the file meta, as the PACS sent them; None if unsure.

        A C-STORE of an unchanged instance can send these as they are. Needs the group length
        element that the receiver always writes (explicit VR little endian, PS3.10 7.1).
        """
        data = self.data
        if len(data) < 144 or data[128:132] != b"DICM" or data[132:138] != b"\x02\x00\x00\x00UL":
            return None
        if self.transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
            return None
        group_length = int.from_bytes(data[140:144], "little")
        return data[144 + group_length :]


class FileTransmitClient:
    """Connects workers to the receiver's file transmit server."""

    def __init__(
        self, host: str, port: int, connect_timeout: float = 10.0, secret: bytes | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.secret = secret

    def subscribe(
        self,
        topic: Topic,
        expected_sop_instance_uids: Collection[str],
        window: int = DEFAULT_WINDOW,
    ) -> Subscription:
        """Subscribes to the expected instances of ``topic`` now (before returning), so a
        C-MOVE may be sent next. The receiver accepts only instances some subscription expects.

        Raises:
            RetriableDicomError: when the receiver cannot be reached or refuses the topic.
        """
        subscription = Subscription(self, topic, expected_sop_instance_uids, window)
        try:
            subscription.connect()
        except (OSError, ProtocolError) as err:
            raise RetriableDicomError(
                f"Cannot subscribe at the receiver's file transmit server "
                f"{self.host}:{self.port}: {err}"
            ) from err
        return subscription


class Subscription:
    """A live subscription; reconnects (and resumes) by itself when the connection drops."""

    def __init__(
        self,
        client: FileTransmitClient,
        topic: Topic,
        expected_sop_instance_uids: Collection[str],
        window: int,
    ) -> None:
        self.client = client
        self.topic = topic
        self.expected = sorted(set(expected_sop_instance_uids))
        if not self.expected:
            raise ValueError("a subscription must expect at least one SOP Instance UID")
        self.window = window
        self.epoch: str | None = None
        self.since: float | None = None
        self.last_seq = 0
        self.heartbeat_interval = DEFAULT_HEARTBEAT_INTERVAL
        self.last_error: str | None = None
        self.reconnects = 0
        self._sock: socket.socket | None = None
        self._last_frame_at = time.monotonic()

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        sock = socket.create_connection(
            (self.client.host, self.client.port), timeout=self.client.connect_timeout
        )
        try:
            _set_nodelay(sock)
            resume = (
                {"epoch": self.epoch, "after_seq": self.last_seq, "since": self.since}
                if self.epoch
                else None
            )
            send_frame(
                sock,
                MessageType.SUBSCRIBE,
                {
                    "version": PROTOCOL_VERSION,
                    "topic": self.topic.to_json(),
                    "expected": self.expected,
                    "resume": resume,
                    "window": self.window,
                    "auth": topic_signature(self.client.secret, self.topic)
                    if self.client.secret is not None
                    else None,
                },
            )
            reply = read_frame(sock)
            if reply.type == MessageType.ERROR:
                raise ProtocolError(f"receiver refused: {reply.header.get('message')}")
            if reply.type != MessageType.SUBSCRIBED:
                raise ProtocolError(f"expected SUBSCRIBED, got {reply.type.name}")
        except BaseException:
            sock.close()
            raise
        epoch = str(reply.header.get("epoch"))
        if self.epoch is not None and epoch != self.epoch:
            # The receiver restarted: it replays what arrived since this subscription began.
            self.last_seq = 0
        self.epoch = epoch
        if self.since is None:
            self.since = float(reply.header.get("since") or time.time())
        self.heartbeat_interval = float(
            reply.header.get("heartbeat_interval") or DEFAULT_HEARTBEAT_INTERVAL
        )
        self._sock = sock
        self._last_frame_at = time.monotonic()

    def _drop_connection(self, reason: str) -> None:
        self.last_error = reason
        if self._sock is not None:
            logger.info("File transmit connection lost (%s); reconnecting", reason)
            try:
                self._sock.close()
            finally:
                self._sock = None

    def receive(self, timeout: float) -> ReceivedFile | None:
        """Waits up to ``timeout`` seconds for the next file; ``None`` when none came.

        A lost connection is re-established (and the subscription resumed) within the same
        time budget; ``last_error`` tells why the connection was lost.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            remaining = deadline - time.monotonic()
            if self._sock is None:
                if remaining <= 0:
                    return None
                try:
                    self.connect()
                    self.reconnects += 1
                except (OSError, ProtocolError) as err:
                    self.last_error = f"cannot reconnect to receiver: {err}"
                    time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
                    continue
            sock = self._sock
            assert sock is not None
            silent_limit = self._last_frame_at + 3 * self.heartbeat_interval
            wait = max(0.0, min(remaining, silent_limit - time.monotonic()))
            readable, _, _ = select.select([sock], [], [], wait)
            if not readable:
                if time.monotonic() >= silent_limit:
                    self._drop_connection("no heartbeat from receiver")
                    continue
                return None
            try:
                sock.settimeout(_FRAME_TIMEOUT)
                frame = read_frame(sock)
            except (OSError, ProtocolError) as err:
                self._drop_connection(str(err) or type(err).__name__)
                continue
            self._last_frame_at = time.monotonic()
            if frame.type == MessageType.PING:
                continue
            if frame.type == MessageType.STORE_FAILED:
                raise ReceiverStoreError(
                    f"ADIT's receiver could not store instance "
                    f"{frame.header.get('sop_instance_uid')} of the C-MOVE from "
                    f"{self.topic.calling_ae_title}: {frame.header.get('message')}"
                )
            if frame.type != MessageType.FILE:
                self._drop_connection(f"unexpected {frame.type.name} frame")
                continue
            header = frame.header
            seq = int(header["seq"])
            try:
                send_frame(sock, MessageType.ACK, {"seq": seq})
            except OSError as err:
                self._drop_connection(str(err))
            self.last_seq = max(self.last_seq, seq)
            return ReceivedFile(
                seq=seq,
                sop_instance_uid=str(header.get("sop_instance_uid", "")),
                sop_class_uid=str(header.get("sop_class_uid", "")),
                series_instance_uid=str(header.get("series_instance_uid", "")),
                transfer_syntax_uid=str(header.get("transfer_syntax_uid", "")),
                calling_ae_title=str(header.get("calling_ae_title", "")),
                data=frame.payload,
            )

    def iter_instances(
        self,
        expected_sop_uids: Collection[str] | None = None,
        inactivity_timeout: float = 60.0,
        total_timeout: float = 3600.0,
    ) -> Iterator[Dataset]:
        """Yields each expected instance once, as it arrives, until all have arrived.

        Instances of the topic that were not asked for (another series, duplicates) are
        skipped. The inactivity timeout counts only time spent waiting here, not the time the
        caller spends with a yielded instance.

        Raises:
            RetriableDicomError: when the inactivity or total timeout passes with instances
                still missing (the message names how many).
        """
        tracker = ArrivalTracker(self.expected if expected_sop_uids is None else expected_sop_uids)
        total_deadline = time.monotonic() + total_timeout
        while not tracker.complete:
            now = time.monotonic()
            wait_until = min(total_deadline, now + inactivity_timeout)
            received = None
            while received is None or not tracker.wanted(received.sop_instance_uid):
                remaining = wait_until - time.monotonic()
                if remaining <= 0:
                    reason = (
                        "total timeout"
                        if time.monotonic() >= total_deadline
                        else f"no instance for {inactivity_timeout:g} s"
                    )
                    raise tracker.incomplete_error(reason, self.last_error)
                received = self.receive(remaining)
            tracker.arrived(received.sop_instance_uid)
            yield received.dataset()

    def close(self) -> None:
        if self._sock is not None:
            try:
                send_frame(self._sock, MessageType.BYE, {})
            except OSError:
                pass
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ArrivalTracker:
    """Which of the expected SOP Instance UIDs have arrived."""

    def __init__(self, expected_sop_uids: Collection[str]) -> None:
        self.expected = frozenset(expected_sop_uids)
        if not self.expected:
            raise ValueError("expected_sop_uids must name at least one SOP Instance UID")
        self.received: set[str] = set()

    def wanted(self, sop_instance_uid: str) -> bool:
        return sop_instance_uid in self.expected and sop_instance_uid not in self.received

    def arrived(self, sop_instance_uid: str) -> None:
        self.received.add(sop_instance_uid)

    @property
    def missing(self) -> int:
        return len(self.expected) - len(self.received)

    @property
    def complete(self) -> bool:
        return self.missing == 0

    def incomplete_error(self, reason: str, detail: str | None = None) -> RetriableDicomError:
        message = (
            f"{self.missing} of {len(self.expected)} instances missing after C-MOVE ({reason})"
        )
        if detail:
            message += f"; {detail}"
        return RetriableDicomError(message)
