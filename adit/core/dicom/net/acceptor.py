"""Accepting connections as an acceptor: association requests read without a thread each.

A connection costs ADIT nothing until its A-ASSOCIATE-RQ has arrived whole: `RequestReader`
reads the requests of all pending connections in one thread (a selector, non-blocking sockets,
at most `MAX_ASSOCIATION_PDU` bytes each), so a flood of idle or trickling connections neither
starts threads nor holds buffers beyond that cap. Limits: `max_pending` connections in all and
`max_pending_per_host` from one address, so one host cannot lock out the PACS that matter.
ARTIM (PS3.8 9.1.5) is a deadline per connection: a request not complete within it closes the
connection. A complete request is handed to `on_request(sock, peer address, PDU bytes)` in the
same thread; the receiver then negotiates (`accept_association`) and only an accepted
association gets a thread of its own.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from .pdus import (
    A_ABORT_PDU,
    A_ASSOCIATE_RQ_PDU,
    ABORT,
    MAX_ASSOCIATION_PDU,
    PDU_HEADER,
    abort_pdu,
)

logger = logging.getLogger(__name__)

# How often the loop wakes to expire requests and to notice a stop.
_TICK_SECONDS = 0.25

OnRequest = Callable[[socket.socket, str, bytes], None]


@dataclass
class _Pending:
    sock: socket.socket
    address: str
    deadline: float
    buffer: bytearray = field(default_factory=bytearray)
    needed: int = 6  # the PDU header first, then the whole PDU


class RequestReader:
    """Reads the A-ASSOCIATE-RQ of every connection `listener` accepts (see module doc).

    `artim_seconds` is asked for each new connection (the receiver's timeouts may change).
    """

    def __init__(
        self,
        listener: socket.socket,
        on_request: OnRequest,
        artim_seconds: Callable[[], float],
        stop: threading.Event,
        max_pending: int = 128,
        max_pending_per_host: int = 16,
    ) -> None:
        self.listener = listener
        self.on_request = on_request
        self.artim_seconds = artim_seconds
        self.stop = stop
        self.max_pending = max_pending
        self.max_pending_per_host = max_pending_per_host
        self._pending: dict[socket.socket, _Pending] = {}
        self._per_host: Counter[str] = Counter()

    def run(self) -> None:
        selector = selectors.DefaultSelector()
        self.listener.setblocking(False)
        selector.register(self.listener, selectors.EVENT_READ)
        try:
            while not self.stop.is_set():
                try:
                    events = selector.select(_TICK_SECONDS)
                except (OSError, ValueError):  # the listener was closed by stop()
                    return
                for key, _ in events:
                    if key.fileobj is self.listener:
                        if not self._accept(selector):
                            return
                    else:
                        self._read(selector, self._pending[key.fileobj])  # type: ignore[index]
                self._expire(selector)
        finally:
            for pending in list(self._pending.values()):
                self._drop(selector, pending)
            selector.close()

    def _accept(self, selector: selectors.BaseSelector) -> bool:
        while True:
            try:
                sock, address = self.listener.accept()
            except BlockingIOError:
                return True
            except OSError:
                return False  # closed by stop()
            host = str(address[0])
            if len(self._pending) >= self.max_pending or (
                self._per_host[host] >= self.max_pending_per_host
            ):
                logger.warning(
                    "Closed a connection from %s: too many connections still negotiating "
                    "(%d from that host, %d in all)",
                    host,
                    self._per_host[host],
                    len(self._pending),
                )
                sock.close()
                continue
            sock.setblocking(False)
            pending = _Pending(sock, host, time.monotonic() + self.artim_seconds())
            self._pending[sock] = pending
            self._per_host[host] += 1
            selector.register(sock, selectors.EVENT_READ)

    def _read(self, selector: selectors.BaseSelector, pending: _Pending) -> None:
        try:
            data = pending.sock.recv(pending.needed - len(pending.buffer))
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(selector, pending)
            return
        pending.buffer += data
        if len(pending.buffer) == 6 and pending.needed == 6:
            pdu_type, _, length = PDU_HEADER.unpack(pending.buffer)
            if pdu_type != A_ASSOCIATE_RQ_PDU:
                self._refuse(selector, pending, ABORT if pdu_type != A_ABORT_PDU else b"")
                return
            if length > MAX_ASSOCIATION_PDU:
                self._refuse(selector, pending, abort_pdu(2, 6))
                return
            pending.needed = 6 + length
        if len(pending.buffer) < pending.needed:
            return
        self._forget(selector, pending)
        try:
            pending.sock.setblocking(True)
            self.on_request(pending.sock, pending.address, bytes(pending.buffer))
        except Exception:  # one bad request must not end the loop for everybody
            logger.exception("Negotiating an association from %s failed", pending.address)
            with contextlib.suppress(OSError):
                pending.sock.close()

    def _expire(self, selector: selectors.BaseSelector) -> None:
        now = time.monotonic()
        for pending in [p for p in self._pending.values() if p.deadline < now]:
            logger.info(
                "Closed a connection from %s: no association request in time", pending.address
            )
            self._drop(selector, pending)

    def _refuse(self, selector: selectors.BaseSelector, pending: _Pending, answer: bytes) -> None:
        with contextlib.suppress(OSError):
            if answer:
                pending.sock.send(answer)
        self._drop(selector, pending)

    def _forget(self, selector: selectors.BaseSelector, pending: _Pending) -> None:
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(pending.sock)
        if self._pending.pop(pending.sock, None) is not None:
            self._per_host[pending.address] -= 1
            if self._per_host[pending.address] <= 0:
                del self._per_host[pending.address]

    def _drop(self, selector: selectors.BaseSelector, pending: _Pending) -> None:
        self._forget(selector, pending)
        with contextlib.suppress(OSError):
            pending.sock.close()
