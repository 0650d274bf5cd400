"""Validators of model and form fields: values that end up in DICOM queries, node settings and
file paths. The models (`adit.core.models`) import them from here; they import nothing of ADIT
but the DICOM layer."""

import re
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

from adit.core.dicom.deid_profile import parse_options

UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
# Embeddings, overrides and isolates reorder how text is shown ("Trojan Source"): an ID could
# display as another one. Marks (U+200E/U+200F) are harmless and stay allowed.
BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")


def validate_uid(value: str) -> None:
    """A DICOM UID: digits and dots, components without leading zeros, at most 64 characters."""
    if len(value) > 64 or not UID_PATTERN.match(value):
        raise ValidationError(
            "%(value)s is not a valid DICOM UID (digits and dots only, max. 64 characters).",
            params={"value": value},
            code="invalid_uid",
        )


def validate_no_backslash_or_control_characters(value: str) -> None:
    """Backslash separates DICOM values; control characters break files and logs, and
    bidirectional controls make a value display as another."""
    if "\\" in value:
        raise ValidationError("Backslashes are not allowed.", code="backslash")
    if CONTROL_CHARACTERS.search(value):
        raise ValidationError("Control characters are not allowed.", code="control_character")
    if BIDI_CONTROLS.search(value):
        raise ValidationError(
            "Bidirectional control characters (U+202A to U+202E, U+2066 to U+2069) are not "
            "allowed.",
            code="bidi_control",
        )


def validate_no_wildcards(value: str) -> None:
    """An exact identifier: DICOM wildcards would match other patients."""
    if "*" in value or "?" in value:
        raise ValidationError("Wildcards (* or ?) are not allowed here.", code="wildcard")


# --- DICOM nodes (historic migrations name them as adit.core.models.<name>) ---------------


def validate_ae_title(value: str) -> None:
    """An AE title: 1–16 characters of the DICOM default repertoire, no backslash."""
    if not value.strip():
        raise ValidationError(
            "The AE title must not be empty or only spaces.", code="ae_title_blank"
        )
    if len(value) > 16:
        raise ValidationError(
            "The AE title %(value)s is %(length)d characters long; at most 16 are allowed.",
            code="too_long",
            params={"value": repr(value), "length": len(value)},
        )
    if value != value.strip(" "):
        raise ValidationError(
            "The AE title %(value)s must not start or end with a space.",
            code="padded",
            params={"value": repr(value)},
        )
    bad = sorted({char for char in value if not (" " <= char <= "~") or char == "\\"})
    if bad:
        raise ValidationError(
            "The AE title %(value)s contains characters not allowed in an AE title: %(bad)s "
            "(allowed: printable ASCII except backslash).",
            code="bad_characters",
            params={"value": repr(value), "bad": ", ".join(repr(char) for char in bad)},
        )


def validate_host(value: str) -> None:
    if value and (value != value.strip() or any(char.isspace() for char in value)):
        raise ValidationError(
            "The host %(value)s must not contain spaces.", code="bad_host", params={"value": value}
        )


def validate_http_url(value: str) -> None:
    """An http(s) URL with a host; unlike Django's URLValidator it allows hosts without a TLD
    (Docker service names like ``orthanc``)."""
    parsed = urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValidationError(
            "%(value)s is not an http:// or https:// URL with a host.",
            code="bad_url",
            params={"value": value},
        )
    if any(char.isspace() for char in value):
        raise ValidationError(
            "The URL %(value)s must not contain spaces.", code="bad_url", params={"value": value}
        )


def validate_url_prefix(value: str) -> None:
    if any(char.isspace() for char in value) or "://" in value:
        raise ValidationError(
            "The prefix %(value)s must be a path segment such as 'dicom-web' (no spaces, no "
            "scheme).",
            code="bad_prefix",
            params={"value": value},
        )


def validate_absolute_folder_path(value: str) -> None:
    path = PurePosixPath(value)
    if not path.is_absolute():
        raise ValidationError(
            "The folder path %(value)s must be absolute (start with /).",
            code="relative_path",
            params={"value": value},
        )
    if ".." in path.parts:
        raise ValidationError(
            "The folder path %(value)s must not contain '..'.",
            code="parent_reference",
            params={"value": value},
        )


def validate_deid_options(value: list[str]) -> None:
    try:
        parse_options(value)
    except ValueError as error:
        raise ValidationError(str(error)) from None
