"""Form bodies beyond Django's upload limits are refused by ADIT naming the limit."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client

pytestmark = pytest.mark.django_db


def test_too_many_form_fields_are_refused_naming_the_limit(client: Client):
    fields = {f"f{n}": "1" for n in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1)}
    response = client.post("/batch-query/", fields)
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert f"more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} fields" in page
    # The site's error layout (rendered without the request: no session or user yet).
    assert 'id="error-page"' in page and "Error 400 · Request refused" in page
    assert "bootstrap.min.css" in page

    response = client.post("/api/batch-query/", fields)
    assert response.status_code == 400
    assert response.json()["limit"] == "field_count"


def test_a_form_body_beyond_the_memory_limit_is_413(client: Client):
    response = client.post("/batch-query/", {"f": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)})
    assert response.status_code == 413
    assert "request body" in response.content.decode()


def test_an_ordinary_request_passes(client: Client):
    assert client.get("/health/?probe=1").status_code == 200


def test_a_malformed_multipart_form_body_is_refused_naming_it(client: Client):
    response = client.post("/api/batch-query-jobs/", "x", content_type="multipart/form-data")
    assert response.status_code == 400
    assert response.json() == {
        "detail": "The request body is malformed (multipart/form-data): Invalid boundary in "
        "multipart: None",
        "limit": "malformed_body",
    }


def test_the_refusal_page_escapes_what_it_quotes(rf):
    from adit.core.middleware import RequestRefused, refusal_response

    refusal = RequestRefused(400, "malformed", "The request is malformed: <b>bold</b>")
    response = refusal_response(rf.get("/batch-query/"), refusal)
    assert response.status_code == 400
    page = response.content.decode()
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold</b>" not in page
