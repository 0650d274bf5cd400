"""A TCP proxy for tests: counts the connections it forwards, can slow them down, and can keep
every byte the client sent (what left a browser, however the page built its requests)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from adit.core.dicom.testing.peers import LOOPBACK


class CountingProxy:
    """Forwards TCP connections to a target and records how many were open at the same time."""

    def __init__(
        self,
        target_port: int,
        target_host: str = LOOPBACK,
        delay_per_chunk: float = 0.0,
        record_sent: bool = False,
    ) -> None:
        self.target = (target_host, target_port)
        # With record_sent, the bytes each connection's client sent, as on the wire.
        self.record_sent = record_sent
        self._sent: list[bytearray] = []
        # Seconds to wait before forwarding each chunk from the client: a slow network or server.
        self.delay_per_chunk = delay_per_chunk
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.listener.settimeout(0.2)  # so that the accept loop notices __exit__
        self.lock = threading.Lock()
        self.open_now = 0
        self.max_open = 0
        self.total = 0
        self.spans: list[list[float]] = []  # [accepted, client closed] per connection
        self._connections: list[tuple[socket.socket, socket.socket]] = []
        self._closing = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._closing = True
        self._thread.join(timeout=5)
        self.listener.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.open_now += 1
                self.total += 1
                self.max_open = max(self.max_open, self.open_now)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        span = [time.monotonic(), float("inf")]
        with self.lock:
            self.spans.append(span)
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            self._closed()
            return
        for sock in (client, upstream):
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.lock:
            self._connections.append((client, upstream))
        back = threading.Thread(target=self._pipe, args=(upstream, client), daemon=True)
        back.start()
        record = None
        if self.record_sent:
            record = bytearray()
            with self.lock:
                self._sent.append(record)
        self._pipe(client, upstream, self.delay_per_chunk, record, self.lock)
        # ADIT has closed its end: the association no longer counts as ADIT's, however long
        # the server takes to close its side.
        self._closed()
        span[1] = time.monotonic()
        back.join(timeout=30)
        for sock in (client, upstream):
            sock.close()

    @staticmethod
    def _pipe(
        source: socket.socket,
        target: socket.socket,
        delay: float = 0.0,
        record: bytearray | None = None,
        lock: threading.Lock | None = None,
    ) -> None:
        try:
            while data := source.recv(65536):
                if delay:
                    time.sleep(delay)
                if record is not None and lock is not None:
                    with lock:
                        record += data
                target.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def sent(self) -> list[bytes]:
        """What the clients sent (with `record_sent`), one byte string per connection."""
        with self.lock:
            return [bytes(record) for record in self._sent]

    def clear(self) -> None:
        """Forget what was recorded so far (connections go on recording)."""
        with self.lock:
            for record in self._sent:
                record.clear()

    def drop_connections(self) -> None:
        """Cuts every open connection at once at both ends (a server that went away)."""
        with self.lock:
            connections, self._connections = self._connections, []
        for pair in connections:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def most_at_once(self, grace: float = 0.05) -> int:
        """Most connections open at once, not counting the last `grace` seconds of each.

        The proxy notices that ADIT closed a connection only when its thread gets to run, which
        may be after ADIT already opened the next one; `max_open` then counts two. A connection
        really held beside another overlaps it far longer than `grace`.
        """
        with self.lock:
            # Each connection still counts itself however short it was.
            spans = [(start, max(start + 1e-6, end - grace)) for start, end in self.spans]
        points = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
        most = current = 0
        for _, change in points:
            current += change
            most = max(most, current)
        return most

    def _closed(self) -> None:
        with self.lock:
            self.open_now -= 1
