"""DICOM PS3.15 Annex E de-identification profile as data: Table E.1-1, its options, CID 7050.

What "pseudonymize" means in ADIT
---------------------------------
The Basic Application Level Confidentiality Profile (PS3.15 E.1) plus the options a job chose
(PS3.15 E.3). `_TABLE_E_1_1` below lists every attribute of Table E.1-1 with its action in the
Basic Profile and, where the table has one, the action of each option column. Source: the
machine-readable extract of PS3.15 Table E.1-1 in innolitics/dicom-standard
(``standard/confidentiality_profile_attributes.json``, commit 0d01bf11dfc1, 459 attributes and
the row for private attributes; each row's name is pydicom's keyword for its tag). Attributes a
newer edition of the standard added are not in it; they are handled by the fail-closed rules of
:mod:`adit.core.dicom.pseudonymizer` (identifying VRs are removed unless known to be safe).

Actions (PS3.15 Table E.1-1 legend): D dummy value, Z zero length (or dummy), X remove, K keep
(sequences: their items are de-identified in turn), C clean (keep after removing identifying
content), U replace the UID consistently. Compound actions ("X/Z", "X/Z/D", ...) let a profile
keep an attribute that the IOD requires; ADIT does not know every IOD's types, so it applies the
action that keeps the least information: "X/..." removes, "Z/D" empties, and "X/Z/U*" keeps the
sequence but replaces every instance UID inside it (so references within the exported set stay
resolvable).

Options are stored on jobs by the codes of `DeidOption`; each maps to its code of CID 7050
(De-identification Method), written into DeidentificationMethodCodeSequence of every instance.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from pydicom import uid as pydicom_uid


class DeidOption(enum.StrEnum):
    """The options of the Basic Profile a job may choose, plus ADIT's burned-in allowance."""

    RETAIN_FULL_DATES = "retain_full_dates"
    RETAIN_MODIFIED_DATES = "retain_modified_dates"
    RETAIN_PATIENT_CHARACTERISTICS = "retain_patient_characteristics"
    RETAIN_DEVICE_IDENTITY = "retain_device_identity"
    RETAIN_INSTITUTION_IDENTITY = "retain_institution_identity"
    CLEAN_DESCRIPTORS = "clean_descriptors"
    CLEAN_STRUCTURED_CONTENT = "clean_structured_content"
    RETAIN_SAFE_PRIVATE = "retain_safe_private"
    # Not a PS3.15 option: lets instances that may carry burned-in text through (see
    # `burned_in_annotation_risk`). Whoever ticks it takes responsibility for the pixels.
    ALLOW_BURNED_IN_ANNOTATION = "allow_burned_in_annotation"


OPTION_LABELS: dict[DeidOption, str] = {
    DeidOption.RETAIN_FULL_DATES: "Retain Longitudinal Temporal Information with Full Dates",
    DeidOption.RETAIN_MODIFIED_DATES: (
        "Retain Longitudinal Temporal Information with Modified Dates (per-patient shift)"
    ),
    DeidOption.RETAIN_PATIENT_CHARACTERISTICS: "Retain Patient Characteristics",
    DeidOption.RETAIN_DEVICE_IDENTITY: "Retain Device Identity",
    DeidOption.RETAIN_INSTITUTION_IDENTITY: "Retain Institution Identity",
    DeidOption.CLEAN_DESCRIPTORS: "Clean Descriptors",
    DeidOption.CLEAN_STRUCTURED_CONTENT: "Clean Structured Content",
    DeidOption.RETAIN_SAFE_PRIVATE: "Retain Safe Private",
    DeidOption.ALLOW_BURNED_IN_ANNOTATION: (
        "Allow images that may carry burned-in identifying text (not a PS3.15 option)"
    ),
}
"""Each option in the standard's words (shown on forms and job pages)."""

DEID_OPTION_CHOICES = [(option.value, OPTION_LABELS[option]) for option in DeidOption]
"""Choices of the job and group fields (codes stored, the standard's words shown)."""

BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
"""CID 7050 code of the Basic Profile, written into every de-identified instance."""

OPTION_CODES: dict[DeidOption, tuple[str, str]] = {
    DeidOption.CLEAN_STRUCTURED_CONTENT: ("113104", "Clean Structured Content Option"),
    DeidOption.CLEAN_DESCRIPTORS: ("113105", "Clean Descriptors Option"),
    DeidOption.RETAIN_FULL_DATES: (
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
    ),
    DeidOption.RETAIN_MODIFIED_DATES: (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    DeidOption.RETAIN_PATIENT_CHARACTERISTICS: ("113108", "Retain Patient Characteristics Option"),
    DeidOption.RETAIN_DEVICE_IDENTITY: ("113109", "Retain Device Identity Option"),
    DeidOption.RETAIN_SAFE_PRIVATE: ("113111", "Retain Safe Private Option"),
    DeidOption.RETAIN_INSTITUTION_IDENTITY: ("113112", "Retain Institution Identity Option"),
}
"""CID 7050 (De-identification Method) code value and meaning of each PS3.15 option."""

# The option column of Table E.1-1 each option reads (see the row format of `_TABLE_E_1_1`).
_OPTION_COLUMNS: dict[DeidOption, str] = {
    DeidOption.RETAIN_FULL_DATES: "full",
    DeidOption.RETAIN_MODIFIED_DATES: "mod",
    DeidOption.RETAIN_PATIENT_CHARACTERISTICS: "pat",
    DeidOption.RETAIN_DEVICE_IDENTITY: "dev",
    DeidOption.RETAIN_INSTITUTION_IDENTITY: "inst",
    DeidOption.CLEAN_DESCRIPTORS: "desc",
    DeidOption.CLEAN_STRUCTURED_CONTENT: "struct",
    DeidOption.RETAIN_SAFE_PRIVATE: "safe",
}


def parse_options(values: Iterable[str]) -> frozenset[DeidOption]:
    """The options named by ``values`` (their codes), checked for contradictions.

    Raises:
        ValueError: naming an unknown code, or when both date options are chosen.
    """
    options = set()
    for value in values:
        try:
            options.add(DeidOption(value))
        except ValueError:
            known = ", ".join(option.value for option in DeidOption)
            raise ValueError(
                f"Unknown de-identification option {value!r} (known: {known})"
            ) from None
    if {DeidOption.RETAIN_FULL_DATES, DeidOption.RETAIN_MODIFIED_DATES} <= options:
        raise ValueError(
            "Choose either Retain Longitudinal Temporal Information with Full Dates or with "
            "Modified Dates, not both"
        )
    return frozenset(options)


def describe_options(options: Iterable[str]) -> list[str]:
    """The Basic Profile and the chosen options in the standard's words (for pages and logs)."""
    chosen = parse_options(options)
    return ["Basic Application Level Confidentiality Profile"] + [
        OPTION_LABELS[option] for option in DeidOption if option in chosen
    ]


@dataclass(frozen=True)
class ProfileRow:
    """One attribute of Table E.1-1: its Basic Profile action and the option columns' actions."""

    tag: int
    basic: str
    options: tuple[tuple[str, str], ...]

    def action(self, columns: frozenset[str]) -> str:
        """The action for a job whose options read ``columns``; the last matching column wins,
        in the table's column order (the date options exclude each other)."""
        action = self.basic
        for column, column_action in self.options:
            if column in columns:
                action = column_action
        return action


def option_columns(options: Iterable[DeidOption]) -> frozenset[str]:
    """The option columns of Table E.1-1 that the chosen options read."""
    return frozenset(_OPTION_COLUMNS[option] for option in options if option in _OPTION_COLUMNS)


DATE_ROW_OPTIONS = (("full", "K"), ("mod", "C"))
"""The option actions of every date or time in the table (shorthand ``dates`` in the rows)."""


# Table E.1-1, one attribute a row: tag, Basic Profile action, then the option columns that have
# an action for it (safe: Retain Safe Private, uid: Retain UIDs, dev: Retain Device Identity,
# inst: Retain Institution Identity, pat: Retain Patient Characteristics, full/mod: Retain
# Longitudinal Temporal Information with Full/Modified Dates, desc: Clean Descriptors, struct:
# Clean Structured Content, graph: Clean Graphics). "dates" stands for "full=K mod=C". Tags with
# XX are repeating groups (curves 50xx, overlays 60xx). The row of private attributes (X; Retain
# Safe Private: C) is not a tag and is applied by the pseudonymizer to every odd group.
_TABLE_E_1_1 = """
00080050 Z
00184000 X desc=C
00400555 X/Z struct=C
00080022 X/Z dates
0008002A X/Z/D dates
00181400 X/D desc=C
001811BB D desc=C
00189424 X desc=C
00080032 X/Z dates
00404035 X
001021B0 X desc=C
0040A353 X
00380010 X
00380020 X dates
00081084 X desc=C
00081080 X desc=C
00380021 X dates
00001000 X uid=K
00102110 X pat=C desc=C
40000010 X
0040A078 X
22000005 X/Z
300A00C3 X desc=C
300A00DD X desc=C
00101081 X
0016004D X
00181007 X dev=K
00120060 Z inst=K
00120082 X
00120081 D inst=K
00120020 D
00120021 Z
00120072 X desc=C
00120071 X
00120030 Z inst=K
00120031 Z inst=K
00120010 D
00120040 D
00120042 D
00120051 X desc=C
00120050 Z
00400310 X desc=C
00400280 X desc=C
300A02EB X desc=C
00209161 U uid=K
3010000F Z desc=C
30100017 Z desc=C
30100006 U uid=K
00403001 X
30100013 U uid=K
0008009C Z
0008009D X
0050001B X
0040051A X desc=C
00400512 D
00700086 X
00700084 Z/D
00080023 Z/D dates
0040A730 D struct=C
00080033 Z/D dates
00180010 Z/D desc=C
0018A003 X desc=C
00102150 X
0040A307 X
00380300 X
50XXXXXX X graph=C
00080025 X dates
00080035 X dates
0040A07C X
FFFCFFFC X
0018937F X desc=C
00082111 X desc=C
0018700A X/D dev=K
3010001B Z
00500020 X dev=K
3010002D D dev=K
00181000 X/Z/D dev=K
0016004B X desc=C
00181002 U uid=K dev=K
FFFAFFFA X
04000100 U
00209164 U uid=K
00380040 X desc=C
4008011A X
40080119 X
300A0016 X desc=C
300A0013 U uid=K
3010006E U uid=K
00189517 X/D dates
30100037 X desc=C
30100035 D desc=C
30100038 D desc=C
30100036 X desc=C
300A0676 X desc=C
00102160 X pat=K
00404011 X dates
00080058 U uid=K
0070031A U uid=K
00402017 Z
30080054 X/D dates
300A0196 X desc=C
00340002 D
00340001 D
3010007F Z desc=C
300A0072 X desc=C
00209158 X desc=C
00200052 U uid=K
00340007 D dates
00181008 X dev=K
00181005 X dev=K
00160076 X
00160075 X
0016008C X
0016008D X dates
00160088 X
00160087 X
0016008A X
00160089 X
00160084 X
00160083 X
00160086 X
00160085 X
0016008E X
0016007B X
00160081 X
00160080 X
00160072 X
00160071 X
00160074 X
00160073 X
00160082 X
0016007A X
0016008B X
00160078 X
0016007D X
0016007C X
00160079 X
00160077 X
0016007F X
0016007E X
00160070 X
00700001 D graph=C
00404037 X
00404036 X
00880200 X
00084000 X desc=C
00204000 X desc=C
00284000 X
00402400 X desc=C
003A0314 D dates
40080300 X desc=C
00080015 X dates
00080014 U uid=K
04000600 X
00080081 X inst=K
00081040 X inst=K
00081041 X inst=K
00080082 X/Z/D inst=K
00080080 X/Z/D inst=K
00101050 X
3010004D X/D dates
3010004C X/D dates
00401011 X
300A0741 D dates
300A0742 D desc=C
300A0783 D desc=C
40080111 X
4008010C X
40080115 X desc=C
40080202 X
40080102 X
4008010B X desc=C
4008010A X
00083010 U uid=K
00380011 X
00380014 X
00100021 X
00380061 X
00380064 X
00400513 Z
00400562 Z
22000002 X/Z desc=C
00281214 U uid=K
001021D0 X dates
0016004F X dev=K
00160050 X dev=K
00160051 X dev=K
0016004E X dev=K
00500021 X desc=C
04000404 X
0016002B X desc=C
0018100B U uid=K dev=K
30100043 Z dev=K
00020003 U uid=K
00102000 X desc=C
00101090 X
00101080 X
04000550 X
00203406 X
00203401 X
30080056 X/D dates
0018937B X desc=C
003A0310 U uid=K
00081060 X
00401010 X
04000551 X
04000552 X
0040A192 X dates
0040A402 U uid=K
0040A193 X dates
0040A171 U uid=K
00102180 X desc=C
00081072 X/D
00081070 X/Z/D
00402010 X
00402011 X
00402008 X
00402009 X
04000561 X
00101000 X
00101002 X
00101001 X
60XX4000 X graph=C
60XX3000 X graph=C
00080024 X dates
00080034 X dates
300A0760 D dates
00281199 U uid=K
0040A07A X
00101040 X
00101010 X pat=K
00100030 Z
00101005 X
00100032 X
00380400 X
00100050 X
00101060 X
00100010 Z
00100101 X
00100102 X
001021F0 X
00100040 Z pat=K
00102203 X/Z pat=K
00101020 X pat=K
00102155 X
00102154 X
00101030 X pat=K
00104000 X desc=C
00100020 Z
300A0650 U uid=K
00380500 X pat=C desc=C
00401004 X
00400243 X
00400254 X desc=C
00400250 X dates
00404051 X dates
00400251 X dates
00400253 X
00400244 X dates
00404050 X dates
00400245 X dates
00400241 X dev=K
00404030 X dev=K
00400242 X dev=K
00404028 X dev=K
00081050 X
00081052 X
00401102 X
00401104 X
00401103 X
00401101 D
0040A123 D
00081048 X
00081049 X
00081062 X
40080114 X
00402016 Z
00181004 X dev=K
001021C0 X pat=K
00400012 X pat=C
300A000E X desc=C
3010007B Z desc=C
30100081 Z desc=C
00701101 U uid=K
00701102 U uid=K
30100061 X desc=C
00404052 X dates
00181030 X/D desc=C
300A0619 D desc=C
300A0623 D desc=C
300A067D Z desc=C
300A067C D desc=C
300C0113 X desc=C
0040100A X desc=C
00321030 X desc=C
3010005C Z desc=C
00402001 X desc=C
00401002 X desc=C
00321066 X desc=C
00321067 X desc=C
300A073A D dates
3010000B U uid=K
04000402 X
300A0083 U uid=K
3010006F U uid=K
30100031 U uid=K
30060024 U uid=K
00404023 U uid=K
00081140 X/Z/U* uid=K
0040A172 U uid=K
00380004 X
00101100 X
00081120 X uid=X
00081111 X/Z/D uid=K
04000403 X
00081155 U uid=K
00041511 U uid=K
00081110 X/Z uid=K
00080092 X
00080090 Z
00080094 X
00080096 X
00102152 X
300600C2 U uid=K
00400275 X desc=C
00321070 X desc=C
00401400 X desc=C
00321060 X/Z desc=C
00401001 X
00401005 X
00189937 X desc=C
00001001 U uid=K
00321032 X
00321033 X
00189185 X desc=C
00102299 X
00102297 X
40084000 X desc=C
40080118 X
40080042 X
300E0008 X/Z
30060028 X desc=C
30060038 X desc=C
300600A6 Z
30060026 Z desc=C
30060088 X desc=C
30060085 X desc=C
300A0615 Z
300A0611 Z
3010005A Z desc=C
300A0006 X/D dates
300A0004 X desc=C
300A0002 D desc=C
300A0003 X desc=C
300A0007 X/D dates
30100054 D desc=C
300A062A D desc=C
30100056 X/D desc=C
3010003B U uid=K
00404034 X
0038001E X
00400006 X
0040000B X
00400007 X desc=C
00400004 X dates
00400005 X dates
00404008 X dates
00400009 X
00400011 X dev=K
00404010 X dates
00400002 X dates
00404005 X dates
00400003 X dates
00400001 X dev=K
00404027 X dev=K
00400010 X dev=K
00404025 X dev=K
00321020 X dev=K
00321021 X dev=K
00080021 X/D dates
0008103E X desc=C
0020000E U uid=K
00080031 X/D dates
00380062 X desc=C
00380060 X
300A01B2 X desc=C
300A01A6 X desc=C
004006FA X
001021A0 X pat=K
00080018 U uid=K
30100015 U uid=K
0018936A D dates
00340005 D
00082112 X/Z/U* uid=K
300A0216 X dev=K
30080105 X/Z dev=K
00189369 D dates
00380050 X pat=C
0040050A X
00400602 X desc=C
00400551 D
00400610 Z struct=C
00400600 X desc=C
00400554 U uid=K
00189516 X/D dates
00081010 X/Z/D dev=K
00880140 U uid=K
30060008 Z dates
30060006 X desc=C
30060002 D desc=C
30060004 X desc=C
30060009 X/D dates
00324000 X desc=C
00080020 Z dates
00081030 X desc=C
00200010 Z
00320012 X
0020000D U uid=K
00080030 Z dates
00200200 U uid=K
00182042 U uid=K
0040A354 X
0040DB0D U uid=K
0040DB0C U uid=K
40004000 X
20300020 X
00080201 X dates
00880910 X
00880912 X
00880906 X
00880904 X
00620021 U uid=K
00081195 U uid=K
00185011 X dev=K
30080250 X/D dates
300A00B2 X dev=K
300A0608 D desc=C
300A0609 U uid=K
300A0700 U uid=K
30100077 D desc=C
3010007A Z desc=C
30080251 X/D dates
300A0736 D dates
300A0734 D desc=C
0018100A X dev=K
0040A124 U
00181009 X dev=K
30100033 D desc=C
30100034 D desc=C
0040A352 X
0040A358 X
0040A088 Z
0040A075 D
0040A073 D
0040A027 D
00384000 X desc=C
00189371 D dev=K
00189373 X dev=K
00189367 D dev=K
"""


def _parse_table(text: str) -> tuple[dict[int, ProfileRow], dict[tuple[int, int], ProfileRow]]:
    rows: dict[int, ProfileRow] = {}
    repeating: dict[tuple[int, int], ProfileRow] = {}  # (group base, element or -1) → row
    for line in text.strip().splitlines():
        tag_text, basic, *columns = line.split()
        options: list[tuple[str, str]] = []
        for column in columns:
            if column == "dates":
                options.extend(DATE_ROW_OPTIONS)
            else:
                name, action = column.split("=")
                options.append((name, action))
        if "XX" in tag_text:
            group = int(tag_text[:2] + "00", 16)
            element = -1 if tag_text[4:] == "XXXX" else int(tag_text[4:], 16)
            row = ProfileRow(-1, basic, tuple(options))
            repeating[(group, element)] = row
        else:
            tag = int(tag_text, 16)
            rows[tag] = ProfileRow(tag, basic, tuple(options))
    return rows, repeating


PROFILE_ROWS, _REPEATING_ROWS = _parse_table(_TABLE_E_1_1)
"""Table E.1-1 by tag (`_REPEATING_ROWS`: curves and overlays by group base)."""

PRIVATE_ATTRIBUTES_ROW = ProfileRow(-1, "X", (("safe", "C"),))


def profile_row(tag: int) -> ProfileRow | None:
    """The row of Table E.1-1 for ``tag`` (repeating groups included), or None."""
    row = PROFILE_ROWS.get(tag)
    if row is not None:
        return row
    group = tag >> 16
    if 0x5000 <= group <= 0x60FF and not group & 1 and group & 0xFF00 in (0x5000, 0x6000):
        base = group & 0xFF00
        return _REPEATING_ROWS.get((base, tag & 0xFFFF)) or _REPEATING_ROWS.get((base, -1))
    return None


DEFAULT_SAFE_PRIVATE_TAGS: frozenset[tuple[str, int, int]] = frozenset(
    {
        # (private creator, group, element within the block): diffusion parameters that
        # PS3.15 Table E.3.10-1 lists as safe, and that diffusion analysis cannot do without.
        ("SIEMENS MR HEADER", 0x0019, 0x0C),  # B_value
        ("SIEMENS MR HEADER", 0x0019, 0x0D),  # DiffusionDirectionality
        ("SIEMENS MR HEADER", 0x0019, 0x0E),  # DiffusionGradientDirection
        ("SIEMENS MR HEADER", 0x0019, 0x27),  # B_matrix
        ("GEMS_PARM_01", 0x0043, 0x39),  # slop_int_6..9 (b-value)
        ("Philips Imaging DD 001", 0x2001, 0x03),  # Diffusion B-Factor
        ("Philips Imaging DD 001", 0x2001, 0x04),  # Diffusion Direction
    }
)
"""Private elements kept with Retain Safe Private: known to hold no identifying information."""

SAFE_TEXT_KEYWORDS: frozenset[str] = frozenset(
    {
        # Not in Table E.1-1 and of a free-text VR, yet needed and free of identity: technical
        # parameters, coded vocabulary, and what ADIT itself writes after de-identifying.
        "Manufacturer",
        "ManufacturerModelName",
        "SoftwareVersions",
        "ConvolutionKernel",
        "SequenceName",
        "PulseSequenceName",
        "ReceiveCoilName",
        "TransmitCoilName",
        "ImagedNucleus",
        "FilterType",
        "RescaleType",
        "WindowCenterWidthExplanation",
        "LUTExplanation",
        "ModalityLUTType",
        "ContrastBolusRoute",
        "CodeValue",
        "CodingSchemeDesignator",
        "CodingSchemeVersion",
        "CodeMeaning",
        "LongCodeValue",
        "URNCodeValue",
        "ContextIdentifier",
        "MappingResource",
        "MappingResourceName",
        "TemplateIdentifier",
        "DeidentificationMethod",
        "ClinicalTrialProtocolID",
        "ClinicalTrialProtocolName",
        "ImplementationVersionName",
        "PositionReferenceIndicator",
    }
)
"""Free-text attributes outside the table that are kept (every other one is removed)."""

IDENTIFYING_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC", "UR"})
"""VRs whose values may hold names or free text: not kept unless the profile says so."""

BURNED_IN_PRONE_SOP_CLASSES: dict[str, str] = {
    pydicom_uid.SecondaryCaptureImageStorage: "Secondary Capture Image Storage",
    pydicom_uid.MultiFrameSingleBitSecondaryCaptureImageStorage: (
        "Multi-frame Single Bit Secondary Capture Image Storage"
    ),
    pydicom_uid.MultiFrameGrayscaleByteSecondaryCaptureImageStorage: (
        "Multi-frame Grayscale Byte Secondary Capture Image Storage"
    ),
    pydicom_uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage: (
        "Multi-frame Grayscale Word Secondary Capture Image Storage"
    ),
    pydicom_uid.MultiFrameTrueColorSecondaryCaptureImageStorage: (
        "Multi-frame True Color Secondary Capture Image Storage"
    ),
    pydicom_uid.UltrasoundImageStorage: "Ultrasound Image Storage",
    pydicom_uid.UltrasoundMultiFrameImageStorage: "Ultrasound Multi-frame Image Storage",
    "1.2.840.10008.5.1.4.1.1.6": "Ultrasound Image Storage (Retired)",
    "1.2.840.10008.5.1.4.1.1.3": "Ultrasound Multi-frame Image Storage (Retired)",
    pydicom_uid.EncapsulatedPDFStorage: "Encapsulated PDF Storage",
    pydicom_uid.VideoPhotographicImageStorage: "Video Photographic Image Storage",
    pydicom_uid.VLPhotographicImageStorage: "VL Photographic Image Storage",
}
"""SOP classes whose pixels (or documents) often carry burned-in text: screenshots, scanned
documents, ultrasound with the patient banner, photographs."""


def burned_in_annotation_risk(burned_in_annotation: str, sop_class_uid: str) -> str | None:
    """Why an instance may carry burned-in identifying text, or None when it need not.

    Args:
        burned_in_annotation: the instance's BurnedInAnnotation ("" when absent).
        sop_class_uid: its SOPClassUID.
    """
    flag = burned_in_annotation.strip().upper()
    if flag == "YES":
        return "BurnedInAnnotation is YES"
    if not flag and sop_class_uid in BURNED_IN_PRONE_SOP_CLASSES:
        return (
            f"{BURNED_IN_PRONE_SOP_CLASSES[sop_class_uid]} without BurnedInAnnotation "
            "(text in the pixels is common)"
        )
    return None
