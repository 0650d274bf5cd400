"""Query and result datasets of the DICOM layer: typed, validated access to DICOM attributes.

`QueryDataset` is what the operator and connectors take: a C-FIND identifier that converts
Python values (dates, ranges, "Last, First" names, lists) to DICOM and rejects what it cannot
represent with an error naming the keyword. `ResultDataset` wraps what a server answered and
offers typed properties that never raise on a malformed value (they return ``None``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.multival import MultiValue

QUERY_LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")

QUERY_KEYWORDS = (
    "QueryRetrieveLevel",
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "AccessionNumber",
    "StudyDescription",
    "StudyDate",
    "StudyTime",
    "ModalitiesInStudy",
    "SeriesInstanceUID",
    "SeriesDescription",
    "SeriesNumber",
    "Modality",
    "SOPInstanceUID",
)
"""Keywords `QueryDataset.create` accepts; `from_dict` accepts any DICOM keyword."""

# Maximum value lengths per VR (PS3.5 6.2); PN is per component group.
_MAX_LENGTH = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "PN": 64, "UI": 64, "AS": 4, "IS": 12}

_DATE_PATTERN = r"\d{8}|\d{4}-\d{2}-\d{2}|\d{2}\.\d{2}\.\d{4}"
_DATE_RANGE = re.compile(rf"^\s*({_DATE_PATTERN})?\s*-\s*({_DATE_PATTERN})?\s*$")
_TIME_PATTERN = r"\d{2}(?::?\d{2}(?::?\d{2}(?:\.\d{1,6})?)?)?"
_TIME_RANGE = re.compile(rf"^\s*({_TIME_PATTERN})?\s*-\s*({_TIME_PATTERN})?\s*$")
_DATETIME_RANGE = re.compile(r"^\s*(\d{4,14}(?:\.\d{1,6})?)?\s*-\s*(\d{4,14}(?:\.\d{1,6})?)?\s*$")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


# --- pure helpers ---------------------------------------------------------------------------


def person_name_to_dicom(name: str, add_wildcards: bool = False) -> str:
    """Converts "Last, First" (as people type it) to DICOM's "Last^First".

    Names that already use ``^`` or have no comma are kept. With `add_wildcards`, each given
    component gets a trailing ``*`` (``Last*^First*``) so a prefix matches.
    """
    name = name.strip()
    if "^" in name or "," not in name:
        components = name.split("^") if name else []
    else:
        components = [part.strip() for part in name.split(",")]
    if add_wildcards:
        components = [c if not c or c.endswith("*") else f"{c}*" for c in components]
    return "^".join(components)


@lru_cache(maxsize=256)
def wildcard_to_regex(pattern: str, case_sensitive: bool = True) -> re.Pattern[str]:
    """Compiles a DICOM wildcard pattern (``*`` any run, ``?`` one character) to a regex.

    The regex is meant for `fullmatch`: the pattern has to match the *whole* value, as DICOM
    matching does (``CT*`` matches ``CT Thorax`` but ``Thorax`` does not match ``CT Thorax``).
    """
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), 0 if case_sensitive else re.IGNORECASE | re.DOTALL)


def matches_wildcard(pattern: str | None, value: str | None, case_sensitive: bool = True) -> bool:
    """Whether `value` matches the DICOM wildcard `pattern` as a whole; empty matches all."""
    if not pattern or pattern == "*":
        return True
    return wildcard_to_regex(pattern, case_sensitive).fullmatch(value or "") is not None


def has_wildcards(value: str) -> bool:
    return "*" in value or "?" in value


def parse_date(value: str) -> dt.date:
    """Parses ``YYYYMMDD``, ``YYYY-MM-DD`` or ``DD.MM.YYYY``; raises ValueError otherwise."""
    value = value.strip()
    for fmt in ("%Y%m%d", "%Y-%m-%d", "%d.%m.%Y"):
        try:
            return dt.datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"not a date: {value!r} (expected YYYYMMDD, YYYY-MM-DD or DD.MM.YYYY)")


def parse_time(value: str) -> dt.time:
    """Parses DICOM TM (``HH``, ``HHMM``, ``HHMMSS[.ffffff]``) or ``HH:MM[:SS]``."""
    text = value.strip().replace(":", "")
    match = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?", text)
    if not match:
        raise ValueError(f"not a time: {value!r} (expected HHMMSS or HH:MM:SS)")
    hour, minute, second, fraction = match.groups()
    return dt.time(
        int(hour),
        int(minute or 0),
        int(second or 0),
        int((fraction or "0").ljust(6, "0")),
    )


def _format_date(value: dt.date) -> str:
    return value.strftime("%Y%m%d")


def _format_time(value: dt.time) -> str:
    text = value.strftime("%H%M%S")
    return f"{text}.{value.microsecond:06d}" if value.microsecond else text


def _format_datetime(value: dt.datetime) -> str:
    text = value.strftime("%Y%m%d%H%M%S")
    return f"{text}.{value.microsecond:06d}" if value.microsecond else text


def _range(start: str, end: str) -> str:
    # A fully open range is no restriction at all: universal matching.
    return "" if not start and not end else f"{start}-{end}"


def _convert_da(keyword: str, value: Any) -> str:
    if isinstance(value, dt.datetime):
        return _format_date(value.date())
    if isinstance(value, dt.date):
        return _format_date(value)
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"{keyword}: a date range needs (start, end), got {value!r}")
        start, end = ("" if v is None or v == "" else _convert_da(keyword, v) for v in value)
        return _range(start, end)
    if isinstance(value, str):
        text = value.strip()
        try:
            return _format_date(parse_date(text))
        except ValueError:
            pass
        match = _DATE_RANGE.fullmatch(text)
        if match:
            start, end = (_format_date(parse_date(v)) if v else "" for v in match.groups())
            return _range(start, end)
    raise ValueError(f"{keyword}: invalid date or date range {value!r}")


def _convert_tm(keyword: str, value: Any) -> str:
    if isinstance(value, dt.datetime):
        return _format_time(value.time())
    if isinstance(value, dt.time):
        return _format_time(value)
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"{keyword}: a time range needs (start, end), got {value!r}")
        start, end = ("" if v is None or v == "" else _convert_tm(keyword, v) for v in value)
        return _range(start, end)
    if isinstance(value, str):
        text = value.strip()
        try:
            return _format_time(parse_time(text))
        except ValueError:
            pass
        match = _TIME_RANGE.fullmatch(text)
        if match:
            start, end = (_format_time(parse_time(v)) if v else "" for v in match.groups())
            return _range(start, end)
    raise ValueError(f"{keyword}: invalid time or time range {value!r}")


def _convert_dt(keyword: str, value: Any) -> str:
    if isinstance(value, dt.datetime):
        return _format_datetime(value)
    if isinstance(value, dt.date):
        return _format_date(value)
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"{keyword}: a datetime range needs (start, end), got {value!r}")
        start, end = ("" if v is None or v == "" else _convert_dt(keyword, v) for v in value)
        return _range(start, end)
    if isinstance(value, str):
        match = _DATETIME_RANGE.fullmatch(value)
        if match and "-" in value:
            return _range(*(v or "" for v in match.groups()))
        if re.fullmatch(r"\d{4,14}(\.\d{1,6})?", value.strip()):
            return value.strip()
    raise ValueError(f"{keyword}: invalid datetime or datetime range {value!r}")


def _check_length(keyword: str, vr: str, value: str) -> None:
    limit = _MAX_LENGTH.get(vr)
    if limit is None:
        return
    parts = value.split("=") if vr == "PN" else [value]
    for part in parts:
        if len(part) > limit:
            raise ValueError(
                f"{keyword}: value {value!r} is longer than {limit} characters (VR {vr})"
            )


def _convert_string(keyword: str, vr: str, value: Any) -> str | list[str]:
    if isinstance(value, list | tuple | set | frozenset | MultiValue):
        items = [str(v).strip() for v in value]
        for item in items:
            _check_string(keyword, vr, item)
        return items
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{keyword}: expected text, got {type(value).__name__} {value!r}")
    text = str(value).strip()
    if vr == "PN":
        text = person_name_to_dicom(text)
    if "\\" in text:
        return _convert_string(keyword, vr, text.split("\\"))
    _check_string(keyword, vr, text)
    return text


def _check_string(keyword: str, vr: str, text: str) -> None:
    _check_length(keyword, vr, text)
    if vr == "UI" and text and not _UID.fullmatch(text):
        raise ValueError(f"{keyword}: {text!r} is not a valid UID (digits and dots only)")
    if vr == "CS" and text and not re.fullmatch(r"[A-Za-z0-9 _*?]*", text):
        raise ValueError(f"{keyword}: {text!r} is not a valid code string")


def _convert_number(keyword: str, vr: str, value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if not text or has_wildcards(text):
            return text
        value = text
    try:
        return int(value) if vr in ("IS", "US", "UL", "SS", "SL") else float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{keyword}: {value!r} is not a number") from None


def convert_query_value(keyword: str, value: Any) -> Any:
    """Converts a Python value to what pydicom stores for `keyword`; ValueError if impossible.

    ``None`` and ``""`` become an empty value (universal matching / return key).
    """
    vr = _vr_of(keyword)
    if value is None or (isinstance(value, str) and not value.strip()):
        return ""
    if keyword == "QueryRetrieveLevel":
        level = str(value).strip().upper()
        if level not in QUERY_LEVELS:
            raise ValueError(f"QueryRetrieveLevel: {value!r} is not one of {QUERY_LEVELS}")
        return level
    if vr == "DA":
        return _convert_da(keyword, value)
    if vr == "TM":
        return _convert_tm(keyword, value)
    if vr == "DT":
        return _convert_dt(keyword, value)
    if vr in ("IS", "DS", "US", "UL", "SS", "SL", "FL", "FD"):
        if isinstance(value, list | tuple):
            return [_convert_number(keyword, vr, v) for v in value]
        return _convert_number(keyword, vr, value)
    if vr in ("SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        raise ValueError(f"{keyword}: attributes of VR {vr} cannot be used in a query")
    return _convert_string(keyword, vr, value)


def _vr_of(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"Unknown DICOM keyword {keyword!r}")
    return dictionary_VR(tag).split(" or ")[0]


# --- query ----------------------------------------------------------------------------------


class QueryDataset:
    """A C-FIND / QIDO-RS identifier with validated values.

    Build it with `create` (a fixed set of keywords) or `from_dict` (any DICOM keyword).
    Omitted keywords are not part of the query; ``None`` gives an empty element (a return key).
    """

    def __init__(self, dataset: Dataset | None = None) -> None:
        self._ds = dataset if dataset is not None else Dataset()

    @classmethod
    def create(cls, **kwargs: Any) -> QueryDataset:
        """Builds a query from the keywords in `QUERY_KEYWORDS`; others raise ValueError."""
        unknown = [k for k in kwargs if k not in QUERY_KEYWORDS]
        if unknown:
            raise ValueError(
                f"Unsupported query keyword(s): {', '.join(unknown)}. "
                f"Allowed: {', '.join(QUERY_KEYWORDS)}"
            )
        return cls.from_dict(kwargs)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], **extra: Any) -> QueryDataset:
        """Builds a query from DICOM keywords; an unknown keyword raises ValueError naming it."""
        query = cls()
        for keyword, value in {**values, **extra}.items():
            query.set(keyword, value)
        return query

    @property
    def dataset(self) -> Dataset:
        return self._ds

    def copy(self) -> QueryDataset:
        return QueryDataset(Dataset(self._ds))

    def set(self, keyword: str, value: Any) -> None:
        setattr(self._ds, keyword, convert_query_value(keyword, value))

    def ensure_elements(self, *keywords: str) -> QueryDataset:
        """Adds empty return keys for `keywords` not yet in the query (returns self)."""
        for keyword in keywords:
            if keyword not in self._ds:
                self.set(keyword, None)
        return self

    def has(self, keyword: str) -> bool:
        return keyword in self._ds

    def get(self, keyword: str, default: Any = None) -> Any:
        """The raw value of `keyword` ('' for a return key), or `default` when absent."""
        if keyword not in self._ds:
            return default
        value = self._ds[keyword].value
        if value is None:
            return ""
        if isinstance(value, MultiValue):
            return [str(v) for v in value]
        return str(value) if not isinstance(value, int | float) else value

    def get_str(self, keyword: str) -> str:
        """The value as text ('' when absent or empty; multi-values joined by backslash)."""
        value = self.get(keyword, "")
        if isinstance(value, list):
            return "\\".join(value)
        return str(value)

    def remove(self, keyword: str) -> None:
        if keyword in self._ds:
            delattr(self._ds, keyword)

    def is_concrete(self, keyword: str) -> bool:
        """Whether `keyword` holds one exact value (present, not empty, no wildcard, no list)."""
        value = self.get(keyword)
        return isinstance(value, str) and bool(value) and not has_wildcards(value)

    @property
    def level(self) -> str:
        return self.get_str("QueryRetrieveLevel")

    def keywords(self) -> list[str]:
        return [elem.keyword for elem in self._ds if elem.keyword]

    def dictify(self) -> dict[str, str]:
        """The query as DICOMweb (QIDO-RS) parameters; bare wildcards become empty values."""
        result: dict[str, str] = {}
        for elem in self._ds:
            if elem.tag.is_private or not elem.keyword:
                continue
            if elem.VR == "SQ":
                raise ValueError(f"{elem.keyword}: sequences cannot be sent as QIDO-RS parameters")
            if elem.keyword == "PixelData":
                raise ValueError("PixelData cannot be part of a query")
            value = self.get(elem.keyword, "")
            if isinstance(value, list):
                text = ",".join(value)
            else:
                text = "" if value is None else str(value)
            if text in ("*", "?"):
                text = ""
            result[elem.keyword] = text
        return result

    def get_search_filters_and_fields(self) -> tuple[dict[str, str], list[str]]:
        """Splits into QIDO-RS `search_filters` (non-empty values) and `fields` (every key)."""
        values = self.dictify()
        values.pop("QueryRetrieveLevel", None)
        filters = {k: v for k, v in values.items() if v}
        return filters, list(values)

    def __repr__(self) -> str:
        # Keywords only: values can be PHI.
        return f"QueryDataset(level={self.level or '?'}, keys={self.keywords()})"


# --- results --------------------------------------------------------------------------------


class ResultDataset:
    """A C-FIND / QIDO-RS result with typed accessors that never raise on malformed values."""

    def __init__(self, dataset: Dataset) -> None:
        self._ds = dataset

    @property
    def dataset(self) -> Dataset:
        return self._ds

    def get(self, keyword: str, default: Any = None) -> Any:
        """The raw pydicom value, or `default` when absent or undecodable."""
        try:
            if keyword not in self._ds:
                return default
            value = self._ds[keyword].value
        except Exception:
            return default
        return default if value is None else value

    def get_str(self, keyword: str) -> str:
        value = self.get(keyword, "")
        try:
            if isinstance(value, MultiValue | list):
                return "\\".join(str(v) for v in value)
            return str(value).strip()
        except Exception:
            return ""

    def get_int(self, keyword: str) -> int | None:
        value = self.get(keyword)
        try:
            if isinstance(value, MultiValue | list):
                value = value[0]
            return int(str(value).strip()) if value is not None and str(value).strip() else None
        except (TypeError, ValueError, IndexError):
            try:
                return int(float(str(value)))
            except (TypeError, ValueError):
                return None

    def get_date(self, keyword: str) -> dt.date | None:
        value = self.get(keyword)
        if isinstance(value, dt.date):
            return value
        try:
            return parse_date(str(value)) if value else None
        except ValueError:
            return None

    def get_time(self, keyword: str) -> dt.time | None:
        value = self.get(keyword)
        if isinstance(value, dt.time):
            return value
        try:
            return parse_time(str(value)) if value else None
        except ValueError:
            return None

    def get_list(self, keyword: str) -> list[str]:
        value = self.get(keyword)
        if value is None or value == "":
            return []
        if isinstance(value, MultiValue | list | tuple):
            return [str(v).strip() for v in value if str(v).strip()]
        return [v.strip() for v in re.split(r"[\\,]", str(value)) if v.strip()]

    # Patient
    @property
    def PatientID(self) -> str:
        return self.get_str("PatientID")

    @property
    def PatientName(self) -> str:
        return self.get_str("PatientName")

    @property
    def PatientBirthDate(self) -> dt.date | None:
        return self.get_date("PatientBirthDate")

    @property
    def PatientSex(self) -> str:
        return self.get_str("PatientSex")

    @property
    def NumberOfPatientRelatedStudies(self) -> int | None:
        return self.get_int("NumberOfPatientRelatedStudies")

    # Study
    @property
    def StudyInstanceUID(self) -> str:
        return self.get_str("StudyInstanceUID")

    @property
    def AccessionNumber(self) -> str:
        return self.get_str("AccessionNumber")

    @property
    def StudyDate(self) -> dt.date | None:
        return self.get_date("StudyDate")

    @property
    def StudyTime(self) -> dt.time | None:
        return self.get_time("StudyTime")

    @property
    def StudyDescription(self) -> str:
        return self.get_str("StudyDescription")

    @property
    def ModalitiesInStudy(self) -> list[str]:
        return self.get_list("ModalitiesInStudy")

    @property
    def NumberOfStudyRelatedSeries(self) -> int | None:
        return self.get_int("NumberOfStudyRelatedSeries")

    @property
    def NumberOfStudyRelatedInstances(self) -> int | None:
        return self.get_int("NumberOfStudyRelatedInstances")

    # Series
    @property
    def SeriesInstanceUID(self) -> str:
        return self.get_str("SeriesInstanceUID")

    @property
    def SeriesDescription(self) -> str:
        return self.get_str("SeriesDescription")

    @property
    def SeriesNumber(self) -> int | None:
        return self.get_int("SeriesNumber")

    @property
    def Modality(self) -> str:
        return self.get_str("Modality")

    @property
    def NumberOfSeriesRelatedInstances(self) -> int | None:
        return self.get_int("NumberOfSeriesRelatedInstances")

    # Image
    @property
    def SOPInstanceUID(self) -> str:
        return self.get_str("SOPInstanceUID")

    @property
    def SOPClassUID(self) -> str:
        return self.get_str("SOPClassUID")

    @property
    def InstanceNumber(self) -> int | None:
        return self.get_int("InstanceNumber")

    def __repr__(self) -> str:
        return f"ResultDataset(keys={[e.keyword for e in self._ds if e.keyword]})"


def results_from_qido(items: Iterable[Mapping[str, Any]]) -> list[ResultDataset]:
    """Turns QIDO-RS JSON objects into results; an undecodable object becomes an empty result."""
    results = []
    for item in items:
        try:
            ds = Dataset.from_json(dict(item))
        except Exception:
            ds = Dataset()
            for tag, element in item.items():
                try:
                    ds.update(Dataset.from_json({tag: element}))
                except Exception:
                    continue  # one malformed attribute must not hide the others
        results.append(ResultDataset(ds))
    return results
