"""The DICOMweb API in the OpenAPI schema: every route, with descriptions for its users."""

from __future__ import annotations

import pytest

from adit.dicom_web import urls
from adit.dicom_web.openapi import _schema_path, describe

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema(client) -> dict:
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def test_every_dicomweb_route_is_an_operation(schema):
    paths = schema["paths"]
    for pattern in urls.urlpatterns:
        if getattr(pattern, "name", "") == "unknown_route":
            continue  # the catch-all answering unknown routes with a JSON 404
        route = str(pattern.pattern)
        path, names = _schema_path(route)
        method, summary, _ = describe(route)
        assert path in paths, f"{route} is missing from the schema"
        operation = paths[path][method]
        assert operation["summary"] == summary
        assert operation["tags"] == ["DICOMweb"]
        assert operation["security"] == [{"TokenAuthentication": []}]
        assert {p["name"] for p in operation["parameters"] if p["in"] == "path"} == set(names)
        assert {"200", "400", "401", "403", "404", "503"} <= set(operation["responses"])
    assert "TokenAuthentication" in schema["components"]["securitySchemes"]


def test_descriptions_are_written_for_users(schema):
    study_search = schema["paths"]["/api/dicom-web/{ae_title}/qidors/studies"]["get"]
    assert study_search["summary"] == "Search for studies (QIDO-RS)"
    query_names = {p["name"] for p in study_search["parameters"] if p["in"] == "query"}
    assert {"includefield", "limit", "offset", "fuzzymatching", "{attribute}"} <= query_names
    retrieve = schema["paths"]["/api/dicom-web/{ae_title}/wadors/studies/{study_uid}"]["get"]
    assert "pseudonym" in {p["name"] for p in retrieve["parameters"]}
    assert "streamed" in retrieve["description"]
    store = schema["paths"]["/api/dicom-web/{ae_title}/stowrs/studies"]["post"]
    assert "requestBody" in store
    texts = [
        operation.get("description", "")
        for item in schema["paths"].values()
        for operation in item.values()
    ]
    # No internal docstrings: no Args/Raises sections, no Python names.
    for text in texts:
        assert "Raises:" not in text and "Args:" not in text and "self." not in text, text
    assert any(tag["name"] == "DICOMweb" for tag in schema["tags"])


def test_an_unknown_route_shape_is_named():
    with pytest.raises(ValueError, match="somethingelse"):
        describe("<str:ae_title>/wadors/studies/<str:study_uid>/somethingelse")


def test_the_docs_page_is_served(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200


def test_job_operations_have_summaries_too(schema):
    for path, item in schema["paths"].items():
        if path.startswith(("/api/transfer-jobs/", "/api/batch-query-jobs/")):
            for method, operation in item.items():
                assert operation.get("summary"), f"{method.upper()} {path} has no summary"
                assert operation.get("description"), f"{method.upper()} {path}"
