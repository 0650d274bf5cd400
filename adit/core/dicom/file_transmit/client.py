"""The worker's side: subscribe to a topic, then read the files a C-MOVE brings.

`FileTransmitClient.subscribe()` returns a `Subscription` that reconnects and resumes by
sequence number when the connection drops, drops duplicate SOP Instance UIDs, and raises
`ReceiverStoreError` when the receiver reports an instance it could not spool.
`ArrivalTracker` tells a move which expected instances are still missing.
"""

from __future__ import annotations

import logging
import select
import socket
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from ..errors import RetriableDicomError
from .protocol import (
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_WINDOW,
    FRAME_TIMEOUT,
    PART10_PREFIX,
    PROTOCOL_VERSION,
    MessageType,
    ProtocolError,
    ReceiverStoreError,
    Topic,
    read_frame,
    read_frame_start,
    recv_part10,
    send_frame,
    set_nodelay,
    topic_signature,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReceivedFile:
    """One file delivered to a subscription: its Part-10 header (preamble and file meta) and
    its data set, read separately (see `recv_part10`)."""

    seq: int
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    calling_ae_title: str
    head: bytes
    body: bytes = b""

    @classmethod
    def from_part10(cls, data: bytes, **fields: Any) -> ReceivedFile:
        """A received file made of a whole Part-10 file's bytes (tests, tools)."""
        head = data[:PART10_PREFIX]
        if len(head) == PART10_PREFIX and head[128:138] == b"DICM\x02\x00\x00\x00UL":
            head = data[: PART10_PREFIX + int.from_bytes(head[140:144], "little")]
        defaults = dict.fromkeys(
            (
                "sop_instance_uid",
                "sop_class_uid",
                "series_instance_uid",
                "transfer_syntax_uid",
                "calling_ae_title",
            ),
            "",
        )
        return cls(
            seq=fields.pop("seq", 0), **{**defaults, **fields}, head=head, body=data[len(head) :]
        )

    @property
    def data(self) -> bytes:
        """The whole Part-10 file (a copy: prefer `dataset()` or `encoded_dataset()`)."""
        return self.head + self.body

    def dataset(self) -> Dataset:
        """The file parsed (pixel data stays encoded in its original transfer syntax)."""
        return dcmread(BytesIO(self.data))

    def encoded_dataset(self) -> bytes | None:
        """The data set's bytes after the file meta, as the PACS sent them; None if unsure.

        A C-STORE of an unchanged instance can send these as they are. Needs the group length
        element that the receiver always writes (explicit VR little endian, PS3.10 7.1).
        """
        head = self.head
        if len(head) < PART10_PREFIX or head[128:138] != b"DICM\x02\x00\x00\x00UL":
            return None
        if len(head) != PART10_PREFIX + int.from_bytes(head[140:144], "little"):
            return None
        if self.transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
            return None
        return self.body


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
            set_nodelay(sock)
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
                sock.settimeout(FRAME_TIMEOUT)
                head = body = b""
                message_type, header, payload_size = read_frame_start(sock)
                if message_type == MessageType.FILE:
                    head, body = recv_part10(sock, payload_size)
            except (OSError, ProtocolError) as err:
                self._drop_connection(str(err) or type(err).__name__)
                continue
            self._last_frame_at = time.monotonic()
            if message_type == MessageType.PING:
                continue
            if message_type == MessageType.STORE_FAILED:
                raise ReceiverStoreError(
                    f"ADIT's receiver could not store instance "
                    f"{header.get('sop_instance_uid')} of the C-MOVE from "
                    f"{self.topic.calling_ae_title}: {header.get('message')}"
                )
            if message_type != MessageType.FILE:
                self._drop_connection(f"unexpected {message_type.name} frame")
                continue
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
                head=head,
                body=body,
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
