"""Accept negotiation and the parameters of frames and rendered resources (pure logic)."""

from __future__ import annotations

import pytest
from django.http import QueryDict
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless

from adit.dicom_web.errors import BadRequest
from adit.dicom_web.negotiation import (
    NotAcceptable,
    negotiate_instances,
    negotiate_octets,
    negotiate_rendered,
    parse_accept,
)
from adit.dicom_web.resources import parse_frame_list, rendering_options


def test_parse_accept_orders_by_quality_and_keeps_quoted_parameters():
    ranges = parse_accept(
        'application/dicom;q=0.5, multipart/related; type="application/octet-stream; '
        'transfer-syntax=1.2.840.10008.1.2.1", image/png;q=0'
    )
    assert [r.media_type for r in ranges] == ["multipart/related", "application/dicom"]
    assert ranges[0].params["type"].endswith("transfer-syntax=1.2.840.10008.1.2.1")


@pytest.mark.parametrize(
    "accept, single, multipart, syntaxes",
    [
        (None, False, True, None),
        ("*/*", False, True, None),
        ('multipart/related; type="application/dicom"', False, True, None),
        ('multipart/related; type="application/dicom"; transfer-syntax=*', False, True, None),
        (
            f'multipart/related; type="application/dicom"; transfer-syntax={RLELossless}',
            False,
            True,
            {RLELossless},
        ),
        (
            'multipart/related; type="application/dicom; '
            f'transfer-syntax={ExplicitVRLittleEndian}"',
            False,
            True,
            {ExplicitVRLittleEndian},
        ),
        ("application/dicom", True, False, None),
        ("application/dicom, multipart/related", False, True, None),
    ],
)
def test_negotiate_instances(accept, single, multipart, syntaxes):
    choice = negotiate_instances(accept, single_part_allowed=single)
    assert choice.multipart is multipart
    assert choice.syntaxes == (None if syntaxes is None else frozenset(syntaxes))


@pytest.mark.parametrize(
    "accept, message",
    [
        ("application/dicom", "multipart/related"),
        ('multipart/related; type="application/pdf"', "application/pdf"),
        ("text/html", "text/html"),
        ('multipart/related; type="application/dicom"; transfer-syntax=abc', "not a transfer"),
    ],
)
def test_instances_not_acceptable_names_the_reason(accept, message):
    with pytest.raises(NotAcceptable, match=message):
        negotiate_instances(accept, single_part_allowed=False)


def test_syntax_for_keeps_stored_or_decompresses_or_refuses():
    as_stored = negotiate_instances(None, single_part_allowed=False)
    assert as_stored.syntax_for(RLELossless) == RLELossless
    explicit = negotiate_instances(
        f"multipart/related; type=application/dicom; transfer-syntax={ExplicitVRLittleEndian}",
        single_part_allowed=False,
    )
    assert explicit.syntax_for(RLELossless) == ExplicitVRLittleEndian
    jpeg = negotiate_instances(
        f"multipart/related; type=application/dicom; transfer-syntax={JPEGBaseline8Bit}",
        single_part_allowed=False,
    )
    assert jpeg.syntax_for(JPEGBaseline8Bit) == JPEGBaseline8Bit
    with pytest.raises(NotAcceptable, match="stored as RLE Lossless"):
        jpeg.syntax_for(RLELossless)


def test_octets_default_to_explicit_vr_little_endian():
    assert negotiate_octets('multipart/related; type="application/octet-stream"').syntaxes == {
        ExplicitVRLittleEndian
    }
    assert negotiate_octets('multipart/related; type="*/*"').syntaxes == {ExplicitVRLittleEndian}
    stored = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    assert negotiate_octets(stored).syntaxes is None
    with pytest.raises(NotAcceptable):
        negotiate_octets("application/dicom")


def test_rendered_media_types():
    assert negotiate_rendered(None) == "image/jpeg"
    assert negotiate_rendered("image/png, image/jpeg;q=0.5") == "image/png"
    with pytest.raises(NotAcceptable, match="image/jpeg or image/png"):
        negotiate_rendered("image/gif")


def test_frame_lists():
    assert parse_frame_list("1, 3,2") == [1, 3, 2]
    for bad in ("0", "1,,2", "a", "-1", "1.5"):
        with pytest.raises(BadRequest, match="frame numbers"):
            parse_frame_list(bad)


def test_rendering_options():
    options = rendering_options(QueryDict("window=40,400,linear&viewport=64,32&quality=70"))
    assert options == {"window": (40.0, 400.0), "size": (64, 32), "quality": 70}
    for query, message in [
        ("window=40", "window must be"),
        ("window=40,400,sigmoid", "not supported"),
        ("viewport=1,2,3,4,5,6", "viewport must be"),
        ("quality=0", "quality must be"),
        ("size=3", "Unknown parameter"),
        ("annotation=patient", "annotation is not supported"),
    ]:
        with pytest.raises(BadRequest, match=message):
            rendering_options(QueryDict(query))
