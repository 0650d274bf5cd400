"""Validators for values that end up in DICOM queries and file paths."""

import re

from django.core.exceptions import ValidationError

UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def validate_uid(value: str) -> None:
    """A DICOM UID: digits and dots, components without leading zeros, at most 64 characters."""
    if len(value) > 64 or not UID_PATTERN.match(value):
        raise ValidationError(
            "%(value)s is not a valid DICOM UID (digits and dots only, max. 64 characters).",
            params={"value": value},
            code="invalid_uid",
        )


def validate_no_backslash_or_control_characters(value: str) -> None:
    """Backslash separates DICOM values; control characters break files and logs."""
    if "\\" in value:
        raise ValidationError("Backslashes are not allowed.", code="backslash")
    if CONTROL_CHARACTERS.search(value):
        raise ValidationError("Control characters are not allowed.", code="control_character")


def validate_no_wildcards(value: str) -> None:
    """An exact identifier: DICOM wildcards would match other patients."""
    if "*" in value or "?" in value:
        raise ValidationError("Wildcards (* or ?) are not allowed here.", code="wildcard")
