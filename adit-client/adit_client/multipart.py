"""Reading and writing `multipart/related` bodies (RFC 2046) one part at a time.

The one implementation of ADIT's multipart bodies: ADIT's DICOMweb server (STOW-RS requests,
WADO-RS answers) and this client (WADO-RS answers, STOW-RS requests) both use this module, so
the two cannot drift apart. It lives in the client package because the client ships on its
own (pydicom and requests only) while ADIT depends on the client.

Why not a library: python-multipart's streaming parser refuses a preamble (RFC 2046 allows one),
ends a truncated body without an error and has no limit per part's headers; `multipart` and
streaming-form-data parse `multipart/form-data` only (a part needs Content-Disposition). Wrapping
one of them would take as much code as this parser.

Only one part is ever held in memory, so uploads and downloads of any size need constant memory.
A part's headers are limited to `MAX_PART_HEADER_BYTES`: a part with longer ones is skipped
unread (its bytes are dropped while looking for the next delimiter) and reported through
`on_refused`, so one bad part does not cost the others. The boundary is checked (RFC 2046:
1 to 70 characters; up to 200 are taken from lenient peers).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator
from email.message import Message

READ_CHUNK_SIZE = 64 * 1024
MAX_PART_HEADER_BYTES = 16 * 1024
MAX_DELIMITER_LINE_BYTES = 1024


class MultipartError(ValueError):
    """The body is not a well-formed multipart message."""


def new_boundary(prefix: str = "adit") -> str:
    return f"{prefix}-{secrets.token_hex(16)}"


def parse_content_type(header: str) -> tuple[str, dict[str, str]]:
    """Splits a Content-Type header into the lower-cased media type and its parameters."""
    message = Message()
    message["Content-Type"] = header or ""
    media_type = message.get_content_type() if header else ""
    params = {
        key.lower(): str(value)
        for key, value in (message.get_params() or [])[1:]
        if isinstance(value, str)
    }
    return media_type, params


def part_header(content_type: str, boundary: str) -> bytes:
    """The delimiter line and headers that start a part."""
    return f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode()


def closing_delimiter(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode()


def encode_part(payload: bytes, content_type: str, boundary: str) -> bytes:
    return part_header(content_type, boundary) + payload + b"\r\n"


def encode_parts(
    payloads: Iterable[bytes], boundary: str, content_type: str = "application/dicom"
) -> Iterator[bytes]:
    """The body of a multipart/related message, generated part by part."""
    for payload in payloads:
        yield part_header(content_type, boundary)
        yield payload
        yield b"\r\n"
    yield closing_delimiter(boundary)


def iter_parts(
    read: Callable[[int], bytes],
    boundary: str,
    chunk_size: int = READ_CHUNK_SIZE,
    max_header_bytes: int = MAX_PART_HEADER_BYTES,
    on_refused: Callable[[int, str], None] | None = None,
) -> Iterator[tuple[dict[str, str], bytes]]:
    """Yields ``(headers, body)`` of each part while reading the body in chunks.

    Args:
        read: reads at most n bytes; returns b"" at the end (e.g. a request's `read`).
        boundary: the boundary parameter of the Content-Type.
        max_header_bytes: longest header block of a part.
        on_refused: called with (part number, reason) for a part whose headers are too long;
            the part is skipped. Without it such a part raises `MultipartError`.

    Raises:
        MultipartError: if no delimiter is found or the body ends before the closing one.
    """
    if not boundary or len(boundary) > 200:
        raise MultipartError("The multipart boundary is missing or longer than 200 characters.")
    delimiter = b"--" + boundary.encode("latin-1")
    part_end = b"\r\n" + delimiter
    buffer = bytearray()

    def fill() -> bool:
        chunk = read(chunk_size)
        if not chunk:
            return False
        buffer.extend(chunk)
        return True

    def find(marker: bytes, start: int = 0, limit: int | None = None) -> int:
        """Position of `marker` in the buffer, reading more as needed; -1 at the end, -2 when
        not found within `limit` bytes."""
        while True:
            index = buffer.find(marker, start)
            if index >= 0:
                return -2 if limit is not None and index > limit else index
            if limit is not None and len(buffer) > limit:
                return -2
            start = max(0, len(buffer) - len(marker) + 1)
            if not fill():
                return -1

    def skip_past(marker: bytes) -> bool:
        """Drops everything up to and including `marker`, holding at most a chunk."""
        while True:
            index = buffer.find(marker)
            if index >= 0:
                del buffer[: index + len(marker)]
                return True
            del buffer[: max(0, len(buffer) - len(marker) + 1)]
            if not fill():
                return False

    if not skip_past(delimiter):  # the preamble before the first delimiter is dropped unkept
        raise MultipartError(f"The body contains no part delimited by the boundary {boundary!r}.")
    number = 0
    while True:
        while len(buffer) < 2:
            if not fill():
                raise MultipartError("The body ends without the closing boundary delimiter.")
        if buffer[:2] == b"--":
            return
        line_end = find(b"\r\n", limit=MAX_DELIMITER_LINE_BYTES)
        if line_end == -2:
            raise MultipartError(
                f"A boundary delimiter line is longer than {MAX_DELIMITER_LINE_BYTES} bytes."
            )
        if line_end < 0:
            raise MultipartError("The body ends inside a boundary delimiter line.")
        del buffer[: line_end + 2]
        number += 1
        headers: dict[str, str] = {}
        while len(buffer) < 2:
            if not fill():
                raise MultipartError(f"Part {number}: the body ends inside the part's headers.")
        if buffer[:2] == b"\r\n":  # a part without headers
            del buffer[:2]
        else:
            header_end = find(b"\r\n\r\n", limit=max_header_bytes)
            if header_end == -1:
                raise MultipartError(f"Part {number}: the body ends inside the part's headers.")
            if header_end == -2:
                reason = (
                    f"the part's headers are longer than {max_header_bytes} bytes; the part "
                    "was skipped."
                )
                if on_refused is None:
                    raise MultipartError(f"Part {number}: {reason}")
                if not skip_past(part_end):
                    raise MultipartError(
                        f"Part {number}: the body ends before the part's closing boundary."
                    )
                on_refused(number, reason)
                continue
            for line in bytes(buffer[:header_end]).decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip():
                    headers[name.strip().lower()] = value.strip()
            del buffer[: header_end + 4]
        body_end = find(part_end)
        if body_end < 0:
            raise MultipartError(
                f"Part {number}: the body ends before the part's closing boundary."
            )
        body = bytes(buffer[:body_end])
        del buffer[: body_end + len(part_end)]
        yield headers, body
