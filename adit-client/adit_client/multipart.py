"""Reading and writing multipart/related bodies one part at a time (constant memory)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator
from email.message import Message

READ_CHUNK_SIZE = 64 * 1024


class MultipartError(ValueError):
    """The body is not a well-formed multipart message."""


def parse_content_type(header: str) -> tuple[str, dict[str, str]]:
    message = Message()
    message["Content-Type"] = header or ""
    media_type = message.get_content_type() if header else ""
    params = {
        key.lower(): str(value)
        for key, value in (message.get_params() or [])[1:]
        if isinstance(value, str)
    }
    return media_type, params


def iter_parts(
    read: Callable[[int], bytes], boundary: str, chunk_size: int = READ_CHUNK_SIZE
) -> Iterator[tuple[dict[str, str], bytes]]:
    """Yields ``(headers, body)`` of each part; `read(n)` returns b"" at the end."""
    delimiter = b"--" + boundary.encode("latin-1")
    part_end = b"\r\n" + delimiter
    buffer = bytearray()

    def fill() -> bool:
        chunk = read(chunk_size)
        if not chunk:
            return False
        buffer.extend(chunk)
        return True

    def find(marker: bytes) -> int:
        start = 0
        while True:
            index = buffer.find(marker, start)
            if index >= 0:
                return index
            start = max(0, len(buffer) - len(marker) + 1)
            if not fill():
                return -1

    def need(count: int) -> None:
        while len(buffer) < count:
            if not fill():
                raise MultipartError("The response ends before the closing boundary.")

    index = find(delimiter)
    if index < 0:
        raise MultipartError("The response contains no multipart delimiter.")
    del buffer[: index + len(delimiter)]
    while True:
        need(2)
        if buffer[:2] == b"--":
            return
        line_end = find(b"\r\n")
        if line_end < 0:
            raise MultipartError("The response ends inside a delimiter line.")
        del buffer[: line_end + 2]
        headers: dict[str, str] = {}
        need(2)
        if buffer[:2] == b"\r\n":
            del buffer[:2]
        else:
            header_end = find(b"\r\n\r\n")
            if header_end < 0:
                raise MultipartError("The response ends inside a part's headers.")
            for line in bytes(buffer[:header_end]).decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip():
                    headers[name.strip().lower()] = value.strip()
            del buffer[: header_end + 4]
        body_end = find(part_end)
        if body_end < 0:
            raise MultipartError("The response ends inside a part.")
        body = bytes(buffer[:body_end])
        del buffer[: body_end + len(part_end)]
        yield headers, body


def encode_parts(payloads: Iterable[bytes], boundary: str) -> Iterator[bytes]:
    """The body of a multipart/related message, generated part by part."""
    for payload in payloads:
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        yield payload
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def new_boundary() -> str:
    return f"adit-client-{secrets.token_hex(16)}"
