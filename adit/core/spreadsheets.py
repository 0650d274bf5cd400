"""Reading batch files (.xlsx and .csv) into rows of text, collecting problems by line, and
writing exports that are data, never code.

Both batch apps read their uploads with `read_sheet` and validate the rows in their own
`parsers.py`. The rules every batch file follows:

* `.xlsx` (first worksheet) or `.csv` (UTF-8 with or without BOM, comma or semicolon).
* The first row is the header. Column names are matched exactly (case-sensitive); an unknown
  column or a missing required one is an error naming them all.
* Every cell is read as text and trimmed: leading zeros typed as text are kept, numbers come
  back without a trailing ``.0``, Excel date cells become ``YYYY-MM-DD``.
* Completely empty rows are skipped; each row remembers its spreadsheet line (header = line 1).
* File size and row count are limited, and so is what reading may cost whatever the file
  claims (`ReadLimits`: unpacked sizes, zip ratio, rows, cells, time); an .xlsx is checked
  entry by entry and streamed through expat once before openpyxl (read-only, defusedxml) reads
  it, so a bomb of a few hundred KB is refused in well under a second, naming the limit.
  Reading runs in the request's own thread (Django under ASGI gives each sync request one),
  never on the event loop.

Exports (`xlsx_bytes`, `csv_bytes`) write every cell as text: an .xlsx has string cells only
(no ``<f>`` element), a .csv quotes every field, and a value that a spreadsheet program would
run as a formula gets a single quote in front (`export_text`, as OWASP recommends). Values in
exports come from users (pseudonyms) and from PACS servers (descriptions), neither of which we
trust; the quote is removed again when a batch file is read, so an export can be uploaded as
it is.

File-level problems raise `SpreadsheetError` with one message. Row problems are collected in
`Problems` (every one of them, grouped by line and column) and raised together as
`SpreadsheetContentError`, so a user fixes the whole file in one go.
"""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import io
import re
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError

ACCEPTED_EXTENSIONS = (".xlsx", ".csv")


class SpreadsheetError(Exception):
    """The file as a whole cannot be used (wrong type, damaged, too big, bad header)."""


@dataclass(frozen=True)
class SheetRow:
    """One non-empty data row: its line in the spreadsheet and its cells by column name."""

    line: int
    cells: dict[str, str]

    def __getitem__(self, column: str) -> str:
        return self.cells.get(column, "")


@dataclass
class ProblemGroup:
    """The problems of one line (or of several lines that conflict with each other)."""

    lines: tuple[int, ...]
    problems: list[tuple[str, str]] = field(default_factory=list)
    """(column, message); column is "" for a problem of the whole row."""

    @property
    def label(self) -> str:
        if len(self.lines) == 1:
            return f"Line {self.lines[0]}"
        return "Lines " + ", ".join(str(line) for line in self.lines)


class Problems:
    """Every problem found in a file, grouped by spreadsheet line(s) and column."""

    def __init__(self) -> None:
        self._groups: dict[tuple[int, ...], ProblemGroup] = {}

    def add(self, lines: int | Iterable[int], column: str, message: str) -> None:
        key = (lines,) if isinstance(lines, int) else tuple(sorted(set(lines)))
        group = self._groups.setdefault(key, ProblemGroup(key))
        if (column, message) not in group.problems:
            group.problems.append((column, message))

    def check(self, line: int, column: str, value: Any, *validators: Callable) -> bool:
        """Run Django validators on a cell value; add their messages. True when all passed."""
        passed = True
        for validator in validators:
            try:
                validator(value)
            except ValidationError as error:
                for message in error.messages:
                    self.add(line, column, message)
                passed = False
        return passed

    def __bool__(self) -> bool:
        return bool(self._groups)

    def __len__(self) -> int:
        return sum(len(group.problems) for group in self._groups.values())

    @property
    def groups(self) -> list[ProblemGroup]:
        return sorted(self._groups.values(), key=lambda group: group.lines)

    @property
    def line_count(self) -> int:
        return len({line for key in self._groups for line in key})

    def as_text(self) -> list[str]:
        """One string per problem, e.g. ``"Line 3, PatientID: Wildcards ... not allowed."``."""
        texts = []
        for group in self.groups:
            for column, message in group.problems:
                texts.append(
                    f"{group.label}, {column}: {message}" if column else f"{group.label}: {message}"
                )
        return texts


class SpreadsheetContentError(Exception):
    """Some rows of the file are invalid; `problems` lists them all."""

    def __init__(self, problems: Problems) -> None:
        self.problems = problems
        super().__init__(summary(problems))


def summary(problems: Problems) -> str:
    count, lines = len(problems), problems.line_count
    return (
        f"The file has {count} problem{'s' if count != 1 else ''} on {lines} "
        f"line{'s' if lines != 1 else ''}; nothing was created. Fix them and upload the file "
        "again."
    )


# --- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadLimits:
    """What reading one batch file may cost, whatever the file says about itself.

    A few hundred KB of .xlsx can unpack to hundreds of MB (a zip entry of repeated bytes) or
    hold a million rows; the limits are checked before and while reading, so such a file is
    refused after a fraction of a second with a message naming the limit, and memory stays
    small. Sizes are the uncompressed sizes the zip declares; Python's zipfile never unpacks
    more than declared (it stops there and fails the CRC check).
    """

    sheet_bytes: int = 64 * 1024 * 1024
    """A worksheet (streamed, never held whole)."""
    shared_strings_bytes: int = 16 * 1024 * 1024
    """The shared-strings table (openpyxl keeps it in memory)."""
    part_bytes: int = 4 * 1024 * 1024
    """Any other XML part (styles, workbook, relationships: parsed whole by openpyxl)."""
    total_bytes: int = 256 * 1024 * 1024
    entries: int = 1000
    ratio: int = 100
    """Unpacked size / packed size of an entry larger than 1 MiB (ordinary sheets: 5-20)."""
    columns: int = 200
    cells_per_row: int = 1000
    empty_rows: int = 10_000
    """Rows without values allowed besides the data rows (blank lines, formatted rows)."""
    values_per_row: int = 20
    """Filled cells per allowed data row, summed over the file (batch files have at most 17
    named columns), so the work of a file follows its row limit."""
    seconds: float = 15.0
    """The time budget of one file: a backstop, the limits above stop bombs in well under a
    second. The largest legitimate file (20,000 rows of 11 columns, 1 MB of .xlsx) takes 4-8 s
    on a busy 2-core machine (openpyxl through defusedxml is pure Python)."""


READ_LIMITS = ReadLimits()
_RATIO_FROM_BYTES = 1024 * 1024


class _Deadline:
    """The time budget: `check()` raises once it is spent."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise SpreadsheetError(
                f"Reading the file took longer than {self.seconds:g} seconds, the limit; the "
                "file is too large or too complex. Split it into several smaller files."
            )


def read_sheet(
    upload,
    *,
    columns: Sequence[str],
    required_columns: Sequence[str] = (),
    ignored_columns: Sequence[str] = (),
    max_rows: int,
    max_bytes: int,
    row_limit_hint: str = "",
    limits: ReadLimits = READ_LIMITS,
) -> list[SheetRow]:
    """Read an uploaded .xlsx or .csv file into rows of text.

    Rows are streamed and the limits enforced while reading: the work done for a file is
    bounded by `max_rows` and `limits` (size, cells, time), not by what the file claims.
    The caller (a form in a sync view) runs in the request's own thread under ASGI, never on
    the event loop.

    Args:
        upload: A Django `UploadedFile` (or anything with ``name``, ``size`` and ``read()``).
        columns: The column names the file may use.
        required_columns: Names that must appear in the header.
        ignored_columns: Names that are accepted and dropped (e.g. extra columns of an export
            that is meant to be uploaded again).
        max_rows: The most data rows allowed.
        max_bytes: The largest file size allowed.
        row_limit_hint: Appended to the too-many-rows message (e.g. who has which limit).
        limits: What reading may cost (unpacked sizes, cells, time).

    Raises:
        SpreadsheetError: The file cannot be used; the message says why.
    """
    name = getattr(upload, "name", "") or "upload"
    extension = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if extension not in ACCEPTED_EXTENSIONS:
        raise SpreadsheetError(
            f"The file {name} is not an .xlsx or .csv file; only Excel workbooks (.xlsx) and "
            "CSV files (.csv) are accepted."
        )
    size = getattr(upload, "size", None)
    if size is not None and size > max_bytes:
        raise SpreadsheetError(
            f"The file is {format_size(size)}; at most {format_size(max_bytes)} are allowed."
        )
    if hasattr(upload, "seek"):
        upload.seek(0)
    data = upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise SpreadsheetError(f"The file is larger than {format_size(max_bytes)}, the limit.")
    if not data.strip():
        raise SpreadsheetError(f"The file {name} is empty.")

    deadline = _Deadline(limits.seconds)
    max_lines = 1 + max_rows + limits.empty_rows
    if extension == ".xlsx":
        raw_rows = _xlsx_rows(data, name, limits, deadline, max_lines)
    else:
        raw_rows = _csv_rows(data, name, limits, deadline)
    try:
        return _rows_with_header(
            raw_rows,
            columns=columns,
            required_columns=required_columns,
            ignored_columns=ignored_columns,
            max_rows=max_rows,
            max_lines=max_lines,
            row_limit_hint=row_limit_hint,
        )
    finally:
        close = getattr(raw_rows, "close", None)
        if close is not None:
            close()  # ends the generator: the workbook and archive are closed at once


def format_size(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MiB".replace(".0 MiB", " MiB")
    if size >= 1024:
        return f"{size / 1024:.0f} KiB"
    return f"{size} bytes"


def _rows_with_header(
    raw_rows: Iterator[list[str]],
    *,
    columns: Sequence[str],
    required_columns: Sequence[str],
    ignored_columns: Sequence[str],
    max_rows: int,
    max_lines: int,
    row_limit_hint: str,
) -> list[SheetRow]:
    header = next(raw_rows, None)
    if header is None or not any(header):
        raise SpreadsheetError(
            "The first row must be the header naming the columns (e.g. "
            f"{', '.join(columns[:3])}), but it is empty."
        )
    index_of = _check_header(header, columns, required_columns, ignored_columns)
    unnamed = [i for i, title in enumerate(header) if not title]

    rows: list[SheetRow] = []
    unnamed_with_values: set[int] = set()
    for line, cells in enumerate(raw_rows, start=2):
        if line > max_lines:
            raise SpreadsheetError(
                f"The file has more than {max_lines} rows (empty rows included); at most "
                f"{max_lines} are allowed. Delete the empty rows below the data."
            )
        if not any(cells):
            continue
        if len(rows) == max_rows:
            raise SpreadsheetError(
                f"The file has more than {max_rows} data rows; at most {max_rows} are allowed"
                f"{row_limit_hint}. Split it into several files."
            )
        for i in unnamed:
            if i < len(cells) and cells[i]:
                unnamed_with_values.add(i)
        # Cells right of the header's last column have no name either (else silently lost).
        for i in range(len(header), len(cells)):
            if cells[i]:
                unnamed_with_values.add(i)
        rows.append(
            SheetRow(
                line,
                {name: cells[i] if i < len(cells) else "" for name, i in index_of.items()},
            )
        )
    if unnamed_with_values:
        letters = ", ".join(column_letter(i) for i in sorted(unnamed_with_values))
        raise SpreadsheetError(
            f"Column(s) {letters} hold values but have no name in the header row; name them "
            "or delete them."
        )
    if not rows:
        raise SpreadsheetError("The file has a header but no data rows.")
    return rows


def _check_header(
    header: list[str],
    columns: Sequence[str],
    required_columns: Sequence[str],
    ignored_columns: Sequence[str],
) -> dict[str, int]:
    index_of: dict[str, int] = {}
    seen: set[str] = set()
    unknown: list[str] = []
    duplicates: list[str] = []
    for i, title in enumerate(header):
        if not title:
            continue
        if title in seen:
            duplicates.append(title)
            continue
        seen.add(title)
        if title in columns:
            index_of[title] = i
        elif title not in ignored_columns:
            unknown.append(title)
    missing = [name for name in required_columns if name not in index_of]
    messages = []
    if unknown:
        described = []
        for title in unknown:
            hint = _close_match(title, columns)
            described.append(f"{title} (did you mean {hint}?)" if hint else title)
        messages.append(f"Unknown column(s): {', '.join(described)}.")
    if missing:
        messages.append(f"Missing required column(s): {', '.join(missing)}.")
    if duplicates:
        messages.append(f"Column(s) named more than once: {', '.join(duplicates)}.")
    if messages:
        messages.append(f"Column names are case-sensitive; the columns are: {', '.join(columns)}.")
        raise SpreadsheetError(" ".join(messages))
    return index_of


def _close_match(title: str, columns: Sequence[str]) -> str:
    folded = re.sub(r"[\s_-]", "", title).lower()
    for column in columns:
        if column.lower() == folded:
            return column
    matches = difflib.get_close_matches(title, list(columns), n=1, cutoff=0.75)
    return matches[0] if matches else ""


def column_letter(index: int) -> str:
    """0 → A, 25 → Z, 26 → AA (as spreadsheets name columns)."""
    letters = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(65 + remainder) + letters
    return letters


# --- .xlsx --------------------------------------------------------------------------------------


def invalid_xlsx_message(name: str) -> str:
    return (
        f"The file {name} is not a valid Excel workbook (.xlsx): it is damaged, "
        "password-protected or of another format. Save it as “Excel Workbook (.xlsx)” or "
        "“CSV UTF-8 (.csv)” and upload it again."
    )


_XML_FORBIDDEN = (
    "The workbook contains an XML document type or entity declaration (DOCTYPE/ENTITY), which "
    ".xlsx files never need and which can hide an XML bomb; it is refused. Save it again as "
    "“Excel Workbook (.xlsx)” and upload it again."
)


def _open_archive(data: bytes, name: str, limits: ReadLimits) -> zipfile.ZipFile:
    """The workbook's zip, after checking every entry's unpacked size and ratio."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError):
        raise SpreadsheetError(invalid_xlsx_message(name)) from None
    if len(entries) > limits.entries:
        raise SpreadsheetError(
            f"The workbook has {len(entries)} parts; at most {limits.entries} are allowed."
        )
    total = 0
    for entry in entries:
        part = entry.filename
        if part.startswith("xl/worksheets/") and part.endswith(".xml"):
            limit, what = limits.sheet_bytes, "a worksheet"
        elif part == "xl/sharedStrings.xml":
            limit, what = limits.shared_strings_bytes, "the shared-strings table"
        elif part.endswith((".xml", ".rels")):
            limit, what = limits.part_bytes, "this part"
        else:
            limit, what = limits.total_bytes, "a part"
        if entry.file_size > limit:
            raise SpreadsheetError(
                f"The workbook is too large when unpacked: {part} unpacks to "
                f"{format_size(entry.file_size)}; at most {format_size(limit)} are allowed for "
                f"{what}."
            )
        if entry.file_size > _RATIO_FROM_BYTES:
            ratio = entry.file_size / max(entry.compress_size, 1)
            if ratio > limits.ratio:
                raise SpreadsheetError(
                    f"The workbook is packed suspiciously tightly: {part} unpacks to "
                    f"{ratio:.0f} times its packed size; at most {limits.ratio} times are "
                    "allowed (zip bombs)."
                )
        total += entry.file_size
    if total > limits.total_bytes:
        raise SpreadsheetError(
            f"The workbook unpacks to {format_size(total)}; at most "
            f"{format_size(limits.total_bytes)} are allowed."
        )
    return archive


def _scan_xml_parts(
    archive: zipfile.ZipFile, limits: ReadLimits, deadline: _Deadline, max_lines: int
) -> None:
    """Streams once through every XML part with expat before openpyxl sees the file.

    Refuses a DOCTYPE (the only place entities can be declared, so no entity expansion is
    possible afterwards; openpyxl itself parses through defusedxml too) and counts the rows and
    cells per row of every worksheet. openpyxl builds each row whole and, when a sheet lacks a
    ``<dimension>``, reads every sheet to its end while loading the workbook: a million rows or
    a row of millions of cells must be refused before that. Counting in expat's callbacks costs
    about a microsecond per element; the time budget is checked after every 64 KiB.
    """
    max_values = (max_lines - limits.empty_rows) * limits.values_per_row
    values = [0]  # filled cells so far, over every sheet
    for entry in archive.infolist():
        if entry.filename.endswith((".xml", ".rels")):
            _scan_xml_part(archive, entry, limits, deadline, max_lines, values, max_values)


def _scan_xml_part(
    archive: zipfile.ZipFile,
    entry: zipfile.ZipInfo,
    limits: ReadLimits,
    deadline: _Deadline,
    max_lines: int,
    values: list[int],
    max_values: int,
) -> None:
    from xml.parsers import expat

    part = entry.filename
    rows = cells = column = 0
    beyond = False  # the open cell lies right of the column limit

    def doctype(*args) -> None:
        raise SpreadsheetError(_XML_FORBIDDEN)

    def start(tag: str, attributes) -> None:
        nonlocal rows, cells, column, beyond
        local = tag.rpartition(":")[2]
        if local in ("v", "is", "f"):
            if beyond:
                raise SpreadsheetError(_too_many_columns(limits))
            values[0] += 1
            if values[0] > max_values:
                raise SpreadsheetError(
                    f"The file has more than {max_values} filled cells; at most "
                    f"{limits.values_per_row} per allowed data row ({max_values}) are allowed. "
                    "Delete the columns that are not needed or split the file."
                )
        if local == "c":
            reference = attributes.get("r", "")
            column = _column_number(reference) if reference else column + 1
            beyond = column > limits.columns
            cells += 1
            if cells > limits.cells_per_row:
                raise SpreadsheetError(
                    f"Row {rows} of {part} has more than {limits.cells_per_row} cells; at "
                    f"most {limits.cells_per_row} are allowed."
                )
        elif local == "row":
            rows += 1
            cells = column = 0
            if rows > max_lines:
                raise SpreadsheetError(
                    f"A sheet of the file ({part}) has more than {max_lines} rows (empty "
                    f"rows included); at most {max_lines} are allowed in any sheet. Split it "
                    "into several files."
                )

    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = doctype
    parser.StartElementHandler = start
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    try:
        with archive.open(entry) as stream:
            while chunk := stream.read(64 * 1024):
                deadline.check()
                parser.Parse(chunk, False)
            parser.Parse(b"", True)
    except expat.ExpatError:
        return  # not well-formed: openpyxl reports the file as damaged if it matters


def _column_number(reference: str) -> int:
    """``"B7"`` → 2, ``"AA1"`` → 27 (0 when the reference has no letters)."""
    number = 0
    for char in reference:
        if not "A" <= char <= "Z":
            break
        number = number * 26 + ord(char) - 64
    return number


def _xlsx_rows(
    data: bytes, name: str, limits: ReadLimits, deadline: _Deadline, max_lines: int
) -> Iterator[list[str]]:
    """The first sheet's rows, one at a time (openpyxl read-only mode, XML via defusedxml)."""
    import openpyxl
    from defusedxml import DefusedXmlException

    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise SpreadsheetError(invalid_xlsx_message(name))
    archive = _open_archive(data, name, limits)
    workbook = None
    try:
        _scan_xml_parts(archive, limits, deadline, max_lines)
        workbook = openpyxl.load_workbook(
            io.BytesIO(data), read_only=True, data_only=True, keep_links=False
        )
        sheet = workbook.worksheets[0]
        # The scan refused values right of the column limit; the limit also bounds the padding
        # openpyxl adds to rows when a sheet claims a huge <dimension>.
        for row in sheet.iter_rows(max_col=limits.columns):
            deadline.check()
            cells = [_xlsx_cell_text(cell) for cell in row]
            while cells and not cells[-1]:
                cells.pop()
            yield cells
    except SpreadsheetError:
        raise
    except DefusedXmlException:
        raise SpreadsheetError(_XML_FORBIDDEN) from None
    except Exception as error:  # openpyxl raises many kinds (zip, XML, key, value errors)
        raise SpreadsheetError(invalid_xlsx_message(name)) from error
    finally:
        if workbook is not None:
            workbook.close()
        archive.close()


def _too_many_columns(limits: ReadLimits) -> str:
    return (
        f"The file has values in more than {limits.columns} columns; at most {limits.columns} "
        "are allowed."
    )


_ZERO_PADDED_FORMAT = re.compile(r"^0+$")


def _xlsx_cell_text(cell) -> str:
    value = getattr(cell, "value", None)
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0, 0):
            return value.date().isoformat()
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.isoformat()
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        text = str(value)
        number_format = getattr(cell, "number_format", "") or ""
        # A number shown with leading zeros (custom format "0000000") keeps them as shown.
        if isinstance(value, int) and _ZERO_PADDED_FORMAT.match(number_format):
            text = text.zfill(len(number_format))
        return text
    return unneutralised(str(value).strip()).strip()


# --- .csv ---------------------------------------------------------------------------------------


def _csv_rows(
    data: bytes, name: str, limits: ReadLimits, deadline: _Deadline
) -> Iterator[list[str]]:
    """The rows, one at a time (the file is at most `max_bytes`; rows and time are bounded
    while reading, a field by the csv module's field size limit)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SpreadsheetError(
            f"The file {name} is not UTF-8 text (byte {data[error.start]:#04x} at position "
            f"{error.start}). Save it as “CSV UTF-8 (.csv)” and upload it again."
        ) from None
    if "\x00" in text:
        raise SpreadsheetError(f"The file {name} is not a text (CSV) file.")
    first_line = text.split("\n", 1)[0]
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        for row in reader:
            deadline.check()
            if len(row) > limits.columns:
                if any(cell.strip() for cell in row[limits.columns :]):
                    raise SpreadsheetError(_too_many_columns(limits))
                del row[limits.columns :]
            cells = [unneutralised(cell.strip()).strip() for cell in row]
            while cells and not cells[-1]:
                cells.pop()
            yield cells
    except csv.Error as error:
        raise SpreadsheetError(
            f"The CSV file {name} is malformed near line {reader.line_num}: {error}."
        ) from None


# --- cell values --------------------------------------------------------------------------------

_DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%d.%m.%Y")


def parse_sheet_date(text: str) -> dt.date:
    """A date cell: ``YYYY-MM-DD`` (also what Excel date cells become), ``YYYYMMDD`` or
    ``DD.MM.YYYY``; an Excel date-time at midnight is fine too.

    Raises:
        ValidationError: naming the value and the accepted formats.
    """
    value = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}[ T]00:00(:00)?", value):
        value = value[:10]
    for date_format in _DATE_FORMATS:
        try:
            return dt.datetime.strptime(value, date_format).date()
        except ValueError:
            continue
    raise ValidationError(
        "%(value)s is not a valid date; write it as YYYY-MM-DD (e.g. 2024-03-31), "
        "DD.MM.YYYY or use an Excel date cell.",
        code="invalid_date",
        params={"value": repr(text)},
    )


def split_list(text: str) -> list[str]:
    """A comma-separated cell (``"CT, MR"``) as its trimmed, non-empty, unique items."""
    items: list[str] = []
    for item in text.split(","):
        item = item.strip()
        if item and item not in items:
            items.append(item)
    return items


# --- writing ------------------------------------------------------------------------------------

# A cell starting with one of these is a formula (or a DDE call) to Excel, LibreOffice and
# Google Sheets when the file is opened, even in a .csv (OWASP "CSV Injection").
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_NEUTRALISER = "'"
# Characters XML 1.0 cannot hold (openpyxl refuses them); a PACS may still send them.
_XML_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def export_text(value: Any) -> str:
    """A value as the text of an exported cell: never a formula.

    As OWASP recommends, text that starts with ``=``, ``+``, ``-``, ``@``, tab or CR gets a
    single quote in front; spreadsheet programs then show it as text and never evaluate it.
    This includes negative numbers (``-5`` becomes ``'-5``): telling a number from a formula
    such as ``-2+3+cmd|' /C calc'!A0`` is exactly the guessing that lets payloads through, and
    the exports hold identifiers and descriptions, not numbers to compute with. Reading a batch
    file removes the quote again (`unneutralised`), so an export can be uploaded unchanged.
    Characters that XML cannot hold become U+FFFD.
    """
    text = "" if value is None else str(value)
    text = _XML_ILLEGAL.sub("\ufffd", text)
    if text.startswith(FORMULA_TRIGGERS):
        text = _NEUTRALISER + text
    return text


def unneutralised(text: str) -> str:
    """A read cell without the quote `export_text` put before a formula trigger."""
    if text.startswith(_NEUTRALISER) and text[1:2] and text[1:].startswith(FORMULA_TRIGGERS):
        return text[1:]
    return text


def xlsx_bytes(
    header: Sequence[str], rows: Iterable[Sequence[Any]], title: str = "Sheet1"
) -> bytes:
    """An .xlsx workbook with one sheet; every cell is a string cell (``t="inlineStr"``, never
    a ``<f>`` formula), neutralised by `export_text`; leading zeros are kept."""
    import openpyxl
    from openpyxl.cell import WriteOnlyCell

    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet(_XML_ILLEGAL.sub("", title)[:31] or "Sheet1")

    def cells(values: Iterable[Any]) -> list:
        row = []
        for value in values:
            cell = WriteOnlyCell(sheet, value=export_text(value))
            cell.data_type = "s"  # openpyxl guesses "f" for text starting with "="
            row.append(cell)
        return row

    sheet.append(cells(header))
    for values in rows:
        sheet.append(cells(values))
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def csv_bytes(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    """A UTF-8 CSV with BOM (so Excel opens it as UTF-8), comma-separated. Every field is
    quoted (a field separator inside a value cannot start a new cell in any locale) and
    neutralised by `export_text`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_ALL)
    writer.writerow([export_text(value) for value in header])
    for row in rows:
        writer.writerow([export_text(value) for value in row])
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


# --- cell validators ----------------------------------------------------------------------------


def max_length(limit: int) -> Callable[[str], None]:
    """A validator: at most `limit` characters."""

    def validate(value: str) -> None:
        if len(value) > limit:
            raise ValidationError(
                "At most %(limit)d characters are allowed (this value has %(length)d).",
                code="max_length",
                params={"limit": limit, "length": len(value)},
            )

    return validate


def sheet_settings(prefix: str, user) -> dict[str, Any]:
    """The upload limits of a batch app for `user` (non-staff users have the smaller row limit).

    `prefix` is ``"BATCH_QUERY"`` or ``"BATCH_TRANSFER"``; the settings are
    ``MAX_<prefix>_ROWS`` (non-staff), ``BATCH_FILE_MAX_ROWS`` (everyone) and
    ``BATCH_FILE_MAX_SIZE`` (bytes).
    """
    from django.conf import settings

    staff_rows = settings.BATCH_FILE_MAX_ROWS
    user_rows = min(getattr(settings, f"MAX_{prefix}_ROWS"), staff_rows)
    if user.is_staff:
        return {
            "max_rows": staff_rows,
            "max_bytes": settings.BATCH_FILE_MAX_SIZE,
            "row_limit_hint": "",
        }
    return {
        "max_rows": user_rows,
        "max_bytes": settings.BATCH_FILE_MAX_SIZE,
        "row_limit_hint": " for non-staff users",
    }
