"""ADIT's HTTP channel for daphne: requests beyond what Twisted parses get an answer.

daphne serves HTTP through Twisted's `HTTPChannel`, whose limits end a request before it
reaches Django: a line over 16 KiB closes the connection without any answer, and more than
16 KiB of request line and headers, more than 500 headers or a malformed line write a bare
"400 Bad Request" and close at once. A client still sending (a 100 kB URL) then usually sees
"connection reset" rather than even that 400, because closing a socket with unread data makes
the kernel answer with a reset.

This channel raises the hard limits to `HARD_LINE_BYTES` and `HARD_HEADER_BYTES` (64 KiB), so
that ordinary excess reaches ADIT's own, lower limits (`adit.core.middleware.
RequestLimitsMiddleware`), which answer naming the limit. Beyond the hard limits the channel
answers itself in the same words: 414 for a request line too long, 431 for headers too large
or too many, 400 for a malformed request line or header; JSON for paths under /api/, a small
HTML page elsewhere. It then closes only its sending side and reads (and drops) what the
client still sends for up to `LINGER_SECONDS` (a "lingering close"), so the answer is read
before the connection ends.

`install()` (called by `adit.asgi`, i.e. in every process that serves ADIT with daphne: `cli
serve`, the Docker image, the tests' live servers) makes daphne's `HTTPFactory` build this
channel. It relies on two Twisted details that are not public API: the protocol wrapper
`_GenericHTTPChannelProtocol` that `HTTPFactory` builds around each channel, and the method
`_respondToBadRequestAndDisconnect` through which `HTTPChannel` refuses; the tests against a
real daphne (`adit/core/tests/test_http_limits_live.py`) notice when either changes.
"""

from __future__ import annotations

import html
import json

from twisted.web import http

HARD_LINE_BYTES = 64 * 1024
"""Longest request line or header line Twisted reads."""
HARD_HEADER_BYTES = 64 * 1024
"""Request line and all headers together."""
MAX_HEADER_COUNT = 100
LINGER_SECONDS = 2.0
API_PREFIX = b"/api/"

REASONS = {400: b"Bad Request", 414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


def refusal_bytes(status: int, limit: str, message: str, api: bool) -> bytes:
    """A complete HTTP/1.1 response that refuses the request and closes the connection."""
    if api:
        content_type = b"application/json"
        body = json.dumps({"detail": message, "limit": limit}).encode()
    else:
        content_type = b"text/html; charset=utf-8"
        body = (
            f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{status} – request refused</title></head><body>"
            f"<h1>The request was refused ({status})</h1><p>{html.escape(message)}</p>"
            "</body></html>"
        ).encode()
    head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
    return head % (status, REASONS[status], content_type, len(body)) + body


def _is_api(request_line: bytes | None) -> bool:
    parts = (request_line or b"").split(b" ", 2)
    return len(parts) > 1 and parts[1].startswith(API_PREFIX)


class AditHTTPChannel(http.HTTPChannel):
    MAX_LENGTH = HARD_LINE_BYTES
    totalHeadersSize = HARD_HEADER_BYTES
    maxHeaders = MAX_HEADER_COUNT

    _request_line: bytes | None = None
    _body_of: bytes | None = None
    """The request line of the request whose body is being read (after its headers)."""
    _refused = False

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: read and drop what the client still sends
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if self._refused:
            return
        starting = self._request_line is None
        if starting and line:
            self._request_line = line
        if not line and not starting:
            # End of headers: the body follows; the next line starts a new request.
            self._body_of, self._request_line = self._request_line, None
        super().lineReceived(line)

    def allContentReceived(self) -> None:
        super().allContentReceived()
        self._body_of = None

    def rawDataReceived(self, data: bytes) -> None:
        if not self._refused:
            super().rawDataReceived(data)

    def lineLengthExceeded(self, line: bytes) -> None:
        if self._request_line is None:
            self._refuse(
                414,
                "request_line_length",
                f"The request line (method, URL and version) is longer than {HARD_LINE_BYTES} "
                "bytes.",
                _is_api(line[:1024]),
            )
        else:
            self._refuse(
                431,
                "header_size",
                f"A request header line is longer than {HARD_LINE_BYTES} bytes.",
                _is_api(self._request_line),
            )

    def _respondToBadRequestAndDisconnect(self) -> None:
        api = _is_api(self._request_line or self._body_of)
        if self._body_of is not None:
            # Twisted parses a multipart/form-data body itself (for `request.args`) and calls
            # this when it cannot.
            self._refuse(
                400,
                "malformed_body",
                "The request body is malformed (e.g. a multipart/form-data body that cannot "
                "be parsed).",
                api,
            )
        elif self._receivedHeaderSize > self.totalHeadersSize:
            self._refuse(
                431,
                "header_size",
                f"The request line and headers are longer than {HARD_HEADER_BYTES} bytes together.",
                api,
            )
        elif self._receivedHeaderCount > self.maxHeaders:
            self._refuse(
                431,
                "header_count",
                f"The request has more than {MAX_HEADER_COUNT} headers.",
                api,
            )
        else:
            self._refuse(
                400,
                "malformed",
                "The request line or a header is malformed (e.g. a control character in a "
                "header value).",
                api,
            )

    def _refuse(self, status: int, limit: str, message: str, api: bool) -> None:
        if self._refused:
            return
        self._refused = True
        transport = self.transport
        assert transport is not None  # refusals happen while data arrives
        transport.write(refusal_bytes(status, limit, message, api))
        from twisted.internet import reactor

        lose_write = getattr(transport, "loseWriteConnection", None)
        if lose_write is None:
            self.loseConnection()
            return
        lose_write()
        # The connection ends when the client closes it, or after the lingering time.
        reactor.callLater(LINGER_SECONDS, self._end_lingering)  # type: ignore[attr-defined]

    def _end_lingering(self) -> None:
        if self.transport is not None and self.transport.connected:
            self.transport.abortConnection()


def _build_channel(factory) -> http._GenericHTTPChannelProtocol:
    return http._GenericHTTPChannelProtocol(AditHTTPChannel())  # type: ignore[call-arg]


def install() -> None:
    """Make daphne build `AditHTTPChannel` for every HTTP connection."""
    from daphne.http_protocol import HTTPFactory

    HTTPFactory.protocol = _build_channel  # type: ignore[assignment]
