"""The incremental multipart reader (pure logic): parts split across any chunk size."""

from io import BytesIO

import pytest
from adit_client.multipart import (
    MultipartError,
    closing_delimiter,
    encode_part,
    encode_parts,
    iter_parts,
    new_boundary,
    parse_content_type,
)

PAYLOADS = [b"first part", b"\r\n--almost-a-boundary\r\n", b"", b"x" * 70_000]


def _body(boundary: str = "bnd") -> bytes:
    return (
        b"preamble to ignore\r\n"
        + b"".join(encode_part(p, "application/dicom", boundary) for p in PAYLOADS)
        + closing_delimiter(boundary)
    )


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64, 65_536])
def test_parts_survive_every_chunking(chunk_size):
    parts = list(iter_parts(BytesIO(_body()).read, "bnd", chunk_size=chunk_size))
    assert [body for _, body in parts] == PAYLOADS
    assert all(headers == {"content-type": "application/dicom"} for headers, _ in parts)


def test_dicomweb_client_style_without_trailing_crlf_and_without_headers():
    body = b"\r\n--b\r\nContent-Type: application/dicom\r\n\r\nA\r\n--b\r\n\r\nB\r\n--b--"
    parts = list(iter_parts(BytesIO(body).read, "b"))
    assert parts == [({"content-type": "application/dicom"}, b"A"), ({}, b"B")]


@pytest.mark.parametrize(
    "body, message",
    [
        (b"no delimiter at all", "no part delimited"),
        (b"--b\r\nContent-Type: x\r\n\r\nunterminated", "before the part's closing boundary"),
        (b"--b\r\nContent-Type: x", "inside the part's headers"),
        (b"--b\r\n\r\nA\r\n--b", "without the closing boundary"),
    ],
)
def test_malformed_bodies_raise_a_clear_error(body, message):
    with pytest.raises(MultipartError, match=message):
        list(iter_parts(BytesIO(body).read, "b"))


def test_content_type_parameters():
    assert parse_content_type('multipart/related; type="application/dicom"; boundary=abc') == (
        "multipart/related",
        {"type": "application/dicom", "boundary": "abc"},
    )
    assert parse_content_type("") == ("", {})


@pytest.mark.parametrize("chunk_size", [1000, 65_536])
def test_a_part_with_oversized_headers_is_skipped_and_reported(chunk_size):
    body = (
        encode_part(b"A", "application/dicom", "bnd")
        + b"--bnd\r\nX-Long: "
        + b"a" * 2_000_000
        + b"\r\n\r\nskipped body\r\n"
        + encode_part(b"C", "application/dicom", "bnd")
        + closing_delimiter("bnd")
    )
    refused = []
    reads = []

    def read(size):
        reads.append(size)
        return stream.read(size)

    stream = BytesIO(body)
    parts = list(
        iter_parts(read, "bnd", chunk_size=chunk_size, on_refused=lambda n, r: refused.append(n))
    )
    assert [part_body for _, part_body in parts] == [b"A", b"C"]
    assert refused == [2]
    # Without a callback the part is an error naming the limit.
    with pytest.raises(MultipartError, match="Part 2: the part's headers are longer than 16384"):
        list(iter_parts(BytesIO(body).read, "bnd"))


def test_an_endless_delimiter_line_is_refused():
    with pytest.raises(MultipartError, match="longer than 1024 bytes"):
        list(iter_parts(BytesIO(b"--bnd" + b" " * 5000 + b"\r\n").read, "bnd"))


def test_what_the_client_sends_is_what_the_server_reads():
    # One implementation on both sides: the client's STOW-RS body parsed by the server's reader.
    boundary = new_boundary("adit-client")
    body = b"".join(encode_parts(PAYLOADS, boundary))
    parts = list(iter_parts(BytesIO(body).read, boundary, chunk_size=5))
    assert [payload for _, payload in parts] == PAYLOADS


@pytest.mark.parametrize("boundary", ["", "b" * 201])
def test_a_missing_or_overlong_boundary_is_refused(boundary):
    with pytest.raises(MultipartError, match="boundary is missing or longer than 200"):
        list(iter_parts(BytesIO(_body()).read, boundary))
