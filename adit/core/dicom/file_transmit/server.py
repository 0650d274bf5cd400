"""The receiver's side: subscriptions, their expectations, and streaming spooled files.

`FileTransmitServer` accepts SUBSCRIBE frames (authenticated with `topic_signature`), records
what each subscription expects (`Expectations`, which the receiver's C-STORE SCP consults
before it accepts an instance) and streams the files of its topic with a window of
unacknowledged frames (back pressure) and heartbeats.
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .protocol import (
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_WINDOW,
    FRAME_TIMEOUT,
    PROTOCOL_VERSION,
    RECONNECT_GRACE,
    MessageType,
    ProtocolError,
    Topic,
    read_frame,
    send_frame,
    set_nodelay,
    topic_signature,
)
from .spool import Spool

logger = logging.getLogger(__name__)

# How long a subscription that ended waits for its reader to take a BYE already sent.
BYE_WAIT_SECONDS = 1.0


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

    def __init__(
        self,
        condition: threading.Condition,
        on_topic_ended: Callable[[Topic], object] | None = None,
        on_ended: Callable[[Expectation], object] | None = None,
    ) -> None:
        self._condition = condition
        self._by_topic: dict[Topic, list[Expectation]] = {}
        # Called (holding the condition) when an expectation has ended, and when the last
        # expectation of a topic has ended.
        self._on_ended = on_ended
        self._on_topic_ended = on_topic_ended

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
                self._ended([expectation])
            if not expectations:
                self._topic_ended(expectation.topic)

    def prune(self) -> None:
        """Ends the expectations whose reconnect grace has passed (called periodically)."""
        with self._condition:
            for topic in list(self._by_topic):
                self._live(topic)

    def _live(self, topic: Topic) -> list[Expectation]:
        now = time.monotonic()
        expectations = self._by_topic.get(topic, [])
        live = [e for e in expectations if e.ends_at is None or e.ends_at > now]
        if len(live) != len(expectations):
            self._ended([e for e in expectations if e not in live])
            if live:
                self._by_topic[topic] = live
            else:
                self._topic_ended(topic)
        return live

    def _ended(self, ended: list[Expectation]) -> None:
        if self._on_ended is not None:
            for expectation in ended:
                self._on_ended(expectation)

    def _topic_ended(self, topic: Topic) -> None:
        self._by_topic.pop(topic, None)
        if self._on_topic_ended is not None:
            self._on_topic_ended(topic)

    def expects(self, topic: Topic, sop_instance_uid: str) -> bool:
        with self._condition:
            return any(sop_instance_uid in e.sop_instance_uids for e in self._live(topic))

    def holders(self, topic: Topic, sop_instance_uid: str) -> list[Expectation]:
        """The live expectations waiting for an instance (called holding the condition; it
        changes nothing, so the spool may call it while it indexes an entry)."""
        now = time.monotonic()
        return [
            e
            for e in self._by_topic.get(topic, ())
            if (e.ends_at is None or e.ends_at > now) and sop_instance_uid in e.sop_instance_uids
        ]

    def report_store_failure(self, topic: Topic, sop_instance_uid: str, message: str) -> None:
        """Tells every subscription expecting the instance that it could not be stored."""
        with self._condition:
            for expectation in self._live(topic):
                if sop_instance_uid in expectation.sop_instance_uids:
                    expectation.store_failures.append((sop_instance_uid, message))
            self._condition.notify_all()


def expected_uids(value: Any) -> frozenset[str]:
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
        set_nodelay(sock)
        transmit = self.server.transmit
        transmit._register_connection(sock)
        try:
            self._serve(sock, transmit)
        except (ConnectionError, OSError, ProtocolError) as err:
            logger.debug("File transmit connection from %s ended: %s", self.client_address, err)
        finally:
            transmit._unregister_connection(sock)

    def _serve(self, sock: socket.socket, transmit: FileTransmitServer) -> None:
        sock.settimeout(FRAME_TIMEOUT)
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
            expected = expected_uids(frame.header.get("expected"))
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
        # What a resumed subscription missed stays until it acknowledges it.
        spool.hold(topic, after_seq, expectation, expected)
        said_bye = {"value": False}
        try:
            self._deliver(
                sock, transmit, topic, expectation, window, after_seq, subscribed_at, said_bye
            )
        finally:
            # A receiver that stops leaves its spool as it is: what a subscription had not
            # taken yet is reloaded by the next run, where the subscription resumes.
            if not transmit.stopping:
                grace = 0.0 if said_bye["value"] else RECONNECT_GRACE
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
                        # The worker has the file: the spool need not keep it for this one.
                        spool.acknowledge(seq, expectation)
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
            if not transmit.stopping:
                # The subscriber's BYE may still be in the reader's hands when a send to the
                # closed connection ends this loop first; whether the subscription's files
                # wait out the reconnect grace depends on it.
                reader.join(timeout=BYE_WAIT_SECONDS)
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
        # The move a topic's files were pushed for is over once no subscription expects
        # anything of the topic: its files go at once (no retention, no replay to a later move).
        # An entry stays only while a subscription that expects it has not taken it yet.
        self.expectations = Expectations(
            spool.condition,
            on_topic_ended=spool.discard,
            on_ended=lambda expectation: spool.release(expectation.topic, expectation),
        )
        spool.holders = self.expectations.holders
        self.acknowledged = 0
        """Files subscribers confirmed to have received (all subscriptions, this run)."""
        self._tcp = _TransmitTCPServer((host, port), _SubscriptionHandler, bind_and_activate=True)
        self._tcp.transmit = self
        self._connections: set[socket.socket] = set()
        self._connections_ended = threading.Condition()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._tcp.server_address[1]

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._tcp.serve_forever, name="file-transmit-server", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stops accepting, closes every subscription's connection and waits (up to
        ``timeout`` seconds) until their handlers have ended, so nothing of this run touches
        the spool any more when a next run reloads it."""
        self.stopping = True
        with self.spool.condition:
            self.spool.condition.notify_all()
        if self._thread is not None:
            self._tcp.shutdown()
            self._thread.join()
        self._tcp.server_close()
        with self._connections_ended:
            connections = list(self._connections)
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._connections_ended:
            self._connections_ended.wait_for(lambda: not self._connections, timeout)

    def _register_connection(self, sock: socket.socket) -> None:
        with self._connections_ended:
            self._connections.add(sock)

    def _unregister_connection(self, sock: socket.socket) -> None:
        with self._connections_ended:
            self._connections.discard(sock)
            self._connections_ended.notify_all()
