"""Real batch files (.xlsx and .csv) built in tests, wrapped as uploads."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Sequence
from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile


def xlsx_data(
    rows: Sequence[Sequence[Any]], number_formats: dict[tuple[int, int], str] | None = None
) -> bytes:
    """An .xlsx workbook whose first sheet holds `rows` (values keep their Python type, so a
    `datetime.date` becomes an Excel date cell and an int a number cell).

    `number_formats` maps (row, column), both 1-based, to an Excel number format.
    """
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in rows:
        sheet.append(list(row))
    for (row_index, column_index), number_format in (number_formats or {}).items():
        sheet.cell(row=row_index, column=column_index).number_format = number_format
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def csv_data(rows: Sequence[Sequence[Any]], delimiter: str = ",", bom: bool = False) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    return (("\ufeff" if bom else "") + buffer.getvalue()).encode("utf-8")


def upload(data: bytes, name: str) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data)


def xlsx_upload(
    rows: Sequence[Sequence[Any]], name: str = "batch.xlsx", **kwargs
) -> SimpleUploadedFile:
    return upload(xlsx_data(rows, **kwargs), name)


def csv_upload(
    rows: Sequence[Sequence[Any]], name: str = "batch.csv", delimiter: str = ",", bom: bool = False
) -> SimpleUploadedFile:
    return upload(csv_data(rows, delimiter=delimiter, bom=bom), name)


# --- hostile workbooks --------------------------------------------------------------------------

_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" '
    'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    "{shared}</Types>"
)
_SHARED_OVERRIDE = (
    '<Override PartName="/xl/sharedStrings.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
)
_ROOT_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Target="xl/workbook.xml" Type="http://schemas.openxmlformats.org/'
    'officeDocument/2006/relationships/officeDocument"/></Relationships>'
)
_WORKBOOK = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
    '<sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'
)
_WORKBOOK_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Target="worksheets/sheet1.xml" Type="http://schemas.openxmlformats'
    '.org/officeDocument/2006/relationships/worksheet"/>{shared}</Relationships>'
)
_SHARED_REL = (
    '<Relationship Id="rId2" Target="sharedStrings.xml" Type="http://schemas.openxmlformats'
    '.org/officeDocument/2006/relationships/sharedStrings"/>'
)
_SHEET_START = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
)
_SHEET_END = "</sheetData></worksheet>"


def raw_xlsx(
    sheet_chunks, shared_strings_chunks=None, *, prolog: str = "", level: int = 9
) -> bytes:
    """A minimal .xlsx whose sheet XML (and shared strings) are written from chunks of text, so
    a bomb of hundreds of MB is built without holding it in memory. `prolog` goes between the
    XML declaration and the root element of the sheet (e.g. a DOCTYPE)."""
    shared = shared_strings_chunks is not None
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as archive:
        archive.writestr(
            "[Content_Types].xml", _CONTENT_TYPES.format(shared=_SHARED_OVERRIDE if shared else "")
        )
        archive.writestr("_rels/.rels", _ROOT_RELS)
        archive.writestr("xl/workbook.xml", _WORKBOOK)
        archive.writestr(
            "xl/_rels/workbook.xml.rels",
            _WORKBOOK_RELS.format(shared=_SHARED_REL if shared else ""),
        )
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as sheet:
            start = _SHEET_START
            if prolog:
                declaration, _, rest = start.partition("?>")
                start = declaration + "?>" + prolog + rest
            sheet.write(start.encode())
            for chunk in sheet_chunks:
                sheet.write(chunk.encode())
            sheet.write(_SHEET_END.encode())
        if shared:
            with archive.open("xl/sharedStrings.xml", "w", force_zip64=True) as strings:
                strings.write(
                    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
                    b'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
                )
                for chunk in shared_strings_chunks:
                    strings.write(chunk.encode())
                strings.write(b"</sst>")
    return buffer.getvalue()


def _inline(text: str) -> str:
    return f'<c t="inlineStr"><is><t>{text}</t></is></c>'


def row_bomb_xlsx(rows: int = 1_000_000, numbered: bool = False) -> bytes:
    """A header (PatientID) and `rows` data rows of one short patient ID each: a few hundred
    KB that hold a million rows. `numbered` writes row and cell references as Excel does (less
    compressible, so the zip ratio stays ordinary and only the row limit can stop it)."""

    def chunks():
        yield f"<row>{_inline('PatientID')}</row>"
        if numbered:
            for start in range(2, rows + 2, 1000):
                yield "".join(
                    f'<row r="{n}"><c r="A{n}" t="inlineStr"><is><t>P{n % 97}</t></is></c></row>'
                    for n in range(start, min(start + 1000, rows + 2))
                )
            return
        row = f"<row>{_inline('P1')}</row>"
        for _ in range(rows // 1000):
            yield row * 1000
        yield row * (rows % 1000)

    return raw_xlsx(chunks())


def shared_strings_bomb_xlsx(megabytes: int = 300) -> bytes:
    """A workbook whose shared-strings table holds one string of `megabytes` MB (a few hundred
    KB compressed) used by one cell."""

    def strings():
        yield "<si><t>"
        block = "A" * (1024 * 1024)
        for _ in range(megabytes):
            yield block
        yield "</t></si>"

    sheet = [
        f"<row>{_inline('PatientID')}</row>",
        '<row><c t="s"><v>0</v></c></row>',
    ]
    return raw_xlsx(sheet, strings())
