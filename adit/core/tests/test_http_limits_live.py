"""HTTP limits against a real daphne: every oversized or malformed request gets an answer.

Below daphne's (raised) hard limits ADIT's `RequestLimitsMiddleware` answers; beyond them
ADIT's HTTP channel does. Either way the client reads a status that names the limit (JSON
under /api/, HTML elsewhere), not a reset connection or a 5xx, and the server stays healthy.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest
import requests

from adit.core.http_channel import HARD_HEADER_BYTES, HARD_LINE_BYTES, MAX_HEADER_COUNT
from adit.core.middleware import MAX_HEADER_BYTES, MAX_QUERY_STRING_BYTES

pytestmark = pytest.mark.django_db(transaction=True)

QIDO = "/api/dicom-web/NOSUCHAE/qidors/studies"


def raw_request(url: str, request: bytes, timeout: float = 10) -> bytes:
    """Sends `request` as is and reads the whole answer (the server closes the connection)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("path", "headers", "status", "limit"),
    [
        # ADIT's middleware (inside daphne's hard limits):
        (f"{QIDO}?PatientID={'A' * 60_000}", {}, 414, "query_string_length"),
        (f"{QIDO}?{'&'.join(['a=1'] * 1500)}", {}, 400, "parameter_count"),
        (f"{QIDO}?PatientID=ab%00c", {}, 400, "control_character"),
        (f"{QIDO}?PatientID=ab%1bc", {}, 400, "control_character"),
        (f"{QIDO}?{'%0a' * 3}=1", {}, 400, "control_character"),
        (f"{QIDO}?PatientID=PAT%E2%80%AE1", {}, 400, "control_character"),
        (f"/api/{'x' * 3000}", {}, 414, "path_length"),
        (QIDO, {"X-Big": "b" * (MAX_HEADER_BYTES + 1)}, 431, "header_size"),
        # ADIT's HTTP channel (beyond daphne's hard limits):
        (f"{QIDO}?PatientID={'A' * 100_000}", {}, 414, "request_line_length"),
        (QIDO, {"X-Big": "b" * (HARD_LINE_BYTES + 10)}, 431, "header_size"),
        (QIDO, {f"X-H{n}": "b" * 1000 for n in range(70)}, 431, "header_size"),
        (QIDO, {f"X-H{n}": "1" for n in range(MAX_HEADER_COUNT + 5)}, 431, "header_count"),
    ],
    ids=[
        "60kB-value",
        "1500-parameters",
        "NUL",
        "ESC",
        "newline-in-name",
        "right-to-left-override",
        "3kB-path",
        "17kB-header",
        "100kB-value",
        "65kB-header-line",
        "70kB-of-headers",
        "105-headers",
    ],
)
def test_api_limits_are_answered_as_json(live_adit, path, headers, status, limit):
    response = requests.get(f"{live_adit.url}{path}", headers=headers, timeout=30)
    assert response.status_code == status, response.text[:300]
    assert response.headers["Content-Type"].startswith("application/json")
    answer = response.json()
    assert answer["limit"] == limit
    assert answer["detail"]
    assert requests.get(f"{live_adit.url}/health/", timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        (f"q={'x' * (MAX_QUERY_STRING_BYTES + 1)}", 414, "query string"),
        (f"q={'x' * 100_000}", 414, "request line"),
        ("q=%00", 400, "control character"),
    ],
)
def test_ui_limits_are_answered_as_html(live_adit, query, status, words):
    response = requests.get(f"{live_adit.url}/batch-query/?{query}", timeout=30)
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("text/html")
    assert words in response.text


def test_malformed_request_line_and_header_get_an_answer(live_adit):
    answer = raw_request(live_adit.url, b"GET /api/x HTTP/1.1 extra words\r\nHost: a\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b'"limit": "malformed"' in answer
    answer = raw_request(live_adit.url, b"GET /api/x HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]


def test_a_huge_request_line_sent_slowly_is_answered_before_the_close(live_adit):
    """The client is still sending when the server refuses: the lingering close lets it read
    the answer instead of a reset."""
    line = b"GET /api/x?q=" + b"A" * (4 * HARD_HEADER_BYTES) + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    answer = raw_request(live_adit.url, line)
    assert answer.startswith(b"HTTP/1.1 414 URI Too Long\r\n"), answer[:200]
    assert b"request_line_length" in answer
