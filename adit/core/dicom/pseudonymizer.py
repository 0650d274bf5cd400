"""Pseudonymization of DICOM instances (dicognito-based) and trial protocol tagging.

Consistency across tasks, jobs and processes
--------------------------------------------
dicognito derives every replacement value (UIDs, IDs, names, the date shift) from
``md5(seed + original value)``, so a seeded anonymizer is a pure function of its seed: it keeps no
state that depends on which instances it saw before. :class:`Pseudonymizer` seeds one dicognito
anonymizer per *original* PatientID with ``HMAC-SHA256(seed, PatientID)``. Therefore:

* the same (seed, patient) always gives the same StudyInstanceUID, SeriesInstanceUIDs,
  SOPInstanceUIDs, date shift and replaced identifiers, no matter which task, job, worker or
  process run pseudonymizes which series (the old ADIT used an unseeded anonymizer per task, so
  two series of one patient in two tasks got unrelated UIDs);
* different patients get independent date shifts, and another seed gives entirely different
  values.

The caller chooses the seed's scope: a secret per installation (the same patient is consistent
across all jobs) or a secret per job (consistent within the job only).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable
from typing import cast

from dicognito.addressanonymizer import AddressAnonymizer
from dicognito.anonymizer import Anonymizer
from dicognito.datetimeanonymizer import DateTimeAnonymizer
from dicognito.element_anonymizer import ElementAnonymizer
from dicognito.equipmentanonymizer import EquipmentAnonymizer
from dicognito.fixedvalueanonymizer import FixedValueAnonymizer
from dicognito.idanonymizer import IDAnonymizer
from dicognito.pnanonymizer import PNAnonymizer
from dicognito.uianonymizer import UIAnonymizer
from dicognito.unwantedelements import UnwantedElementsStripper
from dicognito.value_keeper import ValueKeeper
from pydicom import DataElement
from pydicom.datadict import dictionary_VR, keyword_dict, keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from .dimse import forget_received_encoding

DEFAULT_KEEP_ELEMENTS: tuple[str, ...] = (
    "AcquisitionDate",
    "AcquisitionDateTime",
    "AcquisitionTime",
    "ContentDate",
    "ContentTime",
    "FrameReferenceDateTime",
    "SeriesDate",
    "SeriesTime",
    "StudyDate",
    "StudyTime",
)
"""Elements left untouched by default: researchers need the real study chronology."""

DEFAULT_EXCLUDE_MODALITIES: tuple[str, ...] = ("PR", "SR")
"""Modalities skipped when pseudonymizing: reports and presentation states often carry names
in free text that no tag-based pseudonymizer can clean."""

# Free-text elements dicognito leaves alone but that commonly hold names, IDs or history.
EXTRA_REMOVED_ELEMENTS: tuple[str, ...] = (
    "PatientComments",
    "AdditionalPatientHistory",
    "MedicalAlerts",
    "Allergies",
    "PatientState",
    "ImageComments",
    "StudyComments",
    "RequestedProcedureComments",
    "ImagingServiceRequestComments",
    "InterpretationText",
    "TextValue",
)

PSEUDONYM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
# 36**49 < 2**256 <= 36**50: a HMAC-SHA256 digest yields 49 uniformly usable base-36 digits.
MAX_GENERATED_PSEUDONYM_LENGTH = 49
MAX_LO_LENGTH = 64
_FORBIDDEN_CHARS = re.compile(r"[\\\x00-\x1f\x7f]")


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
    modality = str(ds.get("Modality", "") or "").strip().upper()
    return bool(modality) and modality in excluded


class _ElementKeeper(ElementAnonymizer):
    """Leaves the given elements unchanged: one set lookup per element.

    Same effect as one dicognito `ValueKeeper` per element, which compares every element's tag
    with each kept tag in Python (a tenth of the pseudonymization time with ten kept elements).
    """

    def __init__(self, names: Iterable[str]) -> None:
        # ValueKeeper parses keywords and "gggg,eeee" tags exactly as dicognito documents them.
        self._keepers = [ValueKeeper(name) for name in names]
        self._tags = frozenset(int(keeper._tag) for keeper in self._keepers)

    def __call__(self, dataset: Dataset, data_element: DataElement) -> bool:
        return int(data_element.tag) in self._tags

    def describe_actions(self):
        for keeper in self._keepers:
            yield from keeper.describe_actions()


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


# dicognito's Mitra Global Patient ID: private group 0x0031, element xx20.
_MITRA_GROUP = 0x0031
_TRANSFER_SYNTAX_UID = 0x00020010


class _ElementFilter:
    """Which handlers of a dicognito anonymizer could act on an element, by its tag and VR.

    dicognito's `Anonymizer.anonymize()` converts every element of an instance to a Python value
    and offers it to each of its handlers in turn until one takes it, although each handler
    decides by tag or VR alone. This filter converts only the elements some handler could take
    and offers each just to those handlers, in dicognito's order: the same result at a fraction
    of the cost, and the untouched elements are written again as the bytes they were read
    from. Built only when every handler is of a kind it knows; otherwise `for_anonymizer()`
    returns None and the instance gets dicognito's full walk.
    """

    def __init__(self, entries: list[tuple[ElementAnonymizer, frozenset[int], frozenset[str]]]):
        # (handler, tags it takes, VRs it takes), in dicognito's order of asking.
        self._entries = entries
        self._handlers: dict[tuple[int, str], tuple[ElementAnonymizer, ...]] = {}
        # (tag, VR as read, value as read[, patient's sex]) → the replacement value, encoded.
        self._results: dict[tuple, bytes] = {}
        self._result_kinds: dict[tuple[int, str | None], str] = {}

    @classmethod
    def for_anonymizer(cls, anonymizer: Anonymizer) -> _ElementFilter | None:
        entries: list[tuple[ElementAnonymizer, frozenset[int], frozenset[str]]] = []
        for handler in anonymizer._element_handlers:
            tags: set[int] = set()
            vrs: frozenset[str] = frozenset()
            if isinstance(handler, UnwantedElementsStripper):
                handler.tags = frozenset(handler.tags)  # type: ignore[assignment]
                tags.update(handler.tags)
            elif isinstance(handler, IDAnonymizer):
                handler.id_tags = frozenset(handler.id_tags)  # type: ignore[assignment]
                tags.update(handler.id_tags)
                tags.add(handler.issuer_tag)
            elif isinstance(handler, AddressAnonymizer):
                tags.update(handler._value_factories)
            elif isinstance(handler, EquipmentAnonymizer):
                tags.update(handler._element_anonymizers)
            elif isinstance(handler, FixedValueAnonymizer):
                tags.add(handler.tag)
            elif isinstance(handler, _ElementKeeper):
                tags.update(handler._tags)
            elif isinstance(handler, UIAnonymizer):
                vrs = frozenset({"UI"})
            elif isinstance(handler, PNAnonymizer):
                vrs = frozenset({"PN"})
            elif isinstance(handler, DateTimeAnonymizer | _TolerantDateTimeAnonymizer):
                vrs = frozenset({"DA", "DT"})
            else:
                return None  # a handler whose choice of elements is unknown here
            entries.append((handler, frozenset(int(tag) for tag in tags), vrs))
        return cls(entries)

    def handlers_for(self, tag: int, vr: str) -> tuple[ElementAnonymizer, ...]:
        """The handlers that could take an element, in dicognito's order."""
        key = (tag, vr)
        handlers = self._handlers.get(key)
        if handlers is None:
            mitra = tag >> 16 == _MITRA_GROUP and tag & 0xFF == 0x20
            # dicognito's UIAnonymizer leaves SOP classes and the transfer syntax alone.
            class_uid = keyword_for_tag(tag).endswith("ClassUID") or tag == _TRANSFER_SYNTAX_UID
            handlers = tuple(
                handler
                for handler, tags, vrs in self._entries
                if tag in tags
                or (vr in vrs and not (class_uid and isinstance(handler, UIAnonymizer)))
                or (mitra and isinstance(handler, IDAnonymizer))
            )
            if len(self._handlers) > 20000:  # private tags of many vendors; keep it bounded
                self._handlers.clear()
            self._handlers[key] = handlers
        return handlers

    def claims(self, tag: int, element: DataElement | RawDataElement) -> bool:
        """Whether an element must be converted and offered: a handler could change it, or it
        is a sequence whose items may hold such elements."""
        if tag >> 16 & 1:  # private elements: always offered
            return True
        vr = element.VR
        if vr == "UN":  # pydicom gives it the dictionary's VR, which changes its encoding
            return True
        if vr is None:  # implicit VR: the VR pydicom will give it
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                return True
        if vr == "SQ":
            return True
        handlers = self.handlers_for(tag, vr)
        # A kept element is taken first by the keeper, which leaves it as it is.
        return bool(handlers) and not isinstance(handlers[0], _ElementKeeper)

    def offer(self, dataset: Dataset, data_element: DataElement) -> None:
        """What dicognito's `_anonymize_element` does, asking only the handlers that could."""
        for handler in self.handlers_for(int(data_element.tag), data_element.VR):
            if handler(dataset, data_element):
                return

    def walk(self, dataset: Dataset) -> None:
        """Like `Dataset.walk(offer)`, but only over claimed elements (and into sequences)."""
        elements = dataset._dict
        for tag in sorted(elements):
            element = elements.get(tag)
            if element is None or not self.claims(tag, element):
                continue
            key = self._result_key(dataset, tag, element)
            if key is not None:
                remembered = self._results.get(key)
                if remembered is not None:
                    raw = cast(RawDataElement, element)
                    elements[tag] = raw._replace(value=remembered, length=len(remembered))
                    continue
            data_element = dataset[tag]
            self.offer(dataset, data_element)
            if tag in elements and data_element.VR == "SQ":
                for item in data_element.value:
                    self.walk(item)
            elif key is not None and tag in elements:
                self._remember_result(key, elements[tag])

    # Most UIDs, IDs and names of an instance (study, series, accession number, physicians,
    # ...) are the same in every instance of its study, and dicognito replaces them by value
    # (names: and the patient's sex). Their replacements are remembered as encoded bytes: the
    # next instance gets them without converting, asking the handlers and encoding again.

    def _result_key(self, dataset: Dataset, tag: int, element) -> tuple | None:
        """What a remembered replacement of the element is found by; None: not remembered."""
        if type(element) is not RawDataElement or element.value is None:
            return None
        kind = self._result_kinds.get((tag, element.VR))
        if kind is None:
            kind = self._result_kind(tag, element)
            self._result_kinds[(tag, element.VR)] = kind
        if kind == "value":
            return (tag, element.VR, element.value)
        if kind == "name":
            sex = _patient_sex(dataset)
            return None if sex is None else (tag, element.VR, element.value, sex)
        return None

    def _result_kind(self, tag: int, element: RawDataElement) -> str:
        if tag >> 16 & 1 or tag >> 16 == _MITRA_GROUP or element.VR == "UN":
            return ""
        try:
            vr = element.VR or dictionary_VR(tag)
        except KeyError:
            return ""
        handlers = self.handlers_for(tag, vr)
        if handlers and isinstance(handlers[0], UIAnonymizer | IDAnonymizer):
            return "value"
        if handlers and isinstance(handlers[0], PNAnonymizer):
            return "name"
        return ""

    def _remember_result(self, key: tuple, result) -> None:
        encoded = _encoded_ascii(result.value, b"\0" if result.VR == "UI" else b" ")
        if encoded is not None:
            if len(self._results) > 10000:  # new values of a study; old studies are done
                self._results.clear()
            self._results[key] = encoded


def _patient_sex(dataset: Dataset) -> str | None:
    """PatientSex as dicognito's name handler tells it apart: "F", "M" or "" (any other);
    None when its raw bytes are unusual enough that pydicom might read them otherwise."""
    element = dataset._dict.get(0x00100040)  # type: ignore[call-overload]
    if element is None:
        return ""
    value = element.value
    if isinstance(value, bytes):
        text = value.rstrip(b" \0").decode("ascii", "replace")
        if text != text.strip():
            return None
    else:
        text = str(value or "")
    return text if text in ("F", "M") else ""


def _encoded_ascii(value, padding: bytes) -> bytes | None:
    """A text value as pydicom writes it, if it is ASCII only (UIDs and generated IDs are)."""
    if isinstance(value, str | PersonName):
        parts = [str(value)]
    elif isinstance(value, list | tuple | MultiValue) and all(
        isinstance(v, str | PersonName) for v in value
    ):
        parts = [str(v) for v in value]
    else:
        return None
    try:
        encoded = "\\".join(parts).encode("ascii")
    except UnicodeEncodeError:
        return None
    return encoded + padding if len(encoded) % 2 else encoded


class Pseudonymizer:
    """Pseudonymizes datasets in place, consistently per (seed, original patient).

    Example:
        >>> pseudonymizer = Pseudonymizer(seed="job-secret")
        >>> pseudonymizer.pseudonymize(ds, "PSEUDO0001")
    """

    def __init__(
        self,
        seed: str | None = None,
        keep_elements: Iterable[str] = DEFAULT_KEEP_ELEMENTS,
        remove_private_tags: bool = False,
    ) -> None:
        """Creates a pseudonymizer.

        Args:
            seed: makes the output deterministic per original patient; ``None`` = a random seed
                (consistent only within this object).
            keep_elements: keywords (or ``"gggg,eeee"`` tags) of elements left unchanged.
            remove_private_tags: also delete all private elements (they may hold PHI, but some
                tools need them, e.g. vendor diffusion headers).

        Raises:
            ValueError: if a keyword in ``keep_elements`` is not a DICOM keyword.
        """
        self._seed = seed if seed is not None else secrets.token_hex(32)
        self.keep_elements = tuple(keep_elements)
        for keyword in self.keep_elements:
            if keyword not in keyword_dict and not re.fullmatch(
                r"[0-9A-Fa-f]{4},[0-9A-Fa-f]{4}", keyword
            ):
                raise ValueError(f"Unknown DICOM keyword in keep_elements: {keyword!r}")
        self.remove_private_tags = remove_private_tags
        self._anonymizers: dict[str, tuple[Anonymizer, _ElementFilter | None]] = {}

    def anonymizer_seed(self, patient_id: str) -> str:
        """The dicognito seed used for the patient with this original PatientID."""
        return hmac.new(self._seed.encode(), patient_id.encode(), hashlib.sha256).hexdigest()

    def _anonymizer_for(self, patient_id: str) -> tuple[Anonymizer, _ElementFilter | None]:
        cached = self._anonymizers.get(patient_id)
        if cached is None:
            anonymizer = Anonymizer(seed=self.anonymizer_seed(patient_id))
            # dicognito asks the first handler that claims an element; handlers added later
            # come first, so the keepers (added last) win over everything else.
            anonymizer.add_element_handler(UnwantedElementsStripper(*EXTRA_REMOVED_ELEMENTS))
            date_shifter = next(
                (
                    handler
                    for handler in anonymizer._element_handlers
                    if isinstance(handler, DateTimeAnonymizer)
                ),
                None,
            )
            if date_shifter is not None:
                anonymizer.add_element_handler(_TolerantDateTimeAnonymizer(date_shifter))
            if self.keep_elements:
                anonymizer.add_element_handler(_ElementKeeper(self.keep_elements))
            cached = (anonymizer, _ElementFilter.for_anonymizer(anonymizer))
            self._anonymizers[patient_id] = cached
        return cached

    def pseudonymize(self, ds: Dataset, pseudonym: str) -> None:
        """Pseudonymizes ``ds`` in place and sets PatientID and PatientName to ``pseudonym``.

        UIDs (also in nested sequences and MediaStorageSOPInstanceUID), IDs, names, addresses,
        institution and dates other than the kept ones are replaced; free-text elements that
        often hold identifiers are removed. Pixel data is not touched (compressed data stays
        compressed).

        Raises:
            ValueError: if the pseudonym is empty, too long or has forbidden characters.
            PseudonymizationError: if dicognito fails on the dataset.
        """
        pseudonym = validate_lo_value(pseudonym, "Pseudonym")
        original_patient_id = str(ds.get("PatientID", "") or "")
        anonymizer, element_filter = self._anonymizer_for(original_patient_id)
        if not hasattr(ds, "file_meta") or ds.file_meta is None:
            ds.ensure_file_meta()
        try:
            if element_filter is None:
                anonymizer.anonymize(ds)
            else:
                # What `Anonymizer.anonymize()` does, the walk over the main data set limited
                # to the elements and handlers that matter.
                ds.file_meta.walk(anonymizer._anonymize_element)
                element_filter.walk(ds)
                for updater in anonymizer._dataset_updaters:
                    updater(ds)
        except Exception as err:
            # The SOP Instance UID is not PHI; the patient's identifiers must not be in the text.
            raise PseudonymizationError(
                f"Pseudonymization failed for instance {ds.get('SOPInstanceUID', '?')}: "
                f"{type(err).__name__}"
            ) from err
        if self.remove_private_tags:
            ds.remove_private_tags()
        ds.PatientID = pseudonym
        ds.PatientName = pseudonym
        ds.PatientIdentityRemoved = "YES"
        if "SOPInstanceUID" in ds:
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if "SOPClassUID" in ds:
            ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID


def xnat_patient_comments(ds: Dataset, pseudonym: str, trial_protocol_id: str) -> str:
    """Builds PatientComments in the convention XNAT's DICOM importer parses.

    Format (exactly)::

        Project: <trial id> Subject: <pseudonym> Session: <pseudonym>_<StudyDate>-<StudyTime>

    StudyDate and StudyTime are the values in ``ds`` (after pseudonymization; kept by default),
    StudyTime cut to ``HHMMSS``. Characters that XNAT does not allow in a session label (other
    than letters, digits, ``_`` and ``-``) are replaced by ``_`` in the session part.
    """
    study_date = str(ds.get("StudyDate", "") or "")
    study_time = str(ds.get("StudyTime", "") or "").split(".")[0][:6]
    session = re.sub(r"[^A-Za-z0-9_-]", "_", f"{pseudonym}_{study_date}-{study_time}")
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


class InstanceTransformer:
    """The single entry point that prepares an instance for its destination.

    Applied by transfer processors, downloads and WADO-RS: pseudonymization (if a pseudonym is
    given), modality exclusion (only when pseudonymizing), trial protocol tags, and the XNAT
    PatientComments (when both pseudonym and trial protocol ID are given). With nothing to do,
    datasets pass through unchanged. Datasets are modified in place.

    Attributes:
        skipped_count: number of instances skipped because of their modality.
        skipped_modalities: the modalities that were skipped.
    """

    def __init__(
        self,
        pseudonym: str | None = None,
        trial_protocol_id: str | None = None,
        trial_protocol_name: str | None = None,
        seed: str | None = None,
        exclude_modalities: Iterable[str] = DEFAULT_EXCLUDE_MODALITIES,
        keep_elements: Iterable[str] = DEFAULT_KEEP_ELEMENTS,
        pseudonymizer: Pseudonymizer | None = None,
    ) -> None:
        """Creates a transformer; validates every value up front.

        Args:
            pseudonym: the pseudonym; empty or ``None`` = no pseudonymization.
            trial_protocol_id: ClinicalTrialProtocolID to set.
            trial_protocol_name: ClinicalTrialProtocolName to set.
            seed: seed of the pseudonymizer (see :class:`Pseudonymizer`).
            exclude_modalities: modalities skipped when pseudonymizing.
            keep_elements: elements the pseudonymizer leaves unchanged.
            pseudonymizer: use this pseudonymizer instead of creating one (``seed`` and
                ``keep_elements`` are then ignored).

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
        self._pseudonymizer: Pseudonymizer | None = None
        if self.pseudonym:
            self._pseudonymizer = pseudonymizer or Pseudonymizer(
                seed=seed, keep_elements=keep_elements
            )
        self.skipped_count = 0
        self.skipped_modalities: set[str] = set()

    @property
    def is_noop(self) -> bool:
        """True when datasets pass through unchanged."""
        return not (self.pseudonym or self.trial_protocol_id or self.trial_protocol_name)

    def transform(self, ds: Dataset) -> Dataset | None:
        """Transforms ``ds`` in place.

        Returns:
            The same dataset, or ``None`` if it is skipped (excluded modality while
            pseudonymizing).
        """
        if self.is_noop:
            return ds
        # Whatever happens below changes the instance: its received bytes are no longer it.
        forget_received_encoding(ds)
        if self.pseudonym and self._pseudonymizer is not None:
            if should_skip(ds, self.exclude_modalities):
                self.skipped_count += 1
                self.skipped_modalities.add(str(ds.Modality).upper())
                return None
            self._pseudonymizer.pseudonymize(ds, self.pseudonym)
        apply_trial_protocol(ds, self.trial_protocol_id, self.trial_protocol_name)
        if self.pseudonym and self.trial_protocol_id:
            ds.PatientComments = xnat_patient_comments(ds, self.pseudonym, self.trial_protocol_id)
        return ds

    def as_callable(self) -> Callable[[Dataset], Dataset | None]:
        """The transform as a plain function (handy as a fetch callback)."""
        return self.transform
