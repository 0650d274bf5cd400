"""Validators for values that end up in DICOM queries and file paths."""

import re

from django.core.exceptions import ValidationError

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
