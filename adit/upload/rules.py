"""The de-identification rules of an upload: exported to the browser, checked again on arrival.

One source of truth
-------------------
The browser (``static/upload/deidentify.js``) pseudonymizes each file before it is sent. Its
rule *data* is not written in JavaScript: :func:`browser_rules` exports ADIT's PS3.15 Table
E.1-1 (:mod:`adit.core.dicom.deid_profile`) with the actions that apply to an upload (the Basic
Profile plus Retain Longitudinal Temporal Information with Modified Dates, so that dates are
shifted per patient), the list of free-text attributes known to be safe, the attributes whose
UIDs name kinds of things, and the method the instances record. The page embeds it with
``json_script``; the JavaScript ports only the *logic* of
:class:`adit.core.dicom.pseudonymizer.Pseudonymizer` (its ``_decide``/``_resolve``), and says
there where it differs.

The server never trusts the browser: :func:`check_instance` walks every received file with the
server-side pseudonymizer's own decisions and refuses a file that still carries an attribute
the profile removes or empties, a private attribute, a UID not replaced, or another identity
than the job's pseudonym.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from pydicom import Dataset
from pydicom._dicom_dict import DicomDictionary
from pydicom._uid_dict import UID_dictionary
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.multival import MultiValue

from adit.core.dicom.deid_profile import (
    _REPEATING_ROWS,
    BURNED_IN_PRONE_SOP_CLASSES,
    IDENTIFYING_VRS,
    PROFILE_ROWS,
    SAFE_TEXT_KEYWORDS,
    burned_in_annotation_risk,
    option_columns,
    parse_options,
)
from adit.core.dicom.pseudonymizer import Pseudonymizer

from .models import UPLOAD_DEID_OPTIONS

UID_ROOT = "2.25."
"""The browser's new UIDs: ``2.25.<decimal of 128 bits of HMAC-SHA256(secret, original)>``."""


@functools.cache
def _pseudonymizer() -> Pseudonymizer:
    # Only its decisions are used (no seed matters for them).
    return Pseudonymizer(seed="decisions-only", options=UPLOAD_DEID_OPTIONS)


def _hex(tag: int) -> str:
    return f"{tag:08X}"


def browser_rules() -> dict[str, Any]:
    """The rule data the page's de-identifier applies (JSON-serializable)."""
    columns = option_columns(parse_options(UPLOAD_DEID_OPTIONS))
    words, codes, temporal = _pseudonymizer()._method_elements()
    keep_uid_tags = sorted(
        _hex(tag)
        for tag, (vr, _vm, _name, _retired, keyword) in DicomDictionary.items()
        if vr == "UI" and (keyword.endswith("ClassUID") or keyword == "TransferSyntaxUID")
    )
    safe_text_tags = sorted(
        _hex(tag) for tag, entry in DicomDictionary.items() if entry[4] in SAFE_TEXT_KEYWORDS
    )
    from adit.core.dicom.pseudonymizer import (
        _DUMMY_DATES,
        _FILE_META_IDENTIFYING,
        _GENERIC_DATE_ROW,
    )

    return {
        "profile": "DICOM PS3.15 Table E.1-1, Basic Profile + Retain Modified Dates",
        "rows": {_hex(tag): row.action(columns) for tag, row in PROFILE_ROWS.items()},
        "repeating": [
            [group, element, row.action(columns)]
            for (group, element), row in sorted(_REPEATING_ROWS.items())
        ],
        "genericDateAction": _GENERIC_DATE_ROW.action(columns),
        "identifyingVrs": sorted(IDENTIFYING_VRS),
        "safeTextTags": safe_text_tags,
        "keepUidTags": keep_uid_tags,
        "dummyDates": _DUMMY_DATES,
        "fileMetaIdentifying": [_hex(tag) for tag in _FILE_META_IDENTIFYING],
        "method": {"words": words, "codes": codes, "temporal": temporal},
        "uidRoot": UID_ROOT,
        # Left out in the browser, as `InstanceTransformer` leaves them out on the server.
        "burnedInProneSopClasses": dict(BURNED_IN_PRONE_SOP_CLASSES),
        "excludeModalities": [m.upper() for m in settings.EXCLUDE_MODALITIES],
    }


@dataclass
class Refusal(Exception):
    """A received file that may not be stored; `attribute` names the offending one."""

    reason: str
    attribute: str = ""
    status: int = 400

    def __str__(self) -> str:
        return self.reason

    def as_json(self) -> dict[str, str]:
        return {"error": self.reason, "attribute": self.attribute}


@functools.lru_cache(maxsize=4096)
def _name(tag: int) -> str:
    keyword = keyword_for_tag(tag)
    text = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    return f"{keyword} {text}" if keyword else text


def _is_empty(value) -> bool:
    return (
        value is None
        or value == ""
        or value == b""
        or (isinstance(value, list | MultiValue) and len(value) == 0)
    )


def _values(value) -> list[str]:
    if isinstance(value, list | tuple | MultiValue):
        return [str(v) for v in value]
    return [str(value)]


def check_instance(ds: Dataset, pseudonym: str) -> None:
    """Refuse a file the browser should have de-identified but did not (fully).

    Raises:
        Refusal: naming the first attribute that breaks the rules.
    """
    patient_id = str(ds.get("PatientID", "") or "")
    if patient_id != pseudonym:
        raise Refusal(
            f"PatientID (0010,0020) is not the job's pseudonym {pseudonym!r}: the file was not "
            "pseudonymized.",
            "PatientID",
        )
    patient_name = str(ds.get("PatientName", "") or "")
    if patient_name != pseudonym:
        raise Refusal(
            f"PatientName (0010,0010) is not the job's pseudonym {pseudonym!r}: the file was "
            "not pseudonymized.",
            "PatientName",
        )
    if str(ds.get("PatientIdentityRemoved", "") or "").strip().upper() != "YES":
        raise Refusal(
            "PatientIdentityRemoved (0012,0062) is not YES: the file was not de-identified.",
            "PatientIdentityRemoved",
        )
    modality = str(ds.get("Modality", "") or "").upper()
    if modality in {m.upper() for m in settings.EXCLUDE_MODALITIES}:
        raise Refusal(
            f"Instances of modality {modality} are not uploaded (EXCLUDE_MODALITIES): reports "
            "and presentation states often name the patient in free text.",
            "Modality",
        )
    risk = burned_in_annotation_risk(
        str(ds.get("BurnedInAnnotation", "") or ""), str(ds.get("SOPClassUID", "") or "")
    )
    if risk:
        raise Refusal(
            f"The instance may carry burned-in identifying text ({risk}); it is not uploaded.",
            "BurnedInAnnotation",
        )
    _walk(ds, 0, "")


# What the pseudonymizer writes after applying the table (the pseudonym, the record of the
# de-identification, the trial protocol): checked by value above, not by the table's action.
_WRITTEN_AFTER_THE_TABLE = frozenset(
    {
        0x00100010,  # PatientName
        0x00100020,  # PatientID
        0x00120062,  # PatientIdentityRemoved
        0x00120063,  # DeidentificationMethod
        0x00120064,  # DeidentificationMethodCodeSequence
        0x00280303,  # LongitudinalTemporalInformationModified
        0x00120020,  # ClinicalTrialProtocolID
        0x00120021,  # ClinicalTrialProtocolName
    }
)


def _walk(ds: Dataset, mode: int, path: str) -> None:
    pseudonymizer = _pseudonymizer()
    # Unconverted elements: most are kept whatever their value, and converting every value
    # (pydicom does so when iterating a data set) was most of the time a file's check took.
    for element in ds.elements():
        tag = int(element.tag)
        where = f"{path}{_name(tag)}"
        if not path and tag in _WRITTEN_AFTER_THE_TABLE:
            continue
        if tag >> 16 & 1:
            raise Refusal(
                f"The file carries the private attribute {where}; the Basic Profile removes "
                "every private attribute.",
                where,
            )
        vr = element.VR
        if vr is None or vr == "UN":
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                vr = None
        # The server-side pseudonymizer's own decision for this attribute (same table, same
        # fail-closed rules); what it removes or empties must not arrive.
        decision = pseudonymizer._decide(tag, vr, mode)
        # Converted only where the value matters.
        value = ds[tag].value if decision != "K" and decision != "X" else None
        if decision == "X":
            if tag & 0xFFFF == 0:
                continue  # a group length says nothing about anyone
            raise Refusal(f"The file carries {where}, which the Basic Profile removes.", where)
        if decision == "Z":
            if not _is_empty(value):
                raise Refusal(
                    f"{where} must be empty under the Basic Profile but has a value.", where
                )
        elif decision == "U":
            for uid in _values(value) if not _is_empty(value) else []:
                if not uid.startswith(UID_ROOT) and uid not in UID_dictionary:
                    raise Refusal(
                        f"{where} holds a UID that was not replaced (the browser's UIDs start "
                        f"with {UID_ROOT}).",
                        where,
                    )
        elif decision.startswith("SQ"):
            for index, item in enumerate(value or []):
                _walk(item, int(decision[2:]), f"{where}[{index}] > ")
