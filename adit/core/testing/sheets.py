"""Real batch files (.xlsx and .csv) built in tests, wrapped as uploads."""

from __future__ import annotations

import csv
import io
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
