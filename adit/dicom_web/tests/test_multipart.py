"""The incremental multipart reader (pure logic): parts split across any chunk size."""

from io import BytesIO

import pytest

from adit.dicom_web.multipart import (
    MultipartError,
    closing_delimiter,
    encode_part,
    iter_parts,
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
