"""Pseudonymization of DICOM instances by the PS3.15 Basic Profile, and trial protocol tagging.

What is done to an instance
---------------------------
:class:`Pseudonymizer` applies the Basic Application Level Confidentiality Profile of DICOM
PS3.15 Annex E with the options a job chose; the profile's Table E.1-1 and the options are data
in :mod:`.deid_profile`. Every element is visited, in nested sequences too: table attributes get
their action (dummy, empty, removed, kept, cleaned, new UID), all private elements are removed
(Retain Safe Private keeps the few listed as safe), curves and overlay data are removed.

Fail closed: an element the table does not list is kept only when it cannot carry identity. Names
(PN) and free text (LO, SH, ST, LT, UT, UC, UR) outside a short list of technical and coded
attributes are removed, other UIDs are replaced, dates outside the table follow the date options,
and elements of unknown VR are removed. PatientID and PatientName become the pseudonym. Each
instance then records what was done: PatientIdentityRemoved=YES, DeidentificationMethod (the
profile and options in words), DeidentificationMethodCodeSequence (CID 7050 codes) and
LongitudinalTemporalInformationModified.

"Clean" (Clean Descriptors, Clean Structured Content, and the cleaned patient characteristics)
keeps free text after removing the identifying values the instance itself names: the parts of
every person name, the patient's IDs, accession number, birth date, addresses and institution.
Text that names a patient only by values the instance does not hold cannot be recognized; that
is the residual risk the standard accepts for these options.

Consistency across tasks, jobs and processes
--------------------------------------------
Replacement values come from dicognito (UIDs, dummy names, the date shift), whose generators are
pure functions of their seed (``md5(seed + original value)``). The pseudonymizer seeds them per
*original* PatientID with ``HMAC-SHA256(seed, PatientID)``, so the same (seed, patient) always
gives the same UIDs and the same date shift, whichever task, job, worker or process handles which
series, and another seed gives unrelated values. ADIT derives the seed from the installation's
secret and the pseudonym (`adit.core.deidentification.pseudonymization_seed`): the same patient
under the same pseudonym links up across every job, app and API call of one installation.

Work done once per study, not per instance
------------------------------------------
The instances of a study repeat each other: the same patient, study, institution, physicians,
dates and mostly the same sequences. Decoding each of these elements, asking dicognito for its
replacement and encoding the result again cost about 3 ms per instance, more than a C-STORE of
its half megabyte of pixels. So the walk keeps, per patient, what each top-level element *as
received* (its bytes, VR, encoding and character set) became, as the raw bytes pydicom would
write for the result (`encoding.raw_element`), and gives the next instance with the same element
those very bytes. A replacement that reads another element has it in its key as well: a name
reads the PatientSex (dicognito picks first names by it), a date is shifted together with its
time, cleaned text depends on the instance's identifying values. Only elements as received take
part (an instance built in memory is walked element by element as before), and the result is the
same byte for byte (`test_pseudonymizer_equivalence.py` checks a varied corpus against the
digests of the plain walk). The elements every instance gets (pseudonym, method, codes) are built
once per pseudonymizer too. Unchanged and reused elements stay raw, so `encoding.encode_dataset`
writes the instance with one copy of its pixels.

What was replaced is returned by :meth:`Pseudonymizer.pseudonymize` as a
:class:`PseudonymizedInstance` (original and new PatientID, Study, Series and SOP Instance UID);
:class:`InstanceTransformer` hands each one to its ``on_pseudonymized`` callback and collects the
study and series pairs in ``uid_map``, for whoever keeps the mapping for the trusted party.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import cast

from dicognito.anonymizer import Anonymizer
from dicognito.datetimeanonymizer import DateTimeAnonymizer
from dicognito.element_anonymizer import ElementAnonymizer
from dicognito.pnanonymizer import PNAnonymizer
from dicognito.randomizer import Randomizer
from dicognito.uianonymizer import UIAnonymizer
from pydicom import DataElement
from pydicom._uid_dict import UID_dictionary
from pydicom.charset import default_encoding
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID

from .deid_profile import (
    BASIC_PROFILE_CODE,
    DATE_ROW_OPTIONS,
    DEFAULT_SAFE_PRIVATE_TAGS,
    IDENTIFYING_VRS,
    OPTION_CODES,
    SAFE_TEXT_KEYWORDS,
    DeidOption,
    ProfileRow,
    burned_in_annotation_risk,
    option_columns,
    parse_options,
    profile_row,
)
from .dimse import (
    SERIES_INSTANCE_UID,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    STUDY_INSTANCE_UID,
    forget_received_encoding,
    uid_of,
)
from .encoding import (
    MEDIA_STORAGE_SOP_CLASS_UID,
    MEDIA_STORAGE_SOP_INSTANCE_UID,
    raw_element,
    ui_element,
)

DEFAULT_EXCLUDE_MODALITIES: tuple[str, ...] = ("PR", "SR")
"""Modalities skipped when pseudonymizing: reports and presentation states often carry names
in free text that no tag-based pseudonymizer can clean."""

PSEUDONYM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
# 36**49 < 2**256 <= 36**50: a HMAC-SHA256 digest yields 49 uniformly usable base-36 digits.
MAX_GENERATED_PSEUDONYM_LENGTH = 49
MAX_LO_LENGTH = 64
_FORBIDDEN_CHARS = re.compile(r"[\\\x00-\x1f\x7f]")

BURNED_IN_EXCLUSION_TEXT = "excluded: may carry burned-in identifying text"
"""How a task lists the instances left out for their pixels (see `InstanceTransformer`)."""


class PseudonymizationError(Exception):
    """A dataset could not be pseudonymized (the message names the instance, never the patient)."""


def generate_pseudonym(salt: str, patient_id: str, length: int = 14) -> str:
    """Derives a pseudonym (A–Z, 0–9) from a secret salt and a patient ID.

    The pseudonym is the base-36 representation of ``HMAC-SHA256(salt, patient_id)``, so it is
    deterministic for the same salt and patient, unguessable without the salt, and different for
    another salt.

    Args:
        salt: the secret salt (non-empty).
        patient_id: the original PatientID (non-empty).
        length: number of characters, 1 to 49.

    Raises:
        ValueError: on an empty salt or patient ID, or a length out of range.
    """
    if not salt:
        raise ValueError("generate_pseudonym: the salt must not be empty")
    if not patient_id:
        raise ValueError("generate_pseudonym: the patient ID must not be empty")
    if not 1 <= length <= MAX_GENERATED_PSEUDONYM_LENGTH:
        raise ValueError(
            f"generate_pseudonym: length must be between 1 and {MAX_GENERATED_PSEUDONYM_LENGTH}, "
            f"got {length}"
        )
    digest = hmac.new(salt.encode(), patient_id.encode(), hashlib.sha256).digest()
    number = int.from_bytes(digest, "big")
    chars = []
    for _ in range(length):
        number, index = divmod(number, len(PSEUDONYM_ALPHABET))
        chars.append(PSEUDONYM_ALPHABET[index])
    return "".join(chars)


def validate_lo_value(value: str, field_name: str) -> str:
    """Checks a value that goes into a LO element (pseudonym, trial protocol ID/name).

    Returns:
        The value stripped of surrounding whitespace.

    Raises:
        ValueError: if it is empty, longer than 64 characters, or has a backslash or a control
            character.
    """
    stripped = value.strip()
    if not stripped:
        raise ValueError(f"{field_name} must not be empty")
    if len(stripped) > MAX_LO_LENGTH:
        raise ValueError(f"{field_name} must be at most {MAX_LO_LENGTH} characters long")
    if _FORBIDDEN_CHARS.search(stripped):
        raise ValueError(f"{field_name} must not contain a backslash or control characters")
    return stripped


def should_skip(
    ds: Dataset, exclude_modalities: Iterable[str] = DEFAULT_EXCLUDE_MODALITIES
) -> bool:
    """Tells whether an instance's modality is one of ``exclude_modalities`` (case-insensitive)."""
    excluded = {modality.strip().upper() for modality in exclude_modalities if modality.strip()}
    modality = str(_peek(ds, _MODALITY) or "").strip().upper()
    return bool(modality) and modality in excluded


_MODALITY = BaseTag(0x00080060)
_BURNED_IN_ANNOTATION = BaseTag(0x00280301)


def _peek(ds: Dataset, tag: BaseTag) -> object:
    """An element's value (None when absent) as ``ds.get`` gives it, but without storing the
    converted element: one that stays raw is sent or encoded as the bytes it arrived as."""
    element = ds._dict.get(tag)
    if element is None:
        return None
    if type(element) is RawDataElement:
        return convert_raw_data_element(element, encoding=ds._character_set, ds=ds).value
    return element.value


class _TolerantDateTimeAnonymizer(ElementAnonymizer):
    """Shifts dates like dicognito but blanks values it cannot parse instead of failing.

    Archives are full of malformed DA/DT/TM values; a pseudonymizer that crashes on them stops a
    whole transfer, and one that keeps them leaks the original date.
    """

    def __init__(self, inner: DateTimeAnonymizer) -> None:
        self._inner = inner

    def __call__(self, dataset: Dataset, data_element: DataElement) -> bool:
        if data_element.VR not in ("DA", "DT"):
            return False
        try:
            return self._inner(dataset, data_element)
        except (ValueError, TypeError, IndexError):
            data_element.value = ""
            if data_element.VR == "DA":
                time_keyword = data_element.keyword.replace("Date", "Time")
                if time_keyword in dataset:
                    dataset[time_keyword].value = ""
            return True

    def describe_actions(self):
        yield "Blank DA/DT (and matching TM) values that cannot be parsed"


@dataclass(frozen=True)
class PseudonymizedInstance:
    """What the pseudonymizer replaced in one instance: the pairs a pseudonym mapping records.

    Each ``original_*`` is the value before, the plain name the value after pseudonymization
    ("" when the instance had none).
    """

    original_patient_id: str
    pseudonym: str
    original_study_uid: str
    study_uid: str
    original_series_uid: str
    series_uid: str
    original_sop_instance_uid: str
    sop_instance_uid: str


# Modes of the walk: as the table says; inside a sequence the table replaces by a dummy (its
# text becomes dummy values); inside one it cleans (its text is cleaned).
_NORMAL, _DUMMY, _CLEAN = 0, 1, 2
_GENERIC_DATE_ROW = ProfileRow(-1, "X", DATE_ROW_OPTIONS)
_DATE_VRS = frozenset({"DA", "DT", "TM"})
_DUMMY_DATES = {"DA": "19000101", "TM": "000000", "DT": "19000101000000"}
_LONG_TEXT_VRS = frozenset({"ST", "LT", "UT", "UC", "UR"})
# File meta elements naming the sending and receiving systems (not in the main data set).
_FILE_META_IDENTIFYING = (0x00020016, 0x00020017, 0x00020018, 0x00020100, 0x00020102)

# Where the identifying values that cleaning removes from text come from.
_NAME_KEYWORDS = (
    "PatientName",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord",
    "RequestingPhysician",
    "ResponsiblePerson",
)
_VALUE_KEYWORDS = (
    "PatientID",
    "OtherPatientIDs",
    "AccessionNumber",
    "StudyID",
    "AdmissionID",
    "MedicalRecordLocator",
    "InstitutionName",
    "InstitutionAddress",
    "PatientAddress",
    "PatientTelephoneNumbers",
)
CLEANED_TEXT = "***"


# --- reusing the work of earlier instances ------------------------------------------------------

# Steps whose result `Pseudonymizer._memoized` keeps (the others are cheap on raw bytes).
_MEMOIZED = frozenset(
    {"U", "NAME", "SHIFT", "ID", "CLEAN", "REMOVED", "DUMMY_DA", "DUMMY_TM", "DUMMY_DT"}
    | {f"SQ{mode}" for mode in (_NORMAL, _DUMMY, _CLEAN)}
)
# All memos of a pseudonymizer are emptied beyond this (counted: the bytes of the elements
# before and after, plus a little for the entry).
_MEMO_LIMIT_BYTES = 32 * 1024 * 1024
_PATIENT_SEX = BaseTag(0x00100040)
_CONVERTED = object()  # the state of an element that is no longer as received
_MISSING = object()


@dataclass(frozen=True)
class _Received:
    """How the instance being walked was encoded when it arrived (Little Endian only)."""

    implicit: bool
    encodings: object  # its SpecificCharacterSet value, as pydicom's writer takes it
    key: tuple


def _received_form(ds: Dataset) -> _Received | None:
    """The encoding `ds` was decoded from, or None when it was not decoded (built in memory) or
    is Big Endian: then every element is worked on as before, nothing is reused."""
    implicit, little = ds.original_encoding
    if implicit is None or not little:
        return None
    encodings = ds.get("SpecificCharacterSet", default_encoding)
    charset = tuple(encodings) if isinstance(encodings, list | MultiValue) else encodings
    return _Received(bool(implicit), encodings, (bool(implicit), charset))


def _state(ds: Dataset, tag: BaseTag) -> object:
    """What a step may read of another element: its bytes as received, None when absent."""
    element = ds._dict.get(tag)
    if element is None:
        return None
    if type(element) is RawDataElement:
        return (element.VR, element.value)
    return _CONVERTED


@functools.lru_cache(maxsize=1024)
def _time_tag_of(date_tag: int) -> BaseTag | None:
    """The TM element dicognito shifts together with a DA element (its keyword's "Time")."""
    time_tag = tag_for_keyword(keyword_for_tag(date_tag).replace("Date", "Time"))
    return None if time_tag is None else BaseTag(time_tag)


def _as_received(
    ds: Dataset, tags: tuple[BaseTag, ...], received: _Received
) -> tuple[tuple[BaseTag, RawDataElement | None], ...] | None:
    """The elements at `tags` as raw elements of the received encoding (converted ones are
    replaced by the bytes pydicom writes for them); None if one cannot be."""
    result: list[tuple[BaseTag, RawDataElement | None]] = []
    elements = ds._dict
    for tag in tags:
        element = elements.get(tag)
        if isinstance(element, DataElement):
            element = raw_element(element, received.implicit, received.encodings)
            if element is None:
                return None
            elements[tag] = element
        result.append((tag, element))
    return tuple(result)


def _text_values(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple | MultiValue):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def identifying_text_pattern(ds: Dataset) -> re.Pattern | None:
    """A pattern of the identifying values ``ds`` names (see the module docstring), or None."""
    tokens: set[str] = set()
    for keyword in _NAME_KEYWORDS:
        for name in _text_values(ds.get(keyword)):
            tokens.update(part for part in re.split(r"[\^=\s,]+", name) if len(part) >= 2)
    for keyword in _VALUE_KEYWORDS:
        for value in _text_values(ds.get(keyword)):
            if len(value.strip()) >= 2:
                tokens.add(value.strip())
    for item in ds.get("OtherPatientIDsSequence") or []:
        tokens.update(v.strip() for v in _text_values(item.get("PatientID")) if len(v) >= 2)
    birth_date = str(ds.get("PatientBirthDate", "") or "").strip()
    if re.fullmatch(r"\d{8}", birth_date):
        y, m, d = birth_date[:4], birth_date[4:6], birth_date[6:]
        tokens.update({birth_date, f"{y}-{m}-{d}", f"{d}.{m}.{y}", f"{m}/{d}/{y}"})
    if not tokens:
        return None
    return _compiled_pattern(frozenset(tokens))


@functools.lru_cache(maxsize=256)
def _compiled_pattern(tokens: frozenset[str]) -> re.Pattern:
    # Every instance of a study names the same people: compiled once per study, not per instance.
    alternatives = "|".join(re.escape(token) for token in sorted(tokens, key=len, reverse=True))
    return re.compile(rf"(?<![0-9A-Za-z])(?:{alternatives})(?![0-9A-Za-z])", re.IGNORECASE)


def _code_sequence(codes: list[tuple[str, str]]) -> Sequence:
    """DeidentificationMethodCodeSequence items (CID 7050, scheme DCM), new for each instance."""
    items = []
    for value, meaning in codes:
        item = Dataset()
        item.add_new(0x00080100, "SH", value)  # CodeValue
        item.add_new(0x00080102, "SH", "DCM")  # CodingSchemeDesignator
        item.add_new(0x00080104, "LO", meaning)  # CodeMeaning
        items.append(item)
    return Sequence(items)


class _PatientGenerators:
    """dicognito's value generators, seeded for one original patient."""

    def __init__(self, seed: str) -> None:
        anonymizer = Anonymizer(seed=seed)
        handlers = anonymizer._element_handlers
        self.uids = next(h for h in handlers if isinstance(h, UIAnonymizer))
        self.names = next(h for h in handlers if isinstance(h, PNAnonymizer))
        self.dates = _TolerantDateTimeAnonymizer(
            next(h for h in handlers if isinstance(h, DateTimeAnonymizer))
        )
        self.randomizer = Randomizer(seed)
        # What elements of this patient's instances became (see `Pseudonymizer._memoized`).
        self.memo: dict[tuple, tuple[tuple[BaseTag, RawDataElement | None], ...] | None] = {}

    def dummy_id(self, value: str) -> str:
        """A consistent dummy for a short text (an ID or label): 8 characters A–Z, 0–9."""
        number = self.randomizer.to_int(value)
        chars = []
        for _ in range(8):
            number, index = divmod(number, len(PSEUDONYM_ALPHABET))
            chars.append(PSEUDONYM_ALPHABET[index])
        return "".join(chars)


class Pseudonymizer:
    """De-identifies datasets in place by the PS3.15 Basic Profile and the chosen options.

    Example:
        >>> pseudonymizer = Pseudonymizer(seed="secret", options=["retain_modified_dates"])
        >>> replaced = pseudonymizer.pseudonymize(ds, "PSEUDO0001")
        >>> replaced.study_uid  # the new StudyInstanceUID
    """

    def __init__(
        self,
        seed: str | None = None,
        options: Iterable[str] = (),
        safe_private_tags: Iterable[tuple[str, int, int]] = DEFAULT_SAFE_PRIVATE_TAGS,
    ) -> None:
        """Creates a pseudonymizer.

        Args:
            seed: makes the output deterministic per original patient; ``None`` = a random seed
                (consistent only within this object).
            options: codes of `DeidOption` (PS3.15 options; ALLOW_BURNED_IN_ANNOTATION is for
                :class:`InstanceTransformer` and changes nothing here).
            safe_private_tags: (private creator, group, element within the block) kept with
                Retain Safe Private.

        Raises:
            ValueError: on an unknown option or contradicting options.
        """
        self._seed = seed if seed is not None else secrets.token_hex(32)
        self.options = parse_options(options)
        self._columns = option_columns(self.options)
        self._safe_private = frozenset(
            (creator.strip().upper(), group, element)
            for creator, group, element in safe_private_tags
        )
        self._keep_safe_private = DeidOption.RETAIN_SAFE_PRIVATE in self.options
        self._cleans_text = bool(
            self.options
            & {
                DeidOption.CLEAN_DESCRIPTORS,
                DeidOption.CLEAN_STRUCTURED_CONTENT,
                DeidOption.RETAIN_PATIENT_CHARACTERISTICS,
            }
        )
        self._generators: dict[str, _PatientGenerators] = {}
        self._decisions: dict[tuple[int, str | None, int], str] = {}
        self._records: dict[tuple, dict[BaseTag, RawDataElement]] = {}
        self._memo_bytes = 0
        self._method = self._method_elements()

    # --- what every instance records -------------------------------------------------------

    def _method_elements(self) -> tuple[list[str], list[tuple[str, str]], str]:
        chosen = [option for option in DeidOption if option in self.options]
        codes = [BASIC_PROFILE_CODE] + [OPTION_CODES[o] for o in chosen if o in OPTION_CODES]
        words = ["DICOM PS3.15 " + BASIC_PROFILE_CODE[1]] + [meaning for _, meaning in codes[1:]]
        if DeidOption.RETAIN_FULL_DATES in self.options:
            temporal = "UNMODIFIED"
        elif DeidOption.RETAIN_MODIFIED_DATES in self.options:
            temporal = "MODIFIED"
        else:
            temporal = "REMOVED"
        return [w[:MAX_LO_LENGTH] for w in words], codes, temporal

    def anonymizer_seed(self, patient_id: str) -> str:
        """The dicognito seed used for the patient with this original PatientID."""
        return hmac.new(self._seed.encode(), patient_id.encode(), hashlib.sha256).hexdigest()

    def _generators_for(self, patient_id: str) -> _PatientGenerators:
        generators = self._generators.get(patient_id)
        if generators is None:
            if len(self._generators) > 1000:  # a long batch; earlier patients are done
                self._generators.clear()
                self._memo_bytes = 0
            generators = _PatientGenerators(self.anonymizer_seed(patient_id))
            self._generators[patient_id] = generators
        return generators

    def pseudonymize(self, ds: Dataset, pseudonym: str) -> PseudonymizedInstance:
        """De-identifies ``ds`` in place; PatientID and PatientName become ``pseudonym``.

        Pixel data is not touched (compressed data stays compressed).

        Returns:
            What was replaced (see :class:`PseudonymizedInstance`).

        Raises:
            ValueError: if the pseudonym is empty, too long or has forbidden characters.
            PseudonymizationError: if the dataset cannot be processed.
        """
        pseudonym = validate_lo_value(pseudonym, "Pseudonym")
        original_patient_id = str(ds.get("PatientID", "") or "")
        originals = [
            uid_of(ds, tag) for tag in (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID)
        ]
        generators = self._generators_for(original_patient_id)
        if not hasattr(ds, "file_meta") or ds.file_meta is None:
            ds.ensure_file_meta()
        try:
            received = _received_form(ds)
            pattern = identifying_text_pattern(ds) if self._cleans_text else None
            self._walk(ds, generators, _NORMAL, pattern, received)
            for tag in _FILE_META_IDENTIFYING:
                if tag in ds.file_meta:
                    del ds.file_meta[tag]
            if received is not None:
                ds._dict.update(self._record_of(pseudonym, received))
        except Exception as err:
            # The SOP Instance UID is not PHI; the patient's identifiers must not be in the text.
            raise PseudonymizationError(
                f"Pseudonymization failed for instance {originals[2] or '?'}: {type(err).__name__}"
            ) from err
        if received is None:
            self._set_record(ds, pseudonym)
        # Read without converting the elements (they stay as the bytes to send).
        for tag, meta_tag in (
            (SOP_INSTANCE_UID, MEDIA_STORAGE_SOP_INSTANCE_UID),
            (SOP_CLASS_UID, MEDIA_STORAGE_SOP_CLASS_UID),
        ):
            if tag in ds._dict:
                if received is None:
                    setattr(ds.file_meta, keyword_for_tag(meta_tag), UID(uid_of(ds, tag)))
                else:  # as the bytes pydicom writes for it
                    ds.file_meta._dict[meta_tag] = ui_element(meta_tag, uid_of(ds, tag))
        return PseudonymizedInstance(
            original_patient_id,
            pseudonym,
            originals[0],
            uid_of(ds, STUDY_INSTANCE_UID),
            originals[1],
            uid_of(ds, SERIES_INSTANCE_UID),
            originals[2],
            uid_of(ds, SOP_INSTANCE_UID),
        )

    def _set_record(self, ds: Dataset, pseudonym: str) -> None:
        """The pseudonym and what was done (see the module docstring)."""
        ds.PatientID = pseudonym
        ds.PatientName = pseudonym
        ds.PatientIdentityRemoved = "YES"
        words, codes, temporal = self._method
        ds.DeidentificationMethod = list(words)
        ds.DeidentificationMethodCodeSequence = _code_sequence(codes)
        ds.LongitudinalTemporalInformationModified = temporal

    def _record_of(self, pseudonym: str, received: _Received) -> dict[BaseTag, RawDataElement]:
        """`_set_record`'s elements as the bytes pydicom writes for them in that encoding,
        built once per pseudonym and encoding (an instance gets the same immutable objects)."""
        key = (pseudonym, received.key)
        record = self._records.get(key)
        if record is None:
            scratch = Dataset()
            self._set_record(scratch, pseudonym)
            record = {}
            for element in scratch:
                raw = raw_element(element, received.implicit, received.encodings)
                if raw is None:  # not reachable for these elements; fail loudly if it were
                    raise ValueError(f"cannot encode {element.keyword}")
                record[BaseTag(element.tag)] = raw
            self._records[key] = record
        return record

    # --- the walk ------------------------------------------------------------------------------

    def _walk(
        self,
        ds: Dataset,
        generators: _PatientGenerators,
        mode: int,
        pattern: re.Pattern | None,
        received: _Received | None = None,
    ) -> None:
        elements = ds._dict
        kept_private_blocks: set[tuple[int, int]] = set()
        private_creators: list[int] = []
        # Sorted: a date comes before its time, which dicognito shifts together with it.
        for tag in sorted(elements):
            element = elements.get(tag)
            if element is None:
                continue
            if tag >> 16 & 1:
                element_number = tag & 0xFFFF
                if 0x10 <= element_number <= 0xFF:
                    private_creators.append(tag)
                elif self._keep_safe_private and self._is_safe_private(ds, tag):
                    kept_private_blocks.add((tag >> 16, element_number >> 8))
                else:
                    del ds[tag]
                continue
            vr = element.VR
            if vr is None or vr == "UN":
                try:
                    vr = dictionary_VR(tag)
                except KeyError:
                    vr = None
            key = (tag, vr, mode)
            decision = self._decisions.get(key)
            if decision is None:
                decision = self._decide(tag, vr, mode)
                self._decisions[key] = decision
            if received is not None and type(element) is RawDataElement:
                if decision in _MEMOIZED or (decision == "K" and element.VR == "UN" and vr):
                    self._memoized(ds, tag, element, vr, decision, generators, pattern, received)
                    continue
            if decision != "K":
                self._apply(ds, tag, element, vr, decision, generators, pattern)
            elif element.VR == "UN" and vr is not None:
                ds[tag]  # noqa: B018 - decoding gives it its real VR, as any reader would
        for tag in private_creators:
            if (tag >> 16, tag & 0xFF) not in kept_private_blocks:
                del ds[tag]

    def _memoized(
        self,
        ds: Dataset,
        tag: BaseTag,
        element: RawDataElement,
        vr: str | None,
        decision: str,
        generators: _PatientGenerators,
        pattern: re.Pattern | None,
        received: _Received,
    ) -> None:
        """`_apply` (or the decoding of an element received as UN) for a top-level element as
        received, done once per distinct input: the next instance of the study with the same
        element gets the same result as the bytes it was encoded to.

        The result depends on the element's bytes, the VR it resolves to, the step, the
        instance's encoding and character set, and on what the step reads besides: a name's
        replacement on the PatientSex beside it, a shifted date on its time (which it shifts
        too), cleaned text on the instance's identifying values (`pattern`). All of that is in
        the key; the patient's seed is in `generators`, which holds the memo.
        """
        context: object = None
        affected: tuple[BaseTag, ...] = (tag,)
        if decision == "NAME":
            # dicognito reads (and so decodes) the PatientSex: it is part of the result too.
            context = _state(ds, _PATIENT_SEX)
            affected = (tag, _PATIENT_SEX)
        elif decision == "SHIFT" and vr == "DA":
            time_tag = _time_tag_of(tag)
            if time_tag is not None:
                context = _state(ds, time_tag)
                affected = (tag, time_tag)
        elif decision == "CLEAN":
            context = pattern
        key = (tag, element.VR, vr, decision, element.value, element.length, context, received.key)
        memo = generators.memo
        result = memo.get(key, _MISSING) if context is not _CONVERTED else None
        if result is None or result is _MISSING:
            if decision == "K":
                ds[tag]  # noqa: B018 - decoding gives it its real VR
            else:
                self._apply(ds, tag, element, vr, decision, generators, pattern)
            if result is _MISSING:
                if self._memo_bytes > _MEMO_LIMIT_BYTES:
                    for patient in self._generators.values():
                        patient.memo.clear()
                    self._memo_bytes = 0
                result = memo[key] = _as_received(ds, affected, received)
                self._memo_bytes += len(element.value or b"") + 200
                for _, raw in result or ():
                    self._memo_bytes += len(raw.value or b"") if raw is not None else 0
            return
        elements = ds._dict
        for affected_tag, raw in cast(tuple[tuple[BaseTag, RawDataElement | None], ...], result):
            if raw is None:
                elements.pop(affected_tag, None)
            else:
                elements[affected_tag] = raw

    def _is_safe_private(self, ds: Dataset, tag: int) -> bool:
        group, element = tag >> 16, tag & 0xFFFF
        creator_tag = (group << 16) | (element >> 8)
        if creator_tag not in ds:
            return False
        value = ds[creator_tag].value or ""
        if isinstance(value, bytes):  # a creator received as UN
            value = value.decode("latin-1")
        creator = str(value).strip(" \0").upper()
        return (creator, group, element & 0xFF) in self._safe_private

    def _decide(self, tag: int, vr: str | None, mode: int) -> str:
        """What happens to an element (cached by tag, VR and mode; see `_apply`)."""
        if tag & 0xFFFF == 0:
            return "X"  # group lengths: stale once anything in the group changes
        group = tag >> 16
        if 0x6000 <= group <= 0x60FF and not group & 1:
            # An overlay goes as a whole: its other attributes describe the removed Overlay Data.
            overlay_data = profile_row(0x60003000)
            assert overlay_data is not None
            return self._resolve(overlay_data.action(self._columns), vr, mode)
        row = profile_row(tag)
        if row is not None:
            return self._resolve(row.action(self._columns), vr, mode)
        if vr == "SQ":
            return f"SQ{mode}"
        if vr == "UI":
            keyword = keyword_for_tag(tag)
            # SOP classes, transfer syntaxes and the like name kinds of things, not people.
            return "K" if keyword.endswith("ClassUID") or keyword == "TransferSyntaxUID" else "U"
        if vr in _DATE_VRS:
            action = _GENERIC_DATE_ROW.action(self._columns)
            return self._resolve("D" if action == "X" and mode != _NORMAL else action, vr, mode)
        if vr in IDENTIFYING_VRS:
            if keyword_for_tag(tag) in SAFE_TEXT_KEYWORDS:
                return "K"
            if mode == _DUMMY:
                return self._resolve("D", vr, mode)
            if mode == _CLEAN:
                return self._resolve("C", vr, mode)
            return "X"
        if vr is None:
            return "X"  # unknown VR: its content is anyone's guess
        return "K"

    def _resolve(self, action: str, vr: str | None, mode: int) -> str:
        """The concrete step for a table action (compound actions: see `deid_profile`)."""
        if action == "X/Z/U*":
            return f"SQ{mode}" if vr == "SQ" else "U"
        if action == "Z/D":
            action = "Z"
        elif action.startswith("X"):
            return "X"
        if action == "K":
            return f"SQ{mode}" if vr == "SQ" else "K"
        if action == "Z":
            return "Z"
        if action == "U":
            return "U" if vr == "UI" else "Z"
        if action == "D":
            if vr == "SQ":
                return f"SQ{_DUMMY}"
            if vr == "UI":
                return "U"
            if vr == "PN":
                return "NAME"
            if vr in _DATE_VRS:
                return f"DUMMY_{vr}"
            if vr in _LONG_TEXT_VRS:
                return "REMOVED"
            if vr in ("LO", "SH", "CS", "AE"):
                return "ID"
            return "Z"
        if action == "C":
            if vr == "SQ":
                return f"SQ{_CLEAN}"
            if vr in ("DA", "DT"):
                return "SHIFT"
            if vr == "TM":
                return "K"  # shifted together with its date
            if vr == "PN":
                return "NAME"
            if vr in IDENTIFYING_VRS:
                return "CLEAN"
            return "K"
        raise ValueError(f"Unknown profile action {action!r}")

    def _apply(
        self,
        ds: Dataset,
        tag: int,
        element: DataElement | RawDataElement,
        vr: str | None,
        decision: str,
        generators: _PatientGenerators,
        pattern: re.Pattern | None,
    ) -> None:
        if decision == "X":
            del ds[tag]
            return
        if decision == "Z":
            if isinstance(element, RawDataElement):
                # An element received as UN gets its real VR, as decoding it would give it.
                real_vr = vr if element.VR == "UN" and vr else element.VR
                ds._dict[BaseTag(tag)] = element._replace(value=b"", length=0, VR=real_vr)
            else:
                element.value = [] if element.VR == "SQ" else ""
            return
        data_element = ds[tag]
        if decision.startswith("SQ"):
            mode = int(decision[2:])
            for item in data_element.value or []:
                self._walk(item, generators, mode, pattern)
            return
        value = data_element.value
        if value is None or value == "" or (isinstance(value, list | MultiValue) and not value):
            return
        if decision == "U":
            values = _text_values(value)
            if all(v in UID_dictionary for v in values):
                return  # well-known UIDs (coding schemes, ...) identify no one
            generators.uids(ds, data_element)
        elif decision == "NAME":
            generators.names(ds, data_element)
        elif decision == "SHIFT":
            generators.dates(ds, data_element)
        elif decision.startswith("DUMMY_"):
            data_element.value = _DUMMY_DATES[decision[6:]]
        elif decision == "REMOVED":
            data_element.value = "REMOVED"
        elif decision == "ID":
            data_element.value = generators.dummy_id(str(value))
        elif decision == "CLEAN":
            cleaned = [
                pattern.sub(CLEANED_TEXT, v) if pattern is not None else v
                for v in _text_values(value)
            ]
            data_element.value = cleaned if len(cleaned) > 1 else cleaned[0]
        else:
            raise ValueError(f"Unknown decision {decision!r}")


def xnat_patient_comments(ds: Dataset, pseudonym: str, trial_protocol_id: str) -> str:
    """Builds PatientComments in the convention XNAT's DICOM importer parses.

    Format (exactly)::

        Project: <trial id> Subject: <pseudonym> Session: <pseudonym>_<StudyDate>-<StudyTime>

    StudyDate and StudyTime are the values in ``ds`` (after pseudonymization: kept or shifted
    by a date option), StudyTime cut to ``HHMMSS``. Without a StudyDate (the Basic Profile
    empties it) the session is ``<pseudonym>_<last 16 digits of the StudyInstanceUID>``, so that
    the studies of one subject stay apart. Characters that XNAT does not allow in a session
    label (other than letters, digits, ``_`` and ``-``) are replaced by ``_`` in the session.
    """
    study_date = str(ds.get("StudyDate", "") or "")
    study_time = str(ds.get("StudyTime", "") or "").split(".")[0][:6]
    if study_date:
        label = f"{pseudonym}_{study_date}-{study_time}"
    else:
        digits = str(ds.get("StudyInstanceUID", "") or "").replace(".", "")
        label = f"{pseudonym}_{digits[-16:]}"
    session = re.sub(r"[^A-Za-z0-9_-]", "_", label)
    return f"Project: {trial_protocol_id} Subject: {pseudonym} Session: {session}"


def apply_trial_protocol(
    ds: Dataset, trial_protocol_id: str | None = None, trial_protocol_name: str | None = None
) -> None:
    """Sets ClinicalTrialProtocolID and/or ClinicalTrialProtocolName (empty ones are skipped).

    Raises:
        ValueError: if a given value is longer than 64 characters or has forbidden characters.
    """
    if trial_protocol_id:
        ds.ClinicalTrialProtocolID = validate_lo_value(trial_protocol_id, "Trial protocol ID")
    if trial_protocol_name:
        ds.ClinicalTrialProtocolName = validate_lo_value(trial_protocol_name, "Trial protocol name")


@dataclass
class UidMap:
    """Original → pseudonymized identifiers an :class:`InstanceTransformer` has produced."""

    patients: dict[str, str] = field(default_factory=dict)
    studies: dict[str, str] = field(default_factory=dict)
    series: dict[str, str] = field(default_factory=dict)

    def add(self, replaced: PseudonymizedInstance) -> None:
        self.patients[replaced.original_patient_id] = replaced.pseudonym
        if replaced.original_study_uid:
            self.studies[replaced.original_study_uid] = replaced.study_uid
        if replaced.original_series_uid:
            self.series[replaced.original_series_uid] = replaced.series_uid


MAX_LISTED_EXCLUSIONS = 100
"""Instances excluded for burned-in text that a task lists one by one (the count is complete)."""


class InstanceTransformer:
    """The single entry point that prepares an instance for its destination.

    Applied by transfer processors, downloads and WADO-RS: pseudonymization (if a pseudonym is
    given), modality exclusion and burned-in annotation exclusion (only when pseudonymizing),
    trial protocol tags, and the XNAT PatientComments (when both pseudonym and trial protocol
    ID are given). With nothing to do, datasets pass through unchanged. Datasets are modified
    in place.

    Burned-in annotation: when pseudonymizing, an instance with BurnedInAnnotation=YES, or of a
    SOP class prone to burned-in text without the flag (`deid_profile.BURNED_IN_PRONE_SOP_CLASSES`)
    is excluded: no tag-based profile can clean its pixels. The option
    ``allow_burned_in_annotation`` lets them through.

    Attributes:
        skipped_count: number of instances skipped because of their modality.
        skipped_modalities: the modalities that were skipped.
        burned_in_count: number of instances excluded for possible burned-in text.
        burned_in_excluded: (original SOP Instance UID, reason) of the first
            `MAX_LISTED_EXCLUSIONS` of them.
        uid_map: original → pseudonymized PatientID, Study and Series Instance UIDs so far.
    """

    def __init__(
        self,
        pseudonym: str | None = None,
        trial_protocol_id: str | None = None,
        trial_protocol_name: str | None = None,
        seed: str | None = None,
        exclude_modalities: Iterable[str] = DEFAULT_EXCLUDE_MODALITIES,
        deid_options: Iterable[str] = (),
        pseudonymizer: Pseudonymizer | None = None,
        on_pseudonymized: Callable[[PseudonymizedInstance], None] | None = None,
    ) -> None:
        """Creates a transformer; validates every value up front.

        Args:
            pseudonym: the pseudonym; empty or ``None`` = no pseudonymization.
            trial_protocol_id: ClinicalTrialProtocolID to set.
            trial_protocol_name: ClinicalTrialProtocolName to set.
            seed: seed of the pseudonymizer (see :class:`Pseudonymizer`).
            exclude_modalities: modalities skipped when pseudonymizing.
            deid_options: codes of `deid_profile.DeidOption` chosen for the job.
            pseudonymizer: use this pseudonymizer instead of creating one (``seed`` is then
                ignored; ``deid_options`` still decides about burned-in annotation).
            on_pseudonymized: called with what was replaced, once per pseudonymized instance
                (in the thread that transforms; keep it quick).

        Raises:
            ValueError: naming the bad value.
        """
        self.pseudonym = validate_lo_value(pseudonym, "Pseudonym") if pseudonym else None
        self.trial_protocol_id = (
            validate_lo_value(trial_protocol_id, "Trial protocol ID") if trial_protocol_id else None
        )
        self.trial_protocol_name = (
            validate_lo_value(trial_protocol_name, "Trial protocol name")
            if trial_protocol_name
            else None
        )
        self.exclude_modalities = tuple(
            m.strip().upper() for m in exclude_modalities if m and m.strip()
        )
        self.deid_options = parse_options(deid_options)
        self.allow_burned_in = DeidOption.ALLOW_BURNED_IN_ANNOTATION in self.deid_options
        self._pseudonymizer: Pseudonymizer | None = None
        if self.pseudonym:
            self._pseudonymizer = pseudonymizer or Pseudonymizer(
                seed=seed, options=self.deid_options
            )
        self.on_pseudonymized = on_pseudonymized
        self.skipped_count = 0
        self.skipped_modalities: set[str] = set()
        self.burned_in_count = 0
        self.burned_in_excluded: list[tuple[str, str]] = []
        self.uid_map = UidMap()

    @property
    def is_noop(self) -> bool:
        """True when datasets pass through unchanged."""
        return not (self.pseudonym or self.trial_protocol_id or self.trial_protocol_name)

    def transform(self, ds: Dataset) -> Dataset | None:
        """Transforms ``ds`` in place.

        Returns:
            The same dataset, or ``None`` if it is left out (excluded modality or possible
            burned-in text, both only while pseudonymizing).
        """
        if self.is_noop:
            return ds
        if self.pseudonym and self._pseudonymizer is not None:
            if should_skip(ds, self.exclude_modalities):
                self.skipped_count += 1
                self.skipped_modalities.add(str(ds.Modality).upper())
                return None
            if not self.allow_burned_in:
                reason = burned_in_annotation_risk(
                    str(_peek(ds, _BURNED_IN_ANNOTATION) or ""),
                    uid_of(ds, SOP_CLASS_UID),
                )
                if reason is not None:
                    self.burned_in_count += 1
                    if len(self.burned_in_excluded) < MAX_LISTED_EXCLUSIONS:
                        self.burned_in_excluded.append(
                            (str(ds.get("SOPInstanceUID", "") or "?"), reason)
                        )
                    return None
        # Whatever happens below changes the instance: its received bytes are no longer it.
        forget_received_encoding(ds)
        if self.pseudonym and self._pseudonymizer is not None:
            replaced = self._pseudonymizer.pseudonymize(ds, self.pseudonym)
            self.uid_map.add(replaced)
            if self.on_pseudonymized is not None:
                self.on_pseudonymized(replaced)
        apply_trial_protocol(ds, self.trial_protocol_id, self.trial_protocol_name)
        if self.pseudonym and self.trial_protocol_id:
            ds.PatientComments = xnat_patient_comments(ds, self.pseudonym, self.trial_protocol_id)
        return ds

    def exclusion_log(self) -> list[str]:
        """Lines for a task's log about the instances left out (empty when none were)."""
        lines = []
        if self.skipped_count:
            lines.append(
                f"{self.skipped_count} instance(s) of excluded modalities "
                f"({', '.join(sorted(self.skipped_modalities))}) were not transferred."
            )
        if self.burned_in_count:
            lines.append(
                f"{self.burned_in_count} instance(s) {BURNED_IN_EXCLUSION_TEXT} "
                "(not transferred; the job option 'allow burned-in annotation' lets them through)."
            )
            lines.extend(
                f"SOP Instance UID {uid}: {BURNED_IN_EXCLUSION_TEXT} ({reason})"
                for uid, reason in self.burned_in_excluded
            )
            if self.burned_in_count > len(self.burned_in_excluded):
                lines.append(f"... and {self.burned_in_count - len(self.burned_in_excluded)} more.")
        return lines

    @property
    def excluded_count(self) -> int:
        """Instances left out for their modality or possible burned-in text."""
        return self.skipped_count + self.burned_in_count

    def as_callable(self) -> Callable[[Dataset], Dataset | None]:
        """The transform as a plain function (handy as a fetch callback)."""
        return self.transform
