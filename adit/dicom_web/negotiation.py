"""Accept negotiation of WADO-RS (PS3.18 8.7): which media type and transfer syntax to send.

What ADIT can produce from an instance: the instance as it is stored (whatever its transfer
syntax), or decompressed to a native little endian syntax (Explicit VR Little Endian, the
standard's default, or Implicit VR Little Endian). Anything else (a compressed syntax the
instance is not stored in, big endian) is not acceptable: 406 with the reason when the first
instance shows it, before any byte of the answer is sent.

A missing `transfer-syntax` parameter on `application/dicom` means "as stored" here, as with
Orthanc's DICOMweb plugin, so that retrieving through ADIT never decompresses unasked; ask for
`transfer-syntax=1.2.840.10008.1.2.1` to get uncompressed data. For frames and bulk data
(`application/octet-stream`) a missing parameter means Explicit VR Little Endian, as PS3.18
Table 8.7.3-2 says, and `*` means as stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from rest_framework import status
from rest_framework.exceptions import APIException

NATIVE_SYNTAXES = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class NotAcceptable(APIException):
    status_code = status.HTTP_406_NOT_ACCEPTABLE
    default_detail = "None of the accepted media types can be produced."
    default_code = "not_acceptable"


@dataclass
class MediaRange:
    media_type: str
    params: dict[str, str] = field(default_factory=dict)
    quality: float = 1.0


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts, current, quoted = [], [], False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header, best first (stable for equal quality)."""
    ranges = []
    for item in _split_outside_quotes(header or "", ","):
        pieces = _split_outside_quotes(item, ";")
        media_type = pieces[0].lower()
        params: dict[str, str] = {}
        quality = 1.0
        for piece in pieces[1:]:
            name, _, value = piece.partition("=")
            name, value = name.strip().lower(), value.strip().strip('"')
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
            else:
                params[name] = value
        if quality > 0:
            ranges.append(MediaRange(media_type, params, quality))
    return sorted(ranges, key=lambda r: -r.quality)


def _inner_type(media_range: MediaRange) -> tuple[str, dict[str, str]]:
    """For multipart/related, the part type (with its own parameters, which may be inside the
    quoted `type`, as dicomweb-client writes them); else the range itself."""
    if media_range.media_type != "multipart/related":
        return media_range.media_type, media_range.params
    inner = media_range.params.get("type", "")
    pieces = _split_outside_quotes(inner, ";")
    params = {k: v for k, v in media_range.params.items() if k not in ("type", "boundary")}
    for piece in pieces[1:]:
        name, _, value = piece.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    return (pieces[0].lower() if pieces else ""), params


def _syntaxes(value: str | None, default: frozenset[str] | None) -> frozenset[str] | None:
    """None: as stored. Raises NotAcceptable for a transfer-syntax that is not a UID."""
    if value is None:
        return default
    value = value.strip()
    if value == "*":
        return None
    if not _UID.fullmatch(value) or len(value) > 64:
        raise NotAcceptable(f"transfer-syntax={value!r} is not a transfer syntax UID.")
    return frozenset({value})


@dataclass
class Choice:
    """What to send: part (or single-part) media type and the acceptable transfer syntaxes."""

    media_type: str
    multipart: bool
    syntaxes: frozenset[str] | None  # None: as stored

    def syntax_for(self, stored: str) -> str:
        """The transfer syntax to send an object stored in `stored` in.

        Raises:
            NotAcceptable: naming the stored syntax and what was asked.
        """
        if self.syntaxes is None or stored in self.syntaxes:
            return stored
        for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            if syntax in self.syntaxes:
                return syntax
        asked = ", ".join(sorted(self.syntaxes))
        raise NotAcceptable(
            f"The data is stored as {UID(stored).name} ({stored}); ADIT can send it as stored "
            f"or decompressed to Explicit or Implicit VR Little Endian, not as {asked}."
        )

    def content_type(self, syntax: str) -> str:
        return f"{self.media_type}; transfer-syntax={syntax}"


def negotiate_instances(accept: str | None, single_part_allowed: bool) -> Choice:
    """For study, series and instance retrieval (application/dicom)."""
    ranges = parse_accept(accept) or [MediaRange("*/*")]
    for media_range in ranges:
        inner, params = _inner_type(media_range)
        multipart = media_range.media_type in ("multipart/related", "multipart/*", "*/*")
        if media_range.media_type == "application/dicom":
            if not single_part_allowed:
                continue
            multipart = False
        elif media_range.media_type == "multipart/related" and inner not in (
            "",
            "application/dicom",
        ):
            continue
        elif not multipart:
            continue
        return Choice(
            "application/dicom", multipart, _syntaxes(params.get("transfer-syntax"), None)
        )
    offered = 'multipart/related; type="application/dicom"'
    if single_part_allowed:
        offered += " or application/dicom"
    raise NotAcceptable(
        f"ADIT sends this resource as {offered} (with an optional transfer-syntax); the "
        f"Accept header asks for {accept!r}."
    )


def negotiate_octets(accept: str | None) -> Choice:
    """For frames and bulk data (application/octet-stream parts)."""
    ranges = parse_accept(accept) or [MediaRange("*/*")]
    default = frozenset({ExplicitVRLittleEndian})
    for media_range in ranges:
        inner, params = _inner_type(media_range)
        if media_range.media_type in ("*/*", "multipart/*") or (
            media_range.media_type == "multipart/related"
            and inner in ("", "application/octet-stream", "*/*")
        ):
            value = params.get("transfer-syntax")
            syntaxes = None if media_range.media_type == "*/*" and value is None else default
            if value is not None:
                syntaxes = _syntaxes(value, default)
            return Choice("application/octet-stream", True, syntaxes)
    raise NotAcceptable(
        'ADIT sends frames and bulk data as multipart/related; type="application/octet-stream" '
        f"(with an optional transfer-syntax); the Accept header asks for {accept!r}."
    )


def negotiate_rendered(accept: str | None) -> str:
    """image/jpeg (the default) or image/png."""
    for media_range in parse_accept(accept) or [MediaRange("*/*")]:
        if media_range.media_type in ("image/jpeg", "image/png"):
            return media_range.media_type
        if media_range.media_type in ("*/*", "image/*"):
            return "image/jpeg"
    raise NotAcceptable(
        f"ADIT renders images as image/jpeg or image/png; the Accept header asks for {accept!r}."
    )
