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
    assert f"more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} fields" in response.content.decode()

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
